"""Cohort synthesis: the reference split's exact class counts, determinism, the raw layouts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from shapetune.data.cardiac_synth import subject_record
from shapetune.data.cohorts import IMPERIAL_SPLIT, SynthConfig, imperial_plan, imperial_subject, synth_imperial

EXPECTED = {("train", 0): 276, ("train", 1): 261, ("val", 0): 75, ("val", 1): 75, ("test", 0): 100, ("test", 1): 100}


def test_imperial_plan_has_exact_reference_counts():
    plan = imperial_plan(seed=0)
    assert len(plan) == 887 and plan.subject.is_unique
    assert plan.groupby(["split", "label"]).size().to_dict() == EXPECTED
    assert not plan.equals(imperial_plan(seed=1)) and plan.equals(imperial_plan(seed=0))


def test_imperial_raw_layout_and_determinism(imperial_raw, tmp_path):
    meta = json.loads((imperial_raw / "cohort.json").read_text())
    assert meta["grid"] == 32 and meta["seed"] == 3 and meta["n_subjects"] == 16
    img = nib.load(imperial_raw / "subjects" / "IMP0001" / "seg_ED.nii.gz")
    assert img.shape == (32, 32, 32) and np.allclose(img.header.get_zooms(), 4.0)
    gt = pd.read_parquet(imperial_raw / "ground_truth.parquet")
    assert {"gt_mwt_mm", "gt_ef", "phenotype", "bsa", "age", "sex"} <= set(gt.columns)
    subjects = pd.read_csv(imperial_raw / "subjects.csv")
    assert list(subjects.columns) == ["subject", "split", "group", "age", "sex", "height_cm", "weight_kg"]
    # Same seed, one worker instead of two: identical files.
    again = tmp_path / "again"
    synth_imperial(again, SynthConfig(seed=3, grid=32, spacing=4.0), split=(("train", 4, 4), ("val", 2, 2),
                   ("test", 2, 2)), workers=1, quiet=True)
    a = np.asanyarray(nib.load(imperial_raw / "subjects" / "IMP0005" / "seg_ES.nii.gz").dataobj)
    b = np.asanyarray(nib.load(again / "subjects" / "IMP0005" / "seg_ES.nii.gz").dataobj)
    assert np.array_equal(a, b)


def test_existing_identical_cohort_is_reused(imperial_raw):
    stamp = (imperial_raw / "subjects" / "IMP0001" / "seg_ED.nii.gz").stat().st_mtime_ns
    synth_imperial(imperial_raw, SynthConfig(seed=3, grid=32, spacing=4.0), split=(("train", 4, 4), ("val", 2, 2),
                   ("test", 2, 2)), quiet=True)
    assert (imperial_raw / "subjects" / "IMP0001" / "seg_ED.nii.gz").stat().st_mtime_ns == stamp


def _hcm_record(subject: str) -> dict:
    return subject_record(imperial_subject(subject, 1, SynthConfig(seed=0)))


def test_full_imperial_cohort_hcm_subjects():
    """The HCM subjects of the 887-subject cohort as synth draws them (without rendering them: the old end-to-end
    version rendered and prepared all 887 subjects, 4-8 minutes of the suite; both are tested on 16-subject
    cohorts, the counts on the plan above): HCM phenotypes only, about 15 % borderline. Every other one of the 436
    is drawn (drawing one fits its geometry, 0.25 s: all of them took 80 s of the suite)."""
    from shapetune.data.parallel import pmap

    plan = imperial_plan(0)
    hcm = plan[plan.label == 1].subject.tolist()
    assert len(hcm) == sum(c for _, _, c in IMPERIAL_SPLIT) == 436
    rows = [r for _, r in sorted(pmap(_hcm_record, hcm[::2], workers=2, quiet=True), key=lambda t: t[0])]
    m = pd.DataFrame(rows)
    assert len(m) == 218 and m.subject.is_unique and set(m.subject) <= set(hcm)
    assert m.phenotype.isin(["septal", "concentric", "apical", "midventricular"]).all()
    assert 0.08 < m.borderline.mean() < 0.22  # the borderline-fraction knob (0.15)


def test_synth_records_the_subjects_it_draws(imperial_raw):
    gt = pd.read_parquet(imperial_raw / "ground_truth.parquet")
    cfg = SynthConfig(seed=3)  # the imperial_raw fixture's
    for r in gt.head(4).itertuples():
        drawn = subject_record(imperial_subject(r.subject, int(r.label), cfg))
        assert (drawn["phenotype"], drawn["borderline"], drawn["seed"]) == (r.phenotype, r.borderline, r.seed)


@pytest.mark.parametrize("max_tilt", [0.0, 8.0, 15.0])
def test_acdc_pose_tilts_the_long_axis_at_most_as_asked(max_tilt):
    from shapetune.data.cohorts import _acdc_pose

    rng = np.random.default_rng(0)
    tilts = []
    for _ in range(200):
        rot = _acdc_pose(rng, max_tilt)
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9)
        # The template's long axis (e0) goes to -z (basal slice first), off by the tilt.
        tilts.append(np.degrees(np.arccos(np.clip(-(rot @ np.array([1.0, 0.0, 0.0]))[2], -1, 1))))
    assert max(tilts) <= max_tilt + 1e-4  # arccos near 1 loses digits
    assert max(tilts) >= 0.9 * max_tilt  # the range is used, not only its start


@pytest.mark.parametrize("args,problem", [(["--max-tilt-deg", "60"], "--max-tilt-deg"),
                                          (["--slice-mm", "0"], "--slice-mm")])
def test_acdc_synth_refuses_impossible_geometry(tmp_path, args, problem):
    from typer.testing import CliRunner

    from shapetune.cli import app

    res = CliRunner().invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(tmp_path / "a"), *args])
    assert res.exit_code == 2 and problem in res.output and not (tmp_path / "a").exists(), res.output
