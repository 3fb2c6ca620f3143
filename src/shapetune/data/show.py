"""Summaries of a prepared dataset: counts, clinical-index distributions per class, and PNG figures; each task's
summary is one entry of ``SHOWS`` (the fetal skulls' in ``shapetune.data.fetal.show``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shapetune.catalog import cohort_task  # noqa: E402
from shapetune.data.dataset import PreparedDataset  # noqa: E402
from shapetune.data.fetal.show import show_fetal  # noqa: E402
from shapetune.data.tables import count_table  # noqa: E402

INDICES = [("edv_ml", "EDV (ml)"), ("esv_ml", "ESV (ml)"), ("ef_pct", "EF (%)"), ("lv_mass_g", "LV mass (g)"),
           ("mwt_mm", "MWT (mm)"), ("edvi_ml_m2", "EDVi (ml/m²)"), ("lvmi_g_m2", "LVMi (g/m²)")]
CLASS_NAMES = {0: "healthy", 1: "HCM"}


def counts_table(ds: PreparedDataset) -> pd.DataFrame:
    m = ds.manifest
    t = pd.crosstab(m["split"], m["label"].map(CLASS_NAMES), margins=True, margins_name="total")
    return t


def index_summary(ds: PreparedDataset) -> pd.DataFrame:
    """Mean ± sd and median [IQR] of each clinical index per class."""
    m = ds.manifest
    rows = []
    for col, name in INDICES:
        if col not in m:
            continue
        row = {"index": name}
        for lab, cname in CLASS_NAMES.items():
            v = m.loc[m["label"] == lab, col].dropna()
            row[cname] = (f"{v.mean():.1f} ± {v.std():.1f}  [{v.quantile(.25):.1f}–{v.quantile(.75):.1f}]"
                          if len(v) else "–")
        rows.append(row)
    return pd.DataFrame(rows)


def _mid_slices(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mid-ventricular short-axis slice and a long-axis slice through the LV centre."""
    k = np.nonzero((vol > 0).any(axis=(1, 2)))[0]
    mid = int(k.min() + 0.55 * (k.max() - k.min())) if len(k) else vol.shape[0] // 2
    return vol[mid], vol[:, vol.shape[1] // 2, :].T


def mosaic(ds: PreparedDataset, path: Path, per_class: int = 4, seed: int = 0) -> Path:
    """PNG of ED/ES short- and long-axis slices for a few subjects of each class."""
    rng = np.random.default_rng(seed)
    m = ds.manifest
    picks = []
    for lab in CLASS_NAMES:
        idx = m.index[m["label"] == lab].to_numpy()
        picks += [(lab, int(i)) for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False)]
    fig, axes = plt.subplots(len(picks), 4, figsize=(8, 2.0 * len(picks)), squeeze=False)
    for r, (lab, i) in enumerate(picks):
        row = m.loc[i]
        for p, phase in enumerate(("ED", "ES")):
            sa, la = _mid_slices(np.asarray(ds.masks[int(row["index"])][p]))
            for c, (img, view) in enumerate(((sa, "SA"), (la, "LA"))):
                ax = axes[r, 2 * p + c]
                ax.imshow(img, origin="lower", cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"{phase} {view}", fontsize=8)
        pheno = f" ({row['phenotype']})" if "phenotype" in row and isinstance(row["phenotype"], str) else ""
        axes[r, 0].set_ylabel(f"{row['subject']}\n{CLASS_NAMES[lab]}{pheno}", fontsize=7)
    fig.suptitle("Template masks: myocardium (green) and cavity (yellow); SA anterior up, septum left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def index_plot(ds: PreparedDataset, path: Path) -> Path:
    """PNG of box plots of the clinical indices per class."""
    m = ds.manifest
    cols = [(c, n) for c, n in INDICES if c in m]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.2 * len(cols), 3), squeeze=False)
    for ax, (col, name) in zip(axes[0], cols, strict=True):
        data = [m.loc[m["label"] == lab, col].dropna().to_numpy() for lab in CLASS_NAMES]
        ax.boxplot(data, tick_labels=list(CLASS_NAMES.values()))
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _print_problems(ds: PreparedDataset, console: Console) -> None:
    """The subjects cut by the grid border and those skipped at preparation, each named."""
    clipped = ds.manifest.get("fov_clipped")
    if clipped is not None and clipped.any():
        console.print(f"[yellow]{int(clipped.sum())} subject(s) touch the template border (fov_clipped): "
                      f"{', '.join(ds.manifest.subject[clipped].head(10))}; a larger --grid or --spacing holds "
                      "them[/]")
    if ds.meta.get("skipped"):
        console.print(f"[yellow]{len(ds.meta['skipped'])} subject(s) were skipped at preparation:[/]")
        for s in ds.meta["skipped"]:
            console.print(f"  {s['subject']}: {s['file']}: {s['problem']}")


def show_cardiac(ds: PreparedDataset, fig_dir: Path, console: Console) -> list[Path]:
    """Counts per split and class, clinical indices per class, clipped and skipped subjects; the mosaic and index
    figures."""
    grid = ds.grid
    console.print(f"[bold]{ds.path}[/]: {len(ds)} subjects, cohort {ds.meta['cohort']}, grid "
                  f"{'x'.join(map(str, grid.shape))} at {grid.spacing} mm")
    console.print(count_table(counts_table(ds), "Subjects per split and class"))
    summ = index_summary(ds)
    t = Table(title="Clinical indices per class: mean ± sd [IQR]")
    for c in summ.columns:
        t.add_column(c)
    for r in summ.itertuples(index=False):
        t.add_row(*map(str, r))
    console.print(t)
    _print_problems(ds, console)
    return [mosaic(ds, fig_dir / "mosaic.png"), index_plot(ds, fig_dir / "indices.png")]


def table_mosaic(ds: PreparedDataset, path: Path, per_class: int = 4, seed: int = 0) -> Path:
    """PNG of the three central slices of each phase for a few subjects of each class."""
    rng = np.random.default_rng(seed)
    m, names, phases = ds.manifest, ds.class_names, ds.meta["phases"]
    picks = []
    for lab in names:
        idx = m.index[m["label"] == lab].to_numpy()
        picks += [(lab, int(i)) for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False)]
    fig, axes = plt.subplots(len(picks), 3 * len(phases), figsize=(2.0 * 3 * len(phases), 2.0 * len(picks)),
                             squeeze=False)
    for r, (lab, i) in enumerate(picks):
        row = m.loc[i]
        for p, phase in enumerate(phases):
            vol = np.asarray(ds.masks[int(row["index"])][p])
            c = [n // 2 for n in vol.shape]
            for a, img in enumerate((vol[c[0]], vol[:, c[1]], vol[:, :, c[2]])):
                ax = axes[r, 3 * p + a]
                ax.imshow(img.T, origin="lower", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"{phase} axis {a}", fontsize=8)
        axes[r, 0].set_ylabel(f"{row['subject']}\n{names[lab]}", fontsize=7)
    fig.suptitle("Aligned masks: central slice across each template axis", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def show_table(ds: PreparedDataset, fig_dir: Path, console: Console) -> list[Path]:
    """A manifest-table cohort: counts per split and class, the structure's volume per class and phase, the
    alignment, clipped and skipped subjects; a mosaic of aligned masks."""
    grid, m, names = ds.grid, ds.manifest, ds.class_names
    console.print(f"[bold]{ds.path}[/]: {len(ds)} subjects, table cohort, phases {', '.join(ds.meta['phases'])}, "
                  f"structure label {ds.meta.get('structure_label')}, alignment "
                  f"{ds.meta.get('orientation', {}).get('alignment')}, grid {'x'.join(map(str, grid.shape))} at "
                  f"{grid.spacing} mm")
    console.print(count_table(pd.crosstab(m["split"], m["label"].map(names), margins=True, margins_name="total"),
                              "Subjects per split and class"))
    t = Table(title="Structure volume per class (ml): mean ± sd [IQR]")
    t.add_column("phase")
    for name in names.values():
        t.add_column(name)
    for phase in ds.meta["phases"]:
        cells = []
        for lab in names:
            v = m.loc[m["label"] == lab, f"volume_ml_{phase}"].dropna()
            cells.append(f"{v.mean():.2f} ± {v.std():.2f}  [{v.quantile(.25):.2f}–{v.quantile(.75):.2f}]"
                         if len(v) else "–")
        t.add_row(phase, *cells)
    console.print(t)
    _print_problems(ds, console)
    return [table_mosaic(ds, fig_dir / "mosaic.png")]


SHOWS = {"cardiac": show_cardiac, "fetal": show_fetal}  # task (shapetune.catalog.TASK_SPECS) -> its summary
COHORT_SHOWS = {"table": show_table}  # a cohort whose summary differs from its task's (checked first)


def show(path: str | Path, figures: str | Path | None = None, console: Console | None = None) -> list[Path]:
    """Print a prepared dataset's summary tables and write its figures (default ``DIR/figures``).

    Args:
        path: the prepared dataset folder.
        figures: where the PNGs go.
        console: where the tables go (a new console by default).

    Returns:
        The figures written.

    Raises:
        DataError: ``path`` is not a readable prepared dataset.
    """
    console = console or Console()
    ds = PreparedDataset(path)
    fig_dir = Path(figures) if figures else ds.path / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    summary = COHORT_SHOWS.get(ds.meta.get("cohort")) or SHOWS[cohort_task(ds.meta.get("cohort"))]
    paths = summary(ds, fig_dir, console)
    for p in paths:
        console.print(f"wrote {p}")
    return paths
