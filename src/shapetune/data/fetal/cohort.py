"""Write the synthetic fetal-skull cohort: 3D skulls, their three standard planes, the 3-fold split.

Layout (what a real study's export would look like; every file a NIfTI)::

    OUT/cohort.json  OUT/subjects.csv  OUT/folds.csv  OUT/ground_truth.parquet
    OUT/subjects/FS001/skull.nii.gz                   3D calvarium mask in the skull frame
    OUT/subjects/FS001/plane_axial.nii.gz             2D mask; its affine is the plane's pose (mm)
    OUT/subjects/FS001/us_axial.nii.gz                ultrasound-like rendering of the same plane
    ... sagittal, coronal

Folds (the reference study's protocol): 72 subjects, 3 folds, each with 14 test subjects (disjoint between
folds) and the other 58 for training, of which ``n_val`` are held out for model selection.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune import __version__
from shapetune.data.fetal.planes import VIEWS, cut_plane, perturb, standard_poses
from shapetune.data.fetal.skull import default_spacing, render_skull, sample_skull
from shapetune.data.fetal.ultrasound import render_ultrasound
from shapetune.data.limits import check_memory
from shapetune.data.nifti import save_nifti
from shapetune.data.parallel import default_workers, pmap
from shapetune.data.publish import open_out, publishing

GENERATOR_VERSION = 2  # bump when the skull or plane generator changes what it draws: old cohorts are then redone


@dataclass(frozen=True)
class FetalConfig:
    seed: int = 0
    n_subjects: int = 72
    grid: int = 64
    folds: int = 3
    n_test: int = 14
    n_val: int = 8
    max_deg: float = 10.0  # plane rotation, degrees
    max_px: float = 7.0  # plane shift in-plane, pixels
    ultrasound: bool = True

    @property
    def spacing(self) -> float:
        return default_spacing(self.grid)

    def check(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.folds * self.n_test > self.n_subjects:
            raise ValueError(f"{self.folds} folds x {self.n_test} test subjects need at least "
                             f"{self.folds * self.n_test} subjects, got {self.n_subjects}")
        if self.n_subjects - self.n_test - self.n_val < 2:
            raise ValueError("too few training subjects left after the test and validation sets")
        if self.grid < 16:
            raise ValueError(f"grid must be at least 16, got {self.grid}")


def subject_id(i: int) -> str:
    return f"FS{i + 1:03d}"


def _seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 3, index]).generate_state(1)[0])


def fold_table(subjects: list[str], cfg: FetalConfig) -> pd.DataFrame:
    """``subject, fold0, fold1, ...`` with values train/val/test: disjoint test blocks of a seeded permutation,
    validation the next ``n_val`` subjects after each block (cyclically)."""
    n = len(subjects)
    order = np.random.default_rng([cfg.seed, 7]).permutation(n)
    table = pd.DataFrame({"subject": subjects})
    for k in range(cfg.folds):
        split = np.array(["train"] * n, dtype=object)
        test = order[k * cfg.n_test:(k + 1) * cfg.n_test]
        val = order[[(k * cfg.n_test + cfg.n_test + j) % n for j in range(cfg.n_val)]]
        split[test], split[val] = "test", "val"
        table[f"fold{k}"] = split
    return table


def _one(args: tuple) -> dict:
    index, cfg, out = args
    sid = subject_id(index)
    seed = _seed(cfg.seed, index)
    p = sample_skull(sid, seed)
    vol = render_skull(p, cfg.grid, cfg.spacing)
    if vol.sum() == 0:
        raise RuntimeError(f"{sid}: empty skull (generator bug)")
    d = Path(out) / "subjects" / sid
    aff3 = np.eye(4)
    aff3[:3, :3] *= cfg.spacing
    aff3[:3, 3] = -(cfg.grid - 1) / 2.0 * cfg.spacing
    save_nifti(d / "skull.nii.gz", vol, aff3)
    rng = np.random.default_rng(seed + 1)
    rec = p.record()
    for view, pose in standard_poses(p).items():
        acquired = perturb(pose, rng, cfg.spacing, cfg.max_deg, cfg.max_px)
        plane = cut_plane(vol, cfg.spacing, acquired, cfg.grid)
        aff = acquired.affine(cfg.grid, cfg.spacing)
        save_nifti(d / f"plane_{view}.nii.gz", plane[:, :, None], aff)
        if cfg.ultrasound:
            save_nifti(d / f"us_{view}.nii.gz", render_ultrasound(plane, rng)[:, :, None], aff)
        rec[f"pose_{view}"] = acquired.as_list()
        rec[f"standard_{view}"] = pose.as_list()
        rec[f"plane_pixels_{view}"] = int(plane.sum())
    rec["skull_voxels"] = int(vol.sum())
    return rec


def synth_fetal(out: str | Path, cfg: FetalConfig = FetalConfig(), workers: int | None = None,
                quiet: bool = False) -> pd.DataFrame:
    """Generate the cohort (reused when an identical complete one is already in ``out``); returns ground truth.

    Written into a staging folder and published in one step (:mod:`shapetune.data.publish`).
    """
    cfg.check()
    workers = workers or default_workers()
    check_memory((cfg.grid,) * 3, workers, "fetal", f"--grid {cfg.grid}")
    meta = {"cohort": "fetal", "generator": f"shapetune {__version__}", "generator_version": GENERATOR_VERSION,
            **asdict(cfg), "spacing": cfg.spacing, "views": list(VIEWS), "labels": {"1": "calvarium"}}
    out, notes = open_out(out, "cohort")
    if (out / "cohort.json").exists() and (out / "ground_truth.parquet").exists():
        old = json.loads((out / "cohort.json").read_text())
        old.pop("n_written", None)
        old.pop("contents", None)
        if old == json.loads(json.dumps(meta)):
            return pd.read_parquet(out / "ground_truth.parquet")
    with publishing(out, "cohort", notes, "cohort") as pub:
        recs: list = [None] * cfg.n_subjects
        jobs = [(i, cfg, str(pub.staging)) for i in range(cfg.n_subjects)]
        for i, rec in pmap(_one, jobs, workers, "synth fetal", quiet):
            recs[i] = rec
        gt = pd.DataFrame(recs)
        folds = fold_table(list(gt.subject), cfg)
        gt = gt.merge(folds, on="subject")
        gt.to_parquet(pub.staging / "ground_truth.parquet", index=False)
        folds.to_csv(pub.staging / "folds.csv", index=False)
        gt[["subject", "ga_weeks", "cephalic_index", "shape_class", "bpd_mm", "ofd_mm"]].to_csv(
            pub.staging / "subjects.csv", index=False)
        contents = ["cohort.json", "ground_truth.parquet", "folds.csv", "subjects.csv", "subjects"]
        (pub.staging / "cohort.json").write_text(json.dumps({**meta, "n_written": len(gt), "contents": contents},
                                                            indent=2))  # last: marks it complete
    return gt
