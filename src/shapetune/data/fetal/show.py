"""Summary of a prepared fetal-skull dataset: folds, gestational age and head shape, a PNG mosaic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shapetune.data.dataset import PreparedDataset
from shapetune.data.fetal.planes import VIEWS
from shapetune.data.fetal.ultrasound import render_ultrasound
from shapetune.data.tables import count_table


def fold_counts(m: pd.DataFrame) -> pd.DataFrame:
    """Subjects per fold and split (train / val / test)."""
    cols = sorted(c for c in m.columns if c.startswith("fold"))
    return pd.DataFrame({c: m[c].value_counts() for c in cols}).reindex(["train", "val", "test"]).fillna(0).astype(int)


def mosaic(ds: PreparedDataset, path: Path, n: int = 4) -> Path:
    """A few subjects across gestational age: three 3D slices, then each plane as a mask and as ultrasound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = ds.manifest.sort_values("ga_weeks") if "ga_weeks" in ds.manifest else ds.manifest
    picks = m.iloc[np.linspace(0, len(m) - 1, min(n, len(m))).astype(int)]
    fig, axes = plt.subplots(len(picks), 9, figsize=(16, 1.9 * len(picks)), squeeze=False)
    rng = np.random.default_rng(0)
    for r, (_, row) in enumerate(picks.iterrows()):
        vol = np.asarray(ds.masks[int(row["index"])][0])
        g = vol.shape[0] // 2
        for c, (img, title) in enumerate(((vol[:, :, g].T, "3D axial"), (vol[:, g, :].T, "3D sagittal"),
                                          (vol[g].T, "3D coronal"))):
            axes[r, c].imshow(img, origin="lower", cmap="gray")
            axes[r, c].set_title(title, fontsize=7)
        for v, view in enumerate(VIEWS):
            pl = np.asarray(ds.planes[int(row["index"]), v])
            axes[r, 3 + 2 * v].imshow(pl.T, origin="lower", cmap="gray")
            axes[r, 3 + 2 * v].set_title(f"{view} mask", fontsize=7)
            axes[r, 4 + 2 * v].imshow(render_ultrasound(pl.T[::-1], rng), cmap="gray")
            axes[r, 4 + 2 * v].set_title(f"{view} (US-like)", fontsize=7)
        ga = f"{row['ga_weeks']:.1f} wk, CI {row['cephalic_index']:.0f}" if "ga_weeks" in row else ""
        axes[r, 0].set_ylabel(f"{row['subject']}\n{ga}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Fetal skulls (skull frame) and their acquired planes (not registered to it)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def show_fetal(ds: PreparedDataset, fig_dir: Path, console: Console) -> list[Path]:
    m = ds.manifest
    console.print(f"[bold]{ds.path}[/]: {len(ds)} subjects, cohort fetal, grid {ds.grid.shape[0]}^3 at "
                  f"{ds.grid.spacing:.3f} mm, views {', '.join(VIEWS)}")
    console.print(count_table(fold_counts(m), "Subjects per fold and split"))
    if "shape_class" in m:
        t = Table(title="Head shape (cephalic index) and gestational age")
        for c in ("shape", "n", "GA weeks", "CI", "BPD mm", "OFD mm"):
            t.add_column(c)
        for shape, g in m.groupby("shape_class"):
            t.add_row(shape, str(len(g)), *(f"{g[c].mean():.1f} ± {g[c].std():.1f}" if len(g) > 1
                                            else f"{g[c].mean():.1f}"
                                            for c in ("ga_weeks", "cephalic_index", "bpd_mm", "ofd_mm")))
        console.print(t)
    return [mosaic(ds, fig_dir / "mosaic.png")]
