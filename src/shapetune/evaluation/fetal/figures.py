"""Study figures: metrics by view subset, and uncertainty maps next to the truth and the prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.fetal.folds import SUBSET_LABELS, VIEW_SUBSETS, fold_data

SLICE_AXES = {"axial": 2, "sagittal": 1, "coronal": 0}  # skull-frame axis each display slice is normal to


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_by_views(table: pd.DataFrame, path: Path) -> None:
    """DC, HD and |RVD| per model and view subset (mean +- sd over folds), grouped bars."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    models = list(dict.fromkeys(table.model))
    x = np.arange(len(VIEW_SUBSETS))
    w = 0.8 / max(1, len(models))
    for ax, (m, title) in zip(axes, (("dice", "Dice (higher is better)"), ("hd", "Hausdorff mm"),
                                     ("abs_rvd", "|relative volume difference|")), strict=True):
        for i, model in enumerate(models):
            g = table[table.model == model].set_index("views").reindex(list(VIEW_SUBSETS))
            ax.bar(x + i * w - 0.4 + w / 2, g[f"{m}_mean"], w, yerr=g[f"{m}_sd"].fillna(0), capsize=3, label=model)
        ax.set_xticks(x, ["3 views", "axial+sag.", "axial"])
        ax.set_title(title)
        if m == "dice":
            ax.set_ylim(max(0.0, float(np.nanmin(table["dice_mean"])) - 0.15), 1.0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def mid_slice(vol: np.ndarray, view: str, index: int | None = None) -> np.ndarray:
    """A display slice (transposed for ``origin='lower'``) through the grid centre, normal to ``view``'s axis."""
    ax = SLICE_AXES[view]
    i = vol.shape[ax] // 2 if index is None else index
    return np.take(vol, i, axis=ax).T


def uncertainty_figure(study: Path, data: str | Path, model: str, fold: int, path: Path, case: int = 0) -> bool:
    """One test case: truth, prediction and variance (3 slices) for each view subset; False without maps."""
    from shapetune.evaluation.fetal.scoring import load_maps

    maps = Path(study) / "scores" / f"{model}_fold{fold}.npz"
    if not maps.exists():
        return False
    _, truth, subjects, _ = fold_data(data, fold)
    plt = _plt()
    fig, axes = plt.subplots(len(VIEW_SUBSETS), 3, figsize=(9, 3 * len(VIEW_SUBSETS)))
    for r, subset in enumerate(VIEW_SUBSETS):
        _, pred, var = load_maps(maps, subset)
        vmax = max(1e-3, float(var.max()))
        for c, view in enumerate(SLICE_AXES):
            ax = axes[r, c]
            ax.imshow(mid_slice(truth[case, 0], view), origin="lower", cmap="gray", alpha=0.9)
            ax.contour(mid_slice(pred[case].astype(float), view), levels=[0.5], colors="tab:green", linewidths=0.8)
            im = ax.imshow(np.ma.masked_less(mid_slice(var[case], view), vmax * 0.05), origin="lower", cmap="magma",
                           vmin=0, vmax=vmax, alpha=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{SUBSET_LABELS[subset].split(' (')[0]} - {view}", fontsize=9)
        fig.colorbar(im, ax=axes[r].tolist(), shrink=0.8, label="variance")
    fig.suptitle(f"{model}, fold {fold}, {subjects[case]}: truth (grey), prediction (green), uncertainty")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
