"""Write the two synthetic cohorts to disk: the Imperial-style 3D cohort and an ACDC-layout test set.

Imperial-style layout (3D label maps already on the template grid, small registration residuals)::

    OUT/cohort.json  OUT/subjects.csv  OUT/ground_truth.parquet
    OUT/subjects/IMP0001/seg_ED.nii.gz  OUT/subjects/IMP0001/seg_ES.nii.gz

ACDC layout (ACDC MICCAI 2017, thick short-axis stacks in scanner orientation)::

    OUT/patient021/Info.cfg  OUT/patient021/patient021_frame01.nii.gz  ..._frame01_gt.nii.gz  (ED and ES)
    OUT/shapetune_ground_truth.parquet   (synthetic only; real ACDC has no such file)

Both use ACDC labels: 1 = RV cavity, 2 = LV myocardium, 3 = LV cavity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from shapetune import __version__
from shapetune.data.cardiac_synth import HCM, HEALTHY, RAW_LV, RAW_MYO, RAW_RV, random_pose, render, \
    roughness_noise, sample_subject, subject_record
from shapetune.data.errors import DataError
from shapetune.data.limits import check_field_of_view, check_memory
from shapetune.data.nifti import save_nifti
from shapetune.data.parallel import default_workers, pmap
from shapetune.data.publish import open_out, publishing
from shapetune.data.template import TemplateGrid

# The reference study's split: (split, healthy, HCM).
IMPERIAL_SPLIT = (("train", 276, 261), ("val", 75, 75), ("test", 100, 100))
# ACDC training-set numbering: HCM patients 021-040, NOR patients 061-080.
ACDC_FIRST_ID = {"HCM": 21, "NOR": 61}
# More HCM patients than this would reach the NOR numbers (061-) and overwrite them.
MAX_PER_GROUP = ACDC_FIRST_ID["NOR"] - ACDC_FIRST_ID["HCM"]


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    grid: int = 64
    spacing: float = 2.0
    borderline_fraction: float = 0.15
    roughness_mm: float = 0.6

    def check(self) -> None:
        """Refuse settings the generator cannot honour, before any work starts."""
        if self.seed < 0:
            raise DataError("--seed", f"must be >= 0, got {self.seed}")
        if not 0.0 <= self.borderline_fraction <= 1.0:
            raise DataError("--borderline-fraction", f"must be within 0..1, got {self.borderline_fraction}")
        if not (np.isfinite(self.roughness_mm) and self.roughness_mm >= 0):
            raise DataError("roughness_mm", f"must be >= 0, got {self.roughness_mm}")

    @property
    def template(self) -> TemplateGrid:
        return TemplateGrid.cube(self.grid, self.spacing)


def _subject_seed(seed: int, cohort: str, index: int) -> int:
    # Independent of worker count and order: one child stream per (seed, cohort, subject).
    return int(np.random.SeedSequence([seed, {"imperial": 1, "acdc": 2}[cohort], index]).generate_state(1)[0])


def imperial_plan(seed: int, split: tuple = IMPERIAL_SPLIT) -> pd.DataFrame:
    """Subject ids, labels and split of the Imperial-style cohort (exact class counts, shuffled by seed)."""
    rows = [(s, lab) for s, nh, nc in split for lab in [HEALTHY] * nh + [HCM] * nc]
    order = np.random.default_rng(seed).permutation(len(rows))
    recs = [{"subject": f"IMP{i + 1:04d}", "split": rows[j][0], "label": rows[j][1]} for i, j in enumerate(order)]
    return pd.DataFrame(recs)


def imperial_subject(sid: str, label: int, cfg: SynthConfig):
    """One planned Imperial-style subject's demographics and geometry: what synth renders, deterministic in
    ``cfg.seed`` and the subject's number."""
    return sample_subject(sid, label, _subject_seed(cfg.seed, "imperial", int(sid[3:])), cfg.borderline_fraction)


def _imperial_one(args: tuple) -> dict:
    sid, label, split, cfg, out = args
    subj = imperial_subject(sid, label, cfg)
    seed = subj.seed
    grid = TemplateGrid.cube(cfg.grid, cfg.spacing)
    rng = np.random.default_rng(seed + 1)
    rot, shift = random_pose(rng, max_deg=2.0, max_shift_mm=1.5)  # registration residual
    pts = np.einsum("ij,j...->i...", rot, grid.coords()) + shift[:, None, None, None]
    rec = subject_record(subj)
    for phase in ("ED", "ES"):
        noise = roughness_noise(grid.shape, (cfg.spacing,) * 3, rng, cfg.roughness_mm)
        labels = render(subj, phase, pts, noise)
        save_nifti(Path(out) / "subjects" / sid / f"seg_{phase}.nii.gz", labels, grid.affine())
    rec.update(split=split)
    return rec


def synth_imperial(out: str | Path, cfg: SynthConfig = SynthConfig(), workers: int | None = None,
                   split: tuple = IMPERIAL_SPLIT, quiet: bool = False) -> pd.DataFrame:
    """Generate the Imperial-style cohort; returns the ground-truth table (existing identical cohort: reused).

    The cohort is written into a staging folder and published in one step (:mod:`shapetune.data.publish`).
    """
    cfg.check()
    options = f"--grid {cfg.grid} --spacing {cfg.spacing:g}"
    check_field_of_view(cfg.template, options)
    workers = workers or default_workers()
    check_memory(cfg.template.shape, workers, "synth", options)
    for s, nh, nc in split:
        if min(nh, nc) < 0:
            raise DataError("split", f"subject counts must be >= 0, got {s}: {nh} healthy, {nc} HCM")
    extra = {"split": [list(s) for s in split]}
    out, notes = open_out(out, "cohort")
    if (done := _existing(out, "imperial", cfg, extra, "ground_truth.parquet")) is not None:
        return done
    plan = imperial_plan(cfg.seed, split)
    if plan.empty:
        raise DataError("split", "no subjects to generate")
    with publishing(out, "cohort", notes, "cohort") as pub:
        jobs = [(r.subject, int(r.label), r.split, cfg, str(pub.staging)) for r in plan.itertuples()]
        recs = [None] * len(jobs)
        for i, rec in pmap(_imperial_one, jobs, workers, "synth imperial", quiet):
            recs[i] = rec
        gt = pd.DataFrame(recs)
        gt.to_parquet(pub.staging / "ground_truth.parquet", index=False)
        gt[["subject", "split", "group", "age", "sex", "height_cm", "weight_kg"]].to_csv(pub.staging / "subjects.csv",
                                                                                       index=False)
        _write_cohort_json(pub.staging, "imperial", cfg, len(gt), extra,
                           ["cohort.json", "subjects.csv", "ground_truth.parquet", "subjects"])
    return gt


def _cohort_meta(cohort: str, cfg: SynthConfig, extra: dict) -> dict:
    return {"cohort": cohort, "generator": f"shapetune {__version__}", **cfg.__dict__, **extra,
            "labels": {"1": "RV cavity", "2": "LV myocardium", "3": "LV cavity"}}


def _write_cohort_json(out: Path, cohort: str, cfg: SynthConfig, n: int, extra: dict, contents: list[str]) -> None:
    # Written last: its presence marks a complete cohort; "contents" tells our files from a user's later.
    (out / "cohort.json").write_text(json.dumps({**_cohort_meta(cohort, cfg, extra), "n_subjects": n,
                                                 "contents": contents}, indent=2))


def _existing(out: Path, cohort: str, cfg: SynthConfig, extra: dict, gt_name: str) -> pd.DataFrame | None:
    """The ground truth of an already complete, identical cohort in ``out`` (so re-running is free)."""
    meta, gt = out / "cohort.json", out / gt_name
    if not (meta.exists() and gt.exists()):
        return None
    old = json.loads(meta.read_text())
    old.pop("n_subjects", None)
    old.pop("contents", None)
    return pd.read_parquet(gt) if old == json.loads(json.dumps(_cohort_meta(cohort, cfg, extra))) else None


# ---------------------------------------------------------------- ACDC-style
DEFAULT_TILT_DEG = 8.0


def _acdc_pose(rng: np.random.Generator, max_tilt_deg: float = DEFAULT_TILT_DEG) -> np.ndarray:
    """Template -> scanner rotation: long axis along -z (first slice basal), random in-plane angle, a tilt of
    the stack off the long axis up to ``max_tilt_deg``."""
    align = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # columns: images of e0, e1, e2
    spin = Rotation.from_rotvec([0.0, 0.0, rng.uniform(0, 2 * np.pi)]).as_matrix()
    tilt_axis = np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a), 0.0])
    tilt = Rotation.from_rotvec(tilt_axis * np.radians(rng.uniform(0, max_tilt_deg))).as_matrix()
    return tilt @ spin @ align


def _acdc_one(args: tuple) -> dict:
    pid, group, cfg, out, slice_mm, max_tilt_deg = args
    label = HCM if group == "HCM" else HEALTHY
    seed = _subject_seed(cfg.seed, "acdc", pid)
    subj = sample_subject(f"patient{pid:03d}", label, seed, cfg.borderline_fraction)
    rng = np.random.default_rng(seed + 7)
    rot = _acdc_pose(rng, max_tilt_deg)
    inplane = rng.uniform(1.37, 1.68)
    thick = slice_mm if slice_mm else float(rng.choice([5.0, 6.5, 8.0, 10.0]))
    nx, ny = int(rng.integers(200, 257)), int(rng.integers(180, 233))
    # Slices cover the LV from a little below the base plane to a little above the apex (incomplete coverage).
    apex_z = -(subj.ed.c - subj.z_centroid) - 4.0  # template axis-0 of the epicardial apex (approx.)
    base_z = subj.z_centroid - subj.ed.z_base
    lo = apex_z + rng.uniform(0.0, 0.7) * thick
    hi = base_z - rng.uniform(0.0, 0.7) * thick
    nz = max(3, int(np.floor((hi - lo) / thick)) + 1)
    spacing = np.array([inplane, inplane, thick])
    # Scanner world = voxel index * spacing. Place the LV centroid near the image centre.
    centre_world = np.array([nx / 2 * inplane, ny / 2 * inplane, 0.0]) + np.r_[rng.uniform(-20, 20, 2), 0.0]
    centre_world[2] = hi  # slice k then sits at template axis-0 position hi - k*thick (basal slice first)
    ii, jj, kk = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    world = np.stack([ii * inplane, jj * inplane, kk * thick]).astype(np.float64)
    rel = world - centre_world[:, None, None, None]
    pts = np.einsum("ji,j...->i...", rot, rel)  # scanner -> template: R^T (world - centre)
    affine = np.diag([inplane, inplane, thick, 1.0])
    pdir = Path(out) / f"patient{pid:03d}"
    ed_frame, n_frames = 1, int(rng.integers(25, 36))
    es_frame = int(rng.integers(9, 16))
    for phase, frame in (("ED", ed_frame), ("ES", es_frame)):
        noise = roughness_noise((nx, ny, nz), tuple(spacing), rng, cfg.roughness_mm, in_plane_only_axis=2)
        labels = render(subj, phase, pts, noise)
        save_nifti(pdir / f"patient{pid:03d}_frame{frame:02d}_gt.nii.gz", labels, affine)
        save_nifti(pdir / f"patient{pid:03d}_frame{frame:02d}.nii.gz", _cine_intensity(labels, rng), affine)
    d = subj.demographics
    (pdir / "Info.cfg").write_text(f"ED: {ed_frame}\nES: {es_frame}\nGroup: {group}\nHeight: {d.height_cm:.1f}\n"
                                   f"NbFrame: {n_frames}\nWeight: {d.weight_kg:.1f}\n")
    rec = subject_record(subj)
    rec.update(slice_thickness_mm=thick, inplane_mm=inplane, n_slices=nz,
               pose_rotation=rot.ravel().tolist(), ed_frame=ed_frame, es_frame=es_frame)
    return rec


def _cine_intensity(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crude bSSFP-like image: bright blood, dark myocardium, textured tissue, Rician-ish noise."""
    from scipy.ndimage import gaussian_filter

    nx, ny, _ = labels.shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    body = ((x / 0.9) ** 2 + (y / 0.75) ** 2 < 1.0)[..., None]
    tissue = 0.4 + 0.15 * gaussian_filter(rng.standard_normal(labels.shape), (6, 6, 0))
    img = np.where(body, tissue, 0.02)
    img = np.where(labels == RAW_MYO, 0.28, img)
    img = np.where((labels == RAW_LV) | (labels == RAW_RV), 0.85, img)
    img = np.abs(img + rng.normal(0, 0.03, img.shape) + 1j * rng.normal(0, 0.03, img.shape))
    return (img * 1000).astype(np.int16)


def synth_acdc(out: str | Path, cfg: SynthConfig = SynthConfig(), n_per_group: int = 20,
               workers: int | None = None, slice_mm: float | None = None, quiet: bool = False,
               max_tilt_deg: float = DEFAULT_TILT_DEG) -> pd.DataFrame:
    """Generate the ACDC-layout test cohort (``n_per_group`` NOR and HCM patients); returns ground truth.

    ``slice_mm`` fixes every patient's slice thickness (else drawn from 5, 6.5, 8, 10 mm) and ``max_tilt_deg``
    bounds the stack's tilt off the long axis: with another seed and a larger ``cfg.borderline_fraction`` they
    make a harder external split (``make demo``'s ``acdc_hard``: seed 1, 10 mm, 15 degrees, half of HCM
    borderline)."""
    cfg.check()
    if not 1 <= n_per_group <= MAX_PER_GROUP:
        raise DataError("--n-per-group", f"must be within 1..{MAX_PER_GROUP} (ACDC numbering: HCM patients from "
                                         f"{ACDC_FIRST_ID['HCM']:03d}, NOR from {ACDC_FIRST_ID['NOR']:03d}), "
                                         f"got {n_per_group}")
    if slice_mm is not None and not (np.isfinite(slice_mm) and slice_mm > 0):
        raise DataError("--slice-mm", f"must be a positive thickness in mm, got {slice_mm}")
    if not (np.isfinite(max_tilt_deg) and 0 <= max_tilt_deg <= 45):
        raise DataError("--max-tilt-deg", f"must be within 0..45 degrees, got {max_tilt_deg}")
    out = Path(out)
    extra = {"n_per_group": n_per_group, "slice_mm": slice_mm}
    if max_tilt_deg != DEFAULT_TILT_DEG:  # recorded when set, so cohorts written before the option stay valid
        extra["max_tilt_deg"] = max_tilt_deg
    out, notes = open_out(out, "cohort")
    if (done := _existing(out, "acdc", cfg, extra, "shapetune_ground_truth.parquet")) is not None:
        return done
    with publishing(out, "cohort", notes, "cohort") as pub:
        jobs = [(ACDC_FIRST_ID[g] + i, g, cfg, str(pub.staging), slice_mm, max_tilt_deg) for g in ("HCM", "NOR")
                for i in range(n_per_group)]
        recs = [None] * len(jobs)
        for i, rec in pmap(_acdc_one, jobs, workers, "synth acdc", quiet):
            recs[i] = rec
        gt = pd.DataFrame(recs)
        gt.to_parquet(pub.staging / "shapetune_ground_truth.parquet", index=False)
        contents = ["cohort.json", "shapetune_ground_truth.parquet", *(f"patient{j[0]:03d}" for j in jobs)]
        _write_cohort_json(pub.staging, "acdc", cfg, len(gt), extra, contents)
    return gt
