"""Read-only access to fetal-skull studies (``shapetune study`` folders, or a fetal sweep's evaluation)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.dataset import PreparedDataset
from shapetune.evaluation.fetal.files import STUDY_FILE, slug

FETAL_EVAL = Path("evaluation") / "fetal"


@dataclass(frozen=True)
class Study:
    name: str
    path: Path

    @property
    def request(self) -> dict:
        return json.loads((self.path / STUDY_FILE).read_text())

    @property
    def data(self) -> str:
        return self.request["data"]


def discover_studies(roots: list[Path]) -> list[Study]:
    """Studies at, directly under, or in the evaluation of the experiments at/under each root."""
    found: dict[Path, Study] = {}
    for root in roots:
        cands = [root, *(d for d in sorted(root.iterdir()) if d.is_dir())] if root.is_dir() else []
        for d in cands:
            for p, name in ((d, d.name), (d / FETAL_EVAL, f"{d.name} (sweep)")):
                if (p / STUDY_FILE).exists() and (p / "table.csv").exists():
                    found.setdefault(p.resolve(), Study(name, p.resolve()))
    return list(found.values())


def is_study(path: Path) -> bool:
    return (path / STUDY_FILE).exists() or any((d / STUDY_FILE).exists() for d in path.iterdir() if d.is_dir())


def stamp(study: Study) -> tuple:
    return tuple(f.stat().st_mtime_ns if f.exists() else 0
                 for f in (study.path / "table.csv", study.path / "per_case.parquet"))


def tables(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(study.path / "table.csv"), pd.read_parquet(study.path / "per_case.parquet")


def case(study: Study, model: str, fold: int, subset: str, subject: str) -> dict:
    """Truth, prediction, variance and the input planes of one test case under one view subset."""
    from shapetune.evaluation.fetal.scoring import load_maps

    subjects, pred, var = load_maps(study.path / "scores" / f"{slug(model)}_fold{fold}.npz", subset)
    i = subjects.index(subject)
    ds = PreparedDataset(study.data)
    row = ds.manifest.set_index("subject").loc[subject]
    k = int(row["index"])
    return {"truth": np.asarray(ds.masks[k][0]).astype(bool), "pred": pred[i], "var": var[i],
            "planes": np.asarray(ds.planes[k]), "spacing": ds.grid.spacing,
            "ga_weeks": row.get("ga_weeks"), "cephalic_index": row.get("cephalic_index")}
