"""Read a prepared dataset (``masks.npy`` memory-mapped, ``manifest.parquet``, ``dataset.json``)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.errors import DataError
from shapetune.data.template import TemplateGrid


class PreparedDataset:
    """A prepared dataset on disk; masks are memory-mapped, so opening it is cheap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "dataset.json"
        if not meta.exists():
            raise DataError(meta, "not a prepared dataset (dataset.json missing); run `shapetune data prepare`")
        self.meta = json.loads(meta.read_text())
        self.grid = TemplateGrid(tuple(self.meta["grid"]["shape"]), float(self.meta["grid"]["spacing"]))

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "manifest.parquet")

    @cached_property
    def masks(self) -> np.ndarray:
        arr = np.load(self.path / "masks.npy", mmap_mode="r")
        if arr.shape[0] != len(self.manifest):
            raise DataError(self.path / "masks.npy", f"{arr.shape[0]} volumes but {len(self.manifest)} manifest rows")
        return arr

    @cached_property
    def planes(self) -> np.ndarray:
        """The fetal-skull cohort's 2D planes ``[N, 3, G, G]`` (axial, sagittal, coronal), memory-mapped."""
        path = self.path / "planes.npy"
        if not path.exists():
            raise DataError(path, "no planes here: not a fetal-skull dataset (shapetune data prepare --format fetal)")
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] != len(self.manifest):
            raise DataError(path, f"{arr.shape[0]} plane sets but {len(self.manifest)} manifest rows")
        return arr

    def __len__(self) -> int:
        return len(self.manifest)

    def split(self, name: str) -> pd.DataFrame:
        """Manifest rows of one split (``train``, ``val``, ``test``)."""
        return self.manifest[self.manifest["split"] == name]
