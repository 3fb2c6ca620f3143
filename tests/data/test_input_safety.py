"""Inputs that were accepted, dropped or misread without a word: each is now refused or recorded, visibly."""

from __future__ import annotations

import gzip
import json
import shutil
import struct

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.nifti import load_label_map
from shapetune.data.prepare import prepare
from shapetune.data.sources import parse_info_cfg, scan_acdc
from tests.conftest import QUICK_GRID

runner = CliRunner()
ACDC_LABELS = {1, 2, 3}


def _ed(root, pid):
    return root / pid / f"{pid}_frame01_gt.nii.gz"


def _es(root, pid):
    es = parse_info_cfg(root / pid / "Info.cfg")["ES"]
    return root / pid / f"{pid}_frame{es:02d}_gt.nii.gz"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- label values are checked before any cast
WRAPPING = {  # stored value -> what an int16 cast would have made of it
    "int32_65538_is_not_myocardium": (np.int32, 65538),  # -> 2
    "int32_negative_wraps_to_2": (np.int32, -65534),  # -> 2
    "uint32_65539_is_not_cavity": (np.uint32, 65539),  # -> 3
    "int64_2pow32_plus_1_is_not_rv": (np.int64, 2**32 + 1),  # -> 1
    "float64_65538": (np.float64, 65538.0),
}


@pytest.mark.parametrize("case", sorted(WRAPPING))
def test_label_values_are_validated_before_the_cast(acdc_raw, tmp_path, case):
    dtype, value = WRAPPING[case]
    img = nib.load(_ed(acdc_raw, "patient021"))
    data = np.asarray(img.dataobj).astype(dtype)
    data[data == 2] = value  # every myocardium voxel now holds a label that is not in the set
    f = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, dtype=dtype), f)
    assert np.asarray(nib.load(f).dataobj).dtype == dtype  # stored as written: nibabel keeps the type
    with pytest.raises(DataError, match=rf"unexpected label value\(s\) \[{int(value)}\]"):
        load_label_map(f, ACDC_LABELS)


def test_wide_integer_types_with_known_labels_are_accepted(acdc_raw, tmp_path):
    img = nib.load(_ed(acdc_raw, "patient021"))
    for dtype in (np.int32, np.uint32, np.int64, np.float32):
        f = tmp_path / f"seg_{np.dtype(dtype).name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(dtype), img.affine, dtype=dtype), f)
        data, _ = load_label_map(f, ACDC_LABELS)
        assert set(np.unique(data)) == {0, 1, 2, 3}


# ---------------------------------------------------------------- voxel sizes as stored
PIXDIM_OFFSET = 76  # NIfTI-1 header: float32 pixdim[8] at byte 76; pixdim[1..3] are the voxel sizes


def _write_with_pixdim(src, dst, sizes):
    """Copy a NIfTI, then overwrite pixdim[1..3] in the file's bytes (nibabel would 'fix' them on save)."""
    img = nib.load(src)
    raw = dst.with_suffix("").with_suffix(".nii")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), raw)  # sform carries the geometry
    b = bytearray(raw.read_bytes())
    b[PIXDIM_OFFSET + 4:PIXDIM_OFFSET + 16] = struct.pack("<3f", *sizes)
    dst.write_bytes(gzip.compress(bytes(b)))
    raw.unlink()


BAD_PIXDIM = {"zero": (0.0, 1.5, 8.0), "negative": (1.5, -1.5, 8.0), "nan": (1.5, 1.5, float("nan")),
              "inf": (float("inf"), 1.5, 8.0)}


@pytest.mark.parametrize("case", sorted(BAD_PIXDIM))
def test_invalid_pixdim_is_refused(acdc_raw, tmp_path, case):
    f = tmp_path / "seg.nii.gz"
    _write_with_pixdim(_ed(acdc_raw, "patient021"), f, BAD_PIXDIM[case])
    nib.load(f)  # nibabel itself reads it (and would use 1 mm or abs() in place of the stored value)
    with pytest.raises(DataError, match=r"invalid voxel size\(s\) pixdim\[1:4\]"):
        load_label_map(f, ACDC_LABELS)


# ---------------------------------------------------------------- ED/ES on different grids: say what differs
def test_spacing_mismatch_names_the_spacings(acdc_copy, tmp_path):
    f = _es(acdc_copy, "patient062")
    img = nib.load(f)
    aff = img.affine.copy()
    aff[:2, :2] *= 1.1  # same shape, 10 % larger in-plane voxels
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), f)
    with pytest.raises(DataError) as err:
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)
    msg = str(err.value)
    assert msg.startswith(str(f)) and "spacing (" in msg and "vs (" in msg and "at ED" in msg
    assert "shape" not in msg  # the shapes are equal: not reported as the difference


def test_origin_mismatch_names_the_origins(acdc_copy, tmp_path):
    f = _es(acdc_copy, "patient062")
    img = nib.load(f)
    aff = img.affine.copy()
    aff[:3, 3] += [5.0, 0.0, 0.0]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), f)
    with pytest.raises(DataError,
                       match=r"ES grid differs from the ED grid of .*: origin \(5, 0, 0\) mm vs \(0, 0, 0\)"):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)


# ---------------------------------------------------------------- stale "up to date"
def _set_info(root, pid, key, value):
    cfg = root / pid / "Info.cfg"
    lines = [f"{key}: {value}" if line.split(":")[0].strip() == key else line for line in cfg.read_text().splitlines()]
    cfg.write_text("\n".join(lines) + "\n")


def _edit_gt(root, pid, col, value):
    f = root / "shapetune_ground_truth.parquet"
    gt = pd.read_parquet(f)
    gt.loc[gt.subject == pid, col] = value
    gt.to_parquet(f, index=False)


# edit of one metadata input -> (subject, manifest column, expected new value)
METADATA_EDITS = {
    "info_cfg_diagnosis": (lambda r: _set_info(r, "patient061", "Group", "HCM"), "patient061", "label", 1),
    "info_cfg_height": (lambda r: _set_info(r, "patient062", "Height", "199.0"), "patient062", "height_cm", 199.0),
    "ground_truth": (lambda r: _edit_gt(r, "patient063", "gt_mwt_mm", 99.0), "patient063", "gt_mwt_mm", 99.0),
}


@pytest.mark.parametrize("case", sorted(METADATA_EDITS))
def test_edited_metadata_is_prepared_again(acdc_copy, tmp_path, case):
    edit, pid, col, value = METADATA_EDITS[case]
    out = tmp_path / "prep"
    prepare(acdc_copy, "acdc", out, QUICK_GRID, workers=1, quiet=True)
    before = PreparedDataset(out).manifest.set_index("subject").loc[pid, col]
    assert before != value
    edit(acdc_copy)
    rep = prepare(acdc_copy, "acdc", out, QUICK_GRID, workers=1, quiet=True)
    assert not rep.up_to_date
    assert PreparedDataset(out).manifest.set_index("subject").loc[pid, col] == value


def test_edited_subjects_csv_is_prepared_again(imperial_raw, tmp_path):
    src, out = tmp_path / "raw", tmp_path / "prep"
    shutil.copytree(imperial_raw, src)
    prepare(src, "imperial", out, QUICK_GRID, workers=1, quiet=True)
    table = pd.read_csv(src / "subjects.csv")
    sid = table.subject[0]
    old = PreparedDataset(out).manifest.set_index("subject").loc[sid]
    new_split = next(s for s in ("train", "val", "test") if s != old.split)
    table.loc[0, "split"], table.loc[0, "group"] = new_split, "NOR" if old.group == "HCM" else "HCM"
    table.to_csv(src / "subjects.csv", index=False)
    rep = prepare(src, "imperial", out, QUICK_GRID, workers=1, quiet=True)
    assert not rep.up_to_date
    row = PreparedDataset(out).manifest.set_index("subject").loc[sid]
    assert row.split == new_split and row.group != old.group and row.label != old.label


# ---------------------------------------------------------------- nothing is dropped silently
def test_patient_folder_without_info_cfg_stops_or_is_listed(acdc_copy, tmp_path):
    (acdc_copy / "patient023" / "Info.cfg").unlink()
    with pytest.raises(DataError, match=r"patient023/Info.cfg: Info.cfg not found"):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)
    rep = prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, skip_bad=True, workers=1, quiet=True)
    assert rep.n_subjects == 9 and [s["subject"] for s in rep.skipped] == ["patient023"]
    assert json.loads((tmp_path / "p" / "dataset.json").read_text())["skipped"] == rep.skipped


# with --skip-bad, each problem found while reading the folder is listed, never a stop
SKIPPABLE = {
    "info_cfg_duplicate_key": (lambda r: (r / "patient024" / "Info.cfg").write_text(
        (r / "patient024" / "Info.cfg").read_text() + "Group: NOR\n"), "patient024", "duplicate key 'Group'"),
    "missing_frame": (lambda r: _es(r, "patient025").unlink(), "patient025", "not found"),
    "info_cfg_ed_equals_es": (lambda r: _set_info(r, "patient064", "ES", "1"), "patient064", "is the ED frame"),
}


@pytest.mark.parametrize("case", sorted(SKIPPABLE))
def test_skip_bad_skips_metadata_and_missing_frame_problems(acdc_copy, tmp_path, case):
    breaker, pid, problem = SKIPPABLE[case]
    breaker(acdc_copy)
    with pytest.raises(DataError, match=problem):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)
    rep = prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, skip_bad=True, workers=1, quiet=True)
    assert rep.n_subjects == 9 and len(rep.skipped) == 1
    assert rep.skipped[0]["subject"] == pid and problem in rep.skipped[0]["problem"]


def test_symlinked_patient_folders(acdc_copy, tmp_path):
    """Followed when they resolve inside the source folder; refused with the reason when they point outside."""
    store = acdc_copy / "store"
    store.mkdir()
    shutil.move(acdc_copy / "patient021", store / "p21")
    (acdc_copy / "patient021").symlink_to(store / "p21", target_is_directory=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(acdc_copy / "patient022", outside / "p22")
    (acdc_copy / "patient022").symlink_to(outside / "p22", target_is_directory=True)
    with pytest.raises(DataError, match=r"patient022: symbolic link to .*elsewhere/p22, outside the source folder"):
        scan_acdc(acdc_copy)
    scan = scan_acdc(acdc_copy, skip_bad=True)
    assert "patient021" in {s.subject for s in scan.subjects}
    assert [(s["subject"], "outside the source folder" in s["problem"]) for s in scan.skipped] == [("patient022", True)]
    (acdc_copy / "patient099").symlink_to(tmp_path / "nothing-here", target_is_directory=True)
    scan = scan_acdc(acdc_copy, skip_bad=True)
    assert any(s["subject"] == "patient099" and "broken symbolic link" in s["problem"] for s in scan.skipped)


def test_two_names_for_one_patient_are_refused(acdc_copy):
    (acdc_copy / "training").mkdir()
    shutil.copytree(acdc_copy / "patient021", acdc_copy / "training" / "patient021")
    with pytest.raises(DataError, match=r"duplicate subject folder 'patient021'"):
        scan_acdc(acdc_copy, skip_bad=True)


def test_file_outside_the_source_is_never_read(acdc_copy, tmp_path):
    f = _ed(acdc_copy, "patient061")
    outside = tmp_path / "outside.nii.gz"
    shutil.move(f, outside)
    f.symlink_to(outside)
    with pytest.raises(DataError,
                       match=r"patient061_frame01_gt.nii.gz: resolves to .*outside.nii.gz, outside the source"):
        scan_acdc(acdc_copy)


def test_groups_absent_from_the_cohort_fail_and_say_which_exist(acdc_raw, tmp_path):
    with pytest.raises(DataError, match=r"no subject of group\(s\) MINF; groups present: HCM \(5\), NOR \(5\)"):
        prepare(acdc_raw, "acdc", tmp_path / "p", QUICK_GRID, groups=("MINF",), workers=1, quiet=True)
    assert not (tmp_path / "p").exists()
    res = runner.invoke(app, ["data", "prepare", str(acdc_raw), "--format", "acdc", "--out", str(tmp_path / "p"),
                              "--groups", "MINF", "--grid", "32", "--spacing", "4"])
    assert res.exit_code == 2 and "groups present: HCM (5), NOR (5)" in _one_line(res.output)


def test_groups_left_out_are_counted(acdc_raw, tmp_path):
    rep = prepare(acdc_raw, "acdc", tmp_path / "p", QUICK_GRID, groups=("HCM",), workers=1, quiet=True)
    assert rep.n_subjects == 5 and rep.excluded == {"NOR": 5}
    assert json.loads((tmp_path / "p" / "dataset.json").read_text())["excluded_groups"] == {"NOR": 5}


def test_every_subject_failing_is_an_error_not_an_empty_dataset(acdc_copy, tmp_path):
    for pid in ("patient021", "patient022", "patient023", "patient024", "patient025"):
        _ed(acdc_copy, pid).write_bytes(b"garbage" * 40)
    with pytest.raises(DataError, match=r"no subject could be prepared: all 5 selected subject\(s\) failed"):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, groups=("HCM",), skip_bad=True, workers=1, quiet=True)
    assert not (tmp_path / "p").exists()


def test_imperial_folder_not_in_the_table_is_listed(imperial_raw, tmp_path):
    src = tmp_path / "raw"
    shutil.copytree(imperial_raw, src)
    shutil.copytree(src / "subjects" / "IMP0001", src / "subjects" / "EXTRA01")
    rep = prepare(src, "imperial", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)
    assert rep.n_subjects == 16
    assert [(s["subject"], "not listed in" in s["problem"]) for s in rep.skipped] == [("EXTRA01", True)]


def test_ground_truth_table_problems_are_clear(acdc_copy, tmp_path):
    gt = acdc_copy / "shapetune_ground_truth.parquet"
    table = pd.read_parquet(gt)
    table[table.subject != "patient061"].to_parquet(gt, index=False)
    with pytest.raises(DataError,
                       match=r"shapetune_ground_truth.parquet: no ground-truth row for subject\(s\) patient061"):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)
    table.drop(columns="subject").to_parquet(gt, index=False)
    with pytest.raises(DataError, match="ground-truth table has no 'subject' column"):
        prepare(acdc_copy, "acdc", tmp_path / "p", QUICK_GRID, workers=1, quiet=True)


def test_synth_refuses_impossible_counts(tmp_path):
    for args, message in ((["--n-per-group", "-3"], "--n-per-group: must be within 1..40"),
                          (["--n-per-group", "41"], "--n-per-group: must be within 1..40"),
                          (["--seed", "-1"], "--seed: must be >= 0")):
        res = runner.invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and f"error: {message}" in _one_line(res.output), res.output
        assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- truncated shapes are named
def test_masks_touching_the_border_are_named(acdc_copy, tmp_path):
    for f in (_ed(acdc_copy, "patient061"), _es(acdc_copy, "patient061")):
        img = nib.load(f)
        aff = img.affine.copy()
        aff[:3, :3] *= 1.6  # a heart 60 % larger than the template's field of view holds
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), f)
    res = runner.invoke(app, ["data", "prepare", str(acdc_copy), "--format", "acdc", "--out", str(tmp_path / "p"),
                              "--grid", "32", "--spacing", "4", "--workers", "1"])
    assert res.exit_code == 0, res.output
    out = _one_line(res.output)
    assert "warning:" in out and "touch the template border" in out and "patient061" in out
    meta = json.loads((tmp_path / "p" / "dataset.json").read_text())
    assert "patient061" in meta["fov_clipped"]


def test_imperial_subject_folder_linked_from_outside_is_refused(imperial_raw, tmp_path):
    from shapetune.data.sources import scan_imperial

    src = tmp_path / "raw"
    shutil.copytree(imperial_raw, src)
    shutil.move(src / "subjects" / "IMP0003", tmp_path / "IMP0003")
    (src / "subjects" / "IMP0003").symlink_to(tmp_path / "IMP0003", target_is_directory=True)
    with pytest.raises(DataError, match=r"subjects/IMP0003: symbolic link to .*, outside the source folder"):
        scan_imperial(src)
    scan = scan_imperial(src, skip_bad=True)
    assert [s["subject"] for s in scan.skipped] == ["IMP0003"] and len(scan.subjects) == 15


FOLDS = {  # folds.csv text -> the refusal
    "empty": ("", "empty file"),
    "header_only": ("subject,fold0\n", "no subjects listed"),
    "dotdot_id": ("subject,fold0\nFS001,train\n../FS002,test\n", "line 3: subject id '../FS002' is not a plain"),
    "duplicate_id": ("subject,fold0\nFS001,train\nFS001,test\n", "duplicate subject(s) ['FS001']"),
    "bad_fold_value": ("subject,fold0\nFS001,trian\n", "fold values must be train/val/test"),
}


@pytest.mark.parametrize("case", sorted(FOLDS))
def test_fetal_folds_table_is_read_strictly(tmp_path, case):
    from shapetune.data.fetal.prepare import prepare_fetal

    text, message = FOLDS[case]
    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(DataError) as err:
        prepare_fetal(tmp_path, tmp_path / "out", 16, workers=1, quiet=True)
    assert str(err.value).startswith(f"{tmp_path / 'folds.csv'}: ") and message in str(err.value)
    assert not (tmp_path / "out").exists()
