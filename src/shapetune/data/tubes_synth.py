"""A synthetic non-cardiac cohort: hippocampus-like curved tubes, one phase, with a disease-like local atrophy.

Each subject is a tube along a curved centreline (a C-shaped arc with a slight twist out of its plane), thick at
the head and tapering to the tail, voxelised in its own scanner grid (1 x 1 x 1.2 mm, random pose: up to
25 degrees of rotation and 6 mm of shift), so that a model sees it only after alignment. Patients
(group ``AD``) lose 15-30 % of the radius over a stretch of the body (a Gaussian bump centred at 35 % of the
length, 10 % wide); controls (``CN``) do not. Size, length, curvature and taper vary in both groups.

The structure is label 17 (as FreeSurfer labels the left hippocampus) beside a neighbouring blob labelled 18
(the amygdala's label), so ``--structure-label 17`` matters. Written as ``OUT/manifest.csv`` (subject, mask,
group, age, sex; no split: ``data prepare`` draws one), ``OUT/masks/<subject>.nii.gz`` and
``OUT/ground_truth.parquet`` (the generator's parameters), then ``OUT/cohort.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from shapetune.data.errors import DataError
from shapetune.data.nifti import save_nifti
from shapetune.data.parallel import pmap
from shapetune.data.publish import open_out, publishing

STRUCTURE_LABEL, NEIGHBOUR_LABEL = 17, 18
SCAN_SHAPE, SCAN_SPACING = (88, 64, 56), (1.0, 1.0, 1.2)


@dataclass(frozen=True)
class TubesConfig:
    seed: int = 0
    n_per_group: int = 40
    atrophy: tuple[float, float] = (0.15, 0.30)  # fraction of the radius lost at the bump's centre (AD)

    def check(self) -> None:
        if not 4 <= self.n_per_group <= 2000:
            raise DataError("--n-per-group", f"must be within 4..2000, got {self.n_per_group}")


def centreline(length: float, bend: float, twist: float, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[n, 3]`` (mm, centred) along a C-shaped arc and their position t in [0, 1] along it."""
    t = np.linspace(0.0, 1.0, n)
    x = (t - 0.5) * length
    y = bend * np.sin(np.pi * t) - bend * 2 / np.pi
    z = twist * (t - 0.5) ** 2 * 4 - twist / 3
    return np.stack([x, y, z], axis=1), t


def radius(t: np.ndarray, head: float, taper: float, atrophy: float) -> np.ndarray:
    """Tube radius (mm) along t: thick head, thinner tail, minus the atrophy bump around t = 0.35."""
    base = head * (1.0 - taper * t)
    return base * (1.0 - atrophy * np.exp(-0.5 * ((t - 0.35) / 0.10) ** 2))


def _subject(args: tuple) -> dict:
    i, group, seed, atrophy_range, out = args
    rng = np.random.default_rng([seed, i])
    p = {"subject": f"sub-{i:04d}", "group": group, "length_mm": rng.uniform(34, 44), "bend_mm": rng.uniform(5, 9),
         "twist_mm": rng.uniform(-3, 3), "head_radius_mm": rng.uniform(5.5, 7.0), "taper": rng.uniform(0.45, 0.6),
         "atrophy": rng.uniform(*atrophy_range) if group == "AD" else 0.0,
         "age": round(float(rng.uniform(60, 85)), 1), "sex": str(rng.choice(["F", "M"]))}
    rot = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(rng.uniform(0, 25)))
    shift = rng.uniform(-6, 6, 3)
    pts, t = centreline(p["length_mm"], p["bend_mm"], p["twist_mm"])
    sp = np.asarray(SCAN_SPACING)
    idx = np.indices(SCAN_SHAPE).reshape(3, -1).T
    world = (idx - (np.asarray(SCAN_SHAPE) - 1) / 2) * sp  # scanner mm, origin at the volume centre
    local = rot.inv().apply(world - shift)  # the shape's own frame
    dist, near = cKDTree(pts).query(local, distance_upper_bound=12.0)
    hit = np.isfinite(dist)
    inside = np.zeros(len(local), dtype=bool)
    inside[hit] = dist[hit] <= radius(t[near[hit]], p["head_radius_mm"], p["taper"], p["atrophy"])
    # The amygdala-like neighbour: a blob beyond the head, a voxel or two from the tube's end.
    blob_c = pts[0] + np.array([-13.0, 2.0, 0.0])
    blob = (np.linalg.norm(local - blob_c, axis=1) <= 4.5) & ~inside
    labels = np.zeros(len(local), dtype=np.int16)
    labels[inside], labels[blob] = STRUCTURE_LABEL, NEIGHBOUR_LABEL
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(np.asarray(SCAN_SHAPE) - 1) / 2 * sp
    save_nifti(Path(out) / "masks" / f"{p['subject']}.nii.gz", labels.reshape(SCAN_SHAPE), affine)
    p["volume_ml"] = float(inside.sum() * np.prod(sp) / 1000.0)
    vol = labels.reshape(SCAN_SHAPE)
    p["touches_scan_border"] = bool(vol[[0, -1]].any() or vol[:, [0, -1]].any() or vol[:, :, [0, -1]].any())
    return p


def synth_tubes(out: str | Path, cfg: TubesConfig = TubesConfig(), workers: int | None = None,  # noqa: B008
                quiet: bool = False) -> pd.DataFrame:
    """Write the cohort (see the module docstring) and return its ground truth; an identical cohort is reused.

    Raises:
        DataError: a bad setting, or ``out`` holds something that is not a ShapeTune cohort.
    """
    cfg.check()
    out, notes = open_out(Path(out), "cohort")
    marker = out / "cohort.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = {}
        if old.get("cohort") == "tubes" and old.get("config") == json.loads(json.dumps(asdict(cfg))) \
                and (out / "ground_truth.parquet").exists():
            return pd.read_parquet(out / "ground_truth.parquet")
    with publishing(out, "cohort", notes, "cohort") as pub:
        jobs = [(i, group, cfg.seed, cfg.atrophy, str(pub.staging))
                for i, group in enumerate(["CN"] * cfg.n_per_group + ["AD"] * cfg.n_per_group)]
        recs: list = [None] * len(jobs)
        for i, rec in pmap(_subject, jobs, workers, "synth tubes", quiet):
            recs[i] = rec
        gt = pd.DataFrame(recs)
        gt.to_parquet(pub.staging / "ground_truth.parquet", index=False)
        table = gt[["subject", "group", "age", "sex"]].assign(mask=[f"masks/{s}.nii.gz" for s in gt["subject"]])
        table[["subject", "mask", "group", "age", "sex"]].to_csv(pub.staging / "manifest.csv", index=False)
        (pub.staging / "cohort.json").write_text(json.dumps(
            {"cohort": "tubes", "config": asdict(cfg), "n_subjects": len(gt), "structure_label": STRUCTURE_LABEL,
             "contents": ["cohort.json", "manifest.csv", "ground_truth.parquet", "masks"]}, indent=2))
    return gt
