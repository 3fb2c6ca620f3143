"""Evaluation splits: the Imperial-style test split and an external ACDC-style split, on the model's grid."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.prepare import prepare
from shapetune.data.template import MYOCARDIUM, TemplateGrid

CLINICAL_FEATURES = ("edvi_ml_m2", "esvi_ml_m2", "ef_pct", "lvmi_g_m2", "mwt_mm")


@dataclass
class EvalSplit:
    """Subjects of one split: binary masks ``[N, P (phases), D, H, W]``, labels and clinical indices (none for a
    manifest-table cohort)."""

    name: str
    masks: np.ndarray
    labels: np.ndarray
    subjects: list[str]
    clinical: pd.DataFrame
    spacing: float
    fingerprint: str
    phases: tuple[str, ...] = ("ed", "es")


def split_fingerprint(ds: PreparedDataset, split: str | None) -> str:
    """Identifies a split of a prepared dataset (its inputs, settings and grid) for the evaluation cache."""
    key = f"{ds.meta.get('fingerprint', '')}|{ds.grid.shape}|{ds.grid.spacing}|{split}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_split(path: str | Path, split: str | None, name: str, grid: TemplateGrid | None = None) -> EvalSplit:
    """Rows of ``split`` (or all rows) of a prepared dataset; the grid must match the model's when given."""
    ds = PreparedDataset(path)
    if grid is not None and ds.grid != grid:
        raise DataError(ds.path / "dataset.json", f"prepared at {ds.grid.shape}/{ds.grid.spacing} mm, the model "
                                                  f"expects {grid.shape}/{grid.spacing} mm")
    m = (ds.manifest if split is None else ds.split(split)).sort_values("index")
    table = not ds.is_cardiac  # a user's own cohort: its labels as given, no clinical indices
    m = m[m["group"].isin(["NOR", "HCM"])] if "group" in m and not table else m
    if m.empty:
        raise DataError(ds.path / "manifest.parquet", f"no NOR/HCM subjects in split {split!r}")
    masks = (np.asarray(ds.masks[m["index"].to_numpy()]) == MYOCARDIUM).astype(np.uint8)
    missing = [c for c in CLINICAL_FEATURES if c not in m]
    if missing and not table:
        raise DataError(ds.path / "manifest.parquet", f"clinical index columns missing: {missing}")
    clinical = m[[c for c in CLINICAL_FEATURES if c in m]].reset_index(drop=True)
    return EvalSplit(name, masks, m["label"].to_numpy().astype(int), m["subject"].tolist(), clinical,
                     ds.grid.spacing, split_fingerprint(ds, split), ds.phases)


def load_train(path: str | Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Training split (masks, labels, clinical indices) for fitting the baselines."""
    s = load_split(path, "train", "train")
    return s.masks, s.labels, s.clinical


def acdc_prepared(acdc: str | Path, grid: TemplateGrid, cache: Path, name: str = "acdc") -> Path:
    """A prepared ACDC dataset on ``grid``: ``acdc`` itself if already prepared there, else prepared (cached
    under ``name``, one folder per external split)."""
    acdc = Path(acdc)
    if (acdc / "dataset.json").exists():
        ds = PreparedDataset(acdc)
        if ds.grid == grid:
            return acdc
        raise DataError(acdc / "dataset.json", f"prepared at {ds.grid.shape}/{ds.grid.spacing} mm, the models expect "
                                               f"{grid.shape}/{grid.spacing} mm; pass the raw ACDC folder instead")

    out = cache / f"{name}_{grid.shape[0]}_{grid.spacing:g}mm"
    prepare(acdc, "acdc", out, grid, quiet=True)  # idempotent: unchanged inputs are not prepared again
    return out
