"""Preparation: the on-disk dataset, idempotence, and a clear error for every kind of bad input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.nifti import sha256_file
from shapetune.data.prepare import prepare
from tests.conftest import QUICK_GRID


def test_prepared_dataset_layout(acdc_prepared, acdc_raw):
    ds = PreparedDataset(acdc_prepared)
    assert ds.masks.dtype == np.uint8 and ds.masks.shape == (10, 2, 64, 64, 64)
    assert isinstance(np.load(acdc_prepared / "masks.npy", mmap_mode="r"), np.memmap)
    assert set(np.unique(ds.masks[0])) == {0, 1, 2}
    m = ds.manifest
    for col in ("subject", "cohort", "split", "label", "group", "bsa", "src_ed", "sha256_ed", "edv_ml", "esv_ml",
                "sv_ml", "ef_pct", "lv_mass_g", "mwt_mm", "edvi_ml_m2", "lvmi_g_m2", "mwti_mm_m2", "wt_aha17_mm",
                "gt_mwt_mm", "phenotype"):
        assert col in m, col
    row = m.iloc[0]
    assert row.sha256_ed == sha256_file(row.src_ed)
    assert (m.label == (m.group == "HCM")).all()
    meta = json.loads((acdc_prepared / "dataset.json").read_text())
    assert meta["orientation"]["axis0"].startswith("apex->base") and meta["grid"]["spacing"] == 2.0
    assert meta["versions"]["shapetune"] and meta["seed"] == 5 and meta["skipped"] == []


def test_prepared_indices_track_ground_truth(acdc_prepared):
    m = PreparedDataset(acdc_prepared).manifest
    # Thick slices with incomplete coverage lose some apex/base, but the indices must follow the truth.
    assert np.corrcoef(m.edv_ml, m.gt_edv_ml)[0, 1] > 0.9
    assert np.corrcoef(m.mwt_mm, m.gt_mwt_mm)[0, 1] > 0.8
    assert (m[m.label == 1].mwt_mm.min() > m[m.label == 0].mwt_mm.max())


def test_prepare_is_idempotent(imperial_raw, tmp_path):
    out = tmp_path / "prep"
    rep = prepare(imperial_raw, "imperial", out, QUICK_GRID, workers=1, quiet=True)
    assert not rep.up_to_date and rep.n_subjects == 16
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare(imperial_raw, "imperial", out, QUICK_GRID, workers=1, quiet=True)
    assert again.up_to_date and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    counts = PreparedDataset(out).manifest.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", 0): 2, ("test", 1): 2, ("train", 0): 4, ("train", 1): 4, ("val", 0): 2, ("val", 1): 2}


def test_changed_input_triggers_new_preparation(acdc_copy, tmp_path):
    out = tmp_path / "prep"
    prepare(acdc_copy, "acdc", out, QUICK_GRID, workers=1, quiet=True)
    f = acdc_copy / "patient061" / "patient061_frame01_gt.nii.gz"
    img = nib.load(f)
    data = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.roll(data, 1, axis=0), img.affine), f)  # same patient, shifted one voxel
    rep = prepare(acdc_copy, "acdc", out, QUICK_GRID, workers=1, quiet=True)
    assert not rep.up_to_date


# ---------------------------------------------------------------- bad input
def _edit(path, fn):
    img = nib.load(path)
    data = fn(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine), path)


def _ed(root, pid="patient062"):
    return root / pid / f"{pid}_frame01_gt.nii.gz"


def _es(root, pid="patient062"):
    from shapetune.data.sources import parse_info_cfg

    es = parse_info_cfg(root / pid / "Info.cfg")["ES"]
    return root / pid / f"{pid}_frame{es:02d}_gt.nii.gz"


BAD_INPUTS = {
    "truncated": (lambda r: _ed(r).write_bytes(_ed(r).read_bytes()[:300]), "cannot read NIfTI"),
    "garbage": (lambda r: _ed(r).write_bytes(b"not a nifti at all" * 20), "cannot read NIfTI"),
    "4d": (lambda r: _edit(_ed(r), lambda d: np.stack([d, d], axis=-1)), "expected a 3D label map, got a 4D"),
    "unexpected_label": (lambda r: _edit(_ed(r), lambda d: np.where(d == 1, 7, d).astype(np.uint8)),
                         r"unexpected label value\(s\) \[7\]"),
    "missing_cavity": (lambda r: _edit(_ed(r), lambda d: np.where(d == 3, 2, d).astype(np.uint8)),
                       "LV cavity label 3 missing"),
    "empty_myocardium": (lambda r: _edit(_ed(r), lambda d: np.where(d == 2, 0, d).astype(np.uint8)),
                         "empty myocardium"),
    "nan": (lambda r: _edit(_ed(r), lambda d: np.where(d == 2, np.nan, d).astype(np.float32)), "NaN"),
    "non_integer": (lambda r: _edit(_ed(r), lambda d: (d * 0.5).astype(np.float32)), "non-integer"),
    "grid_mismatch": (lambda r: _edit(_es(r), lambda d: d[:, :-3].copy()),
                      r"ES grid differs from the ED grid of .*: shape \(\d+, \d+, \d+\) vs \(\d+, \d+, \d+\) at ED"),
    "no_rv": (lambda r: _edit(_ed(r), lambda d: np.where(d == 1, 0, d).astype(np.uint8)), "RV cavity label 1 absent"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stops_with_file_and_problem(acdc_copy, tmp_path, case):
    breaker, message = BAD_INPUTS[case]
    breaker(acdc_copy)
    with pytest.raises(DataError, match=message) as err:
        prepare(acdc_copy, "acdc", tmp_path / "prep", QUICK_GRID, workers=2, quiet=True)
    assert "patient062" in str(err.value)
    assert not (tmp_path / "prep" / "dataset.json").exists()  # never a half-written dataset


def test_skip_bad_lists_every_skipped_subject(acdc_copy, tmp_path):
    BAD_INPUTS["truncated"][0](acdc_copy)
    _edit(_ed(acdc_copy, "patient023"), lambda d: np.where(d == 2, 0, d).astype(np.uint8))
    rep = prepare(acdc_copy, "acdc", tmp_path / "prep", QUICK_GRID, skip_bad=True, workers=2, quiet=True)
    assert rep.n_subjects == 8
    reasons = {s["subject"]: s["problem"] for s in rep.skipped}
    assert set(reasons) == {"patient062", "patient023"}
    assert "cannot read NIfTI" in reasons["patient062"] and "empty myocardium" in reasons["patient023"]
    ds = PreparedDataset(tmp_path / "prep")
    assert len(ds) == 8 and ds.masks.shape[0] == 8 and ds.meta["skipped"] == rep.skipped
    assert not set(ds.manifest.subject) & set(reasons)
    assert (ds.manifest["index"] == np.arange(8)).all()


def test_missing_info_key_stops_prepare(acdc_copy, tmp_path):
    cfg = acdc_copy / "patient021" / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("Weight", "Wieght"))
    with pytest.raises(DataError, match=r"patient021/Info.cfg: missing key\(s\) Weight"):
        prepare(acdc_copy, "acdc", tmp_path / "prep", QUICK_GRID, quiet=True)


def test_unknown_format_is_refused(acdc_raw, tmp_path):
    with pytest.raises(ValueError, match="unknown format 'dicom'"):
        prepare(acdc_raw, "dicom", tmp_path, QUICK_GRID)
