"""The fetal-skull study's cross-validation folds and view subsets, read from a prepared dataset's manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError

# The reference study's view subsets (axial, sagittal, coronal present): 3 views, axial + sagittal, axial alone.
VIEW_SUBSETS: dict[str, tuple[int, int, int]] = {"3v": (1, 1, 1), "2v": (1, 1, 0), "1v": (1, 0, 0)}
SUBSET_LABELS = {"3v": "3 views", "2v": "2 views (axial + sagittal)", "1v": "1 view (axial)"}


def fold_rows(manifest: pd.DataFrame, fold: int, split: str, source: str) -> pd.DataFrame:
    """The manifest rows of ``split`` (train, val, test) in cross-validation fold ``fold``, in index order.

    Raises:
        DataError: the dataset has no such fold, or the fold has no subject in ``split``.
    """
    col = f"fold{fold}"
    if col not in manifest:
        have = sorted(c for c in manifest.columns if c.startswith("fold"))
        raise DataError(source, f"no fold {fold} (data.fold); this dataset has {', '.join(have)}")
    rows = manifest[manifest[col] == split].sort_values("index")
    if rows.empty:
        raise DataError(source, f"fold {fold} has no {split!r} subjects")
    return rows


def fold_data(data: str | Path, fold: int) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """The test subjects of ``fold``: planes ``[N, 3, G, G]``, masks ``[N, 1, G, G, G]``, ids, spacing (mm)."""
    ds = PreparedDataset(data)
    rows = fold_rows(ds.manifest, fold, "test", str(ds.path / "manifest.parquet"))
    idx = rows["index"].to_numpy()
    return np.asarray(ds.planes[idx]), np.asarray(ds.masks[idx]), rows.subject.tolist(), ds.grid.spacing
