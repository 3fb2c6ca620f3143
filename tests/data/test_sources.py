"""ACDC and Imperial-style readers: the real ACDC layout's quirks and clear errors."""

from __future__ import annotations

import shutil

import nibabel as nib
import pytest

from shapetune.data.errors import DataError
from shapetune.data.sources import parse_info_cfg, read_acdc, read_imperial


def test_acdc_layout_written_exactly(acdc_raw):
    p = acdc_raw / "patient021"
    info = parse_info_cfg(p / "Info.cfg")
    assert info["Group"] == "HCM" and info["ED"] == 1
    assert (p / "patient021_frame01.nii.gz").exists() and (p / "patient021_frame01_gt.nii.gz").exists()
    assert (p / f"patient021_frame{info['ES']:02d}_gt.nii.gz").exists()
    assert (acdc_raw / "patient061").exists() and not (acdc_raw / "patient041").exists()
    img = nib.load(p / "patient021_frame01_gt.nii.gz")
    zooms = img.header.get_zooms()
    assert 1.37 <= zooms[0] <= 1.68 and zooms[0] == zooms[1] and 5.0 <= zooms[2] <= 10.0
    assert set(img.get_fdata().astype(int).ravel().tolist()) <= {0, 1, 2, 3}


def test_acdc_reader_selects_groups(acdc_raw):
    subs = read_acdc(acdc_raw)
    assert sorted({s.group for s in subs}) == ["HCM", "NOR"] and len(subs) == 10
    assert all(s.cohort == "acdc" and s.split == "test" for s in subs)
    assert [s.subject for s in read_acdc(acdc_raw, groups=("hcm",))][:1] == ["patient021"]
    with pytest.raises(DataError, match="unknown ACDC group"):
        read_acdc(acdc_raw, groups=("XYZ",))


def test_acdc_reader_handles_real_layout_quirks(acdc_copy):
    # Real downloads: training/ subfolder, uncompressed .nii, extra spaces in Info.cfg, a _4d file.
    train = acdc_copy / "training"
    train.mkdir()
    shutil.move(acdc_copy / "patient022", train / "patient022")
    p = train / "patient022"
    gz = p / "patient022_frame01_gt.nii.gz"
    nib.save(nib.load(gz), p / "patient022_frame01_gt.nii")
    gz.unlink()
    (p / "patient022_4d.nii.gz").write_bytes((p / "patient022_frame01.nii.gz").read_bytes())
    text = (p / "Info.cfg").read_text().replace(": ", " :   ")
    (p / "Info.cfg").write_text("\n" + text + "\n\n")
    subs = {s.subject: s for s in read_acdc(acdc_copy)}
    assert subs["patient022"].ed_path.name == "patient022_frame01_gt.nii"
    assert subs["patient022"].demographics["bsa"] > 1.0


def test_info_cfg_missing_key_names_file_and_key(acdc_copy):
    cfg = acdc_copy / "patient023" / "Info.cfg"
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("ES")))
    with pytest.raises(DataError, match=r"patient023/Info.cfg: missing key\(s\) ES"):
        read_acdc(acdc_copy)


def test_info_cfg_bad_group_and_bad_line(tmp_path):
    f = tmp_path / "Info.cfg"
    f.write_text("ED: 1\nES: 9\nGroup: XXX\nHeight: 170\nNbFrame: 30\nWeight: 70\n")
    with pytest.raises(DataError, match="unknown Group 'XXX'"):
        parse_info_cfg(f)
    f.write_text("ED 1\n")
    with pytest.raises(DataError, match="line 1: expected 'Key: value'"):
        parse_info_cfg(f)


def test_missing_segmentation_frame_is_named(acdc_copy):
    (acdc_copy / "patient024" / "patient024_frame01_gt.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient024_frame01_gt.nii.gz: segmentation for frame 1 not found"):
        read_acdc(acdc_copy)


def test_imperial_reader(imperial_raw):
    subs = read_imperial(imperial_raw)
    assert len(subs) == 16 and {s.split for s in subs} == {"train", "val", "test"}
    assert sum(s.label for s in subs) == 8


def test_imperial_reader_errors(imperial_raw, tmp_path):
    with pytest.raises(DataError, match="subjects.csv not found"):
        read_imperial(tmp_path)
    (tmp_path / "subjects.csv").write_text("subject,split\nA,train\n")
    with pytest.raises(DataError, match=r"subjects.csv: missing column\(s\) group"):
        read_imperial(tmp_path)
    (tmp_path / "subjects.csv").write_text("subject,group\nA,HCM\n")
    with pytest.raises(DataError, match="seg_ED.nii.gz: segmentation not found"):
        read_imperial(tmp_path)
