"""Fetal-skull data: the generator's anatomy, planes cut where it says, folds, preparation and bad input."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.errors import DataError
from shapetune.data.fetal.cohort import FetalConfig, fold_table
from shapetune.data.fetal.planes import VIEWS, PlanePose, cut_plane, fit_pose, perturb, plane_error, standard_poses
from shapetune.data.fetal.prepare import prepare_fetal
from shapetune.data.fetal.skull import default_spacing, grid_coords, hadlock_bpd_mm, render_skull, sample_skull, \
    skull_mask


def test_size_follows_gestational_age_and_shape_spans_the_cephalic_index():
    skulls = [sample_skull(f"s{i}", 1000 + i) for i in range(200)]
    ga = np.array([s.ga_weeks for s in skulls])
    bpd = np.array([s.bpd_mm for s in skulls])
    assert 20 <= ga.min() and ga.max() <= 36
    assert np.corrcoef(ga, bpd)[0, 1] > 0.95
    assert abs(np.median(bpd / [hadlock_bpd_mm(g) for g in ga]) - 1) < 0.02
    classes = {s.shape_class for s in skulls}
    assert classes == {"dolichocephalic", "normal", "brachycephalic"}
    small, large = min(skulls, key=lambda s: s.ga_weeks), max(skulls, key=lambda s: s.ga_weeks)
    assert render_skull(large, 64).sum() > 2 * render_skull(small, 64).sum()


def test_shell_has_sutures_and_fontanelles_and_an_open_base():
    p = sample_skull("s", 7)
    a, b, c = p.semi_axes

    def solid_at(direction, rel=0.5):
        """Whether the shell is present along a direction, half-way through its thickness."""
        d = np.asarray(direction, float) / np.linalg.norm(direction)
        from shapetune.data.fetal.skull import outer_radius

        r = outer_radius(p, d[:, None])[0] - rel * p.thickness_mm
        return bool(skull_mask(p, (d * r)[:, None])[0])

    assert solid_at([0, 1, 0]) and solid_at([1, 0, 0]) and solid_at([-1, 0, 0])  # parietal, frontal, occipital bone
    xc = p.coronal_pos * a - 0.25 * c  # the anterior fontanelle sits where the coronal suture meets the midline
    assert not solid_at([xc / a, 0, 1.0])
    assert not solid_at([0, 0, -1])  # the cranial base is open
    vol = render_skull(p, 64)
    assert 0 < vol.mean() < 0.1
    inside = skull_mask(p, grid_coords(64, default_spacing(64)) * 0.5)  # half-way to the centre: no bone
    assert not inside[28:36, 28:36, 28:36].any()


def test_planes_are_cut_where_the_generator_says(fetal_raw):
    """Reading the files back: the pose in each plane's NIfTI header cuts the 3D skull file into that plane,
    the perturbation stays within the reference study's range, and the pose is recovered from the 3D mask."""
    gt = pd.read_parquet(fetal_raw / "ground_truth.parquet")
    errors = []
    for sid in gt.subject[:3]:
        skull = nib.load(fetal_raw / "subjects" / sid / "skull.nii.gz")
        vol = np.asarray(skull.dataobj)
        spacing = float(skull.affine[0, 0])
        row = gt.set_index("subject").loc[sid]
        rng = np.random.default_rng(0)
        for view in VIEWS:
            img = nib.load(fetal_raw / "subjects" / sid / f"plane_{view}.nii.gz")
            plane = np.asarray(img.dataobj)[:, :, 0]
            pose = PlanePose.from_affine(img.affine, plane.shape[0])
            assert np.array_equal(cut_plane(vol, spacing, pose), plane)
            assert np.allclose(pose.as_list(), row[f"pose_{view}"], atol=1e-4)
            angle, offset = plane_error(PlanePose.from_list(row[f"standard_{view}"]), pose)
            # Rotation up to 10 deg, then shifts of up to 7 px in-plane (which leave the old plane by at most
            # sin(10 deg) of their length) and 2 px along the normal.
            assert angle <= 10.0 + 1e-6 and offset <= (2.0 + np.hypot(7, 7) * np.sin(np.radians(10))) * spacing + 1e-6
            start = perturb(pose, rng, spacing, max_deg=3, max_px=1.5, normal_px=0.5)
            errors.append(plane_error(fit_pose(vol, spacing, plane, start, max_deg=6, max_mm=4), pose))
    angles, offsets = np.array(errors).T
    # The calvarial band is about one voxel thick at 32^3, so a plane can tilt a little and still lie in it.
    assert np.median(angles) < 5.0 and np.median(offsets) < 3.0


def test_ground_truth_rebuilds_each_skull(fetal_raw):
    """A cohort's ground_truth.parquet holds every skull's parameters: rendering them gives its skull file."""
    from shapetune.data.fetal.skull import SkullParams

    gt = pd.read_parquet(fetal_raw / "ground_truth.parquet")
    for _, row in gt.head(3).iterrows():
        skull = nib.load(fetal_raw / "subjects" / row.subject / "skull.nii.gz")
        p = SkullParams.from_record(row)
        assert p.record()["bump_dirs"] == pytest.approx(list(row.bump_dirs))
        rebuilt = render_skull(p, skull.shape[0], float(skull.affine[0, 0]))
        assert np.array_equal(rebuilt, np.asarray(skull.dataobj))


def test_unperturbed_planes_cut_the_standard_anatomy():
    p = sample_skull("s", 11)
    vol, s = render_skull(p, 64), default_spacing(64)
    poses = standard_poses(p)
    axial = cut_plane(vol, s, poses["axial"])
    rows, cols = np.nonzero(axial)
    bpd = (cols.max() - cols.min() + 1) * s  # outer-outer width across the image's v axis (left-right)
    assert abs(bpd - p.bpd_mm) < 3 * s
    assert cut_plane(vol, s, perturb(poses["sagittal"], np.random.default_rng(0), s)).any()


def test_folds_never_share_test_subjects_and_are_disjoint_inside():
    cfg = FetalConfig()
    subjects = [f"FS{i:03d}" for i in range(72)]
    t = fold_table(subjects, cfg)
    tests = [set(t.subject[t[f"fold{k}"] == "test"]) for k in range(3)]
    assert all(len(s) == 14 for s in tests)
    assert not (tests[0] & tests[1]) and not (tests[0] & tests[2]) and not (tests[1] & tests[2])
    for k in range(3):
        c = t[f"fold{k}"].value_counts()
        assert (c["train"], c["val"], c["test"]) == (50, 8, 14)  # 58 for training, 14 test
    assert t.equals(fold_table(subjects, cfg))
    with pytest.raises(ValueError, match="at least"):
        FetalConfig(n_subjects=30).check()


def test_prepared_dataset(fetal_prepared, fetal_raw, tmp_path):
    masks = np.load(fetal_prepared / "masks.npy")
    planes = np.load(fetal_prepared / "planes.npy")
    m = pd.read_parquet(fetal_prepared / "manifest.parquet")
    assert masks.shape == (15, 1, 32, 32, 32) and planes.shape == (15, 3, 32, 32)
    assert {"fold0", "fold1", "fold2", "ga_weeks", "pose_axial", "standard_axial"} <= set(m.columns)
    assert (planes.reshape(15, 3, -1).sum(-1) > 0).all()
    low = prepare_fetal(fetal_raw, tmp_path / "p16", 16, workers=1, quiet=True)  # resampled, same field of view
    assert low == 15 and np.load(tmp_path / "p16" / "planes.npy").shape == (15, 3, 16, 16)


@pytest.mark.parametrize("damage, problem", [
    ("corrupt", "cannot read NIfTI"), ("labels", "binary mask"), ("missing", "file not found"),
    ("shape", "plane is"), ("empty", "empty skull")])
def test_bad_input_names_the_file(fetal_raw, tmp_path, damage, problem):
    src = tmp_path / "raw"
    shutil.copytree(fetal_raw, src)
    d = src / "subjects" / "FS002"
    if damage == "corrupt":
        (d / "skull.nii.gz").write_bytes(b"not a nifti at all")
        bad = d / "skull.nii.gz"
    elif damage == "labels":
        img = nib.load(d / "plane_sagittal.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 3, img.affine), d / "plane_sagittal.nii.gz")
        bad = d / "plane_sagittal.nii.gz"
    elif damage == "missing":
        (d / "plane_coronal.nii.gz").unlink()
        bad = d / "plane_coronal.nii.gz"
    elif damage == "shape":
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 1), np.uint8), np.eye(4)), d / "plane_axial.nii.gz")
        bad = d / "plane_axial.nii.gz"
    else:
        img = nib.load(d / "skull.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), d / "skull.nii.gz")
        bad = d / "skull.nii.gz"
    with pytest.raises(DataError) as exc:
        prepare_fetal(src, tmp_path / "out", 32, workers=1, quiet=True)
    assert str(bad) in str(exc.value) and problem in str(exc.value)
    assert not (tmp_path / "out" / "dataset.json").exists()  # nothing that looks complete is left behind


def test_cli_synth_prepare_show(tmp_path):
    runner = CliRunner()
    raw, prep = tmp_path / "raw", tmp_path / "prep"
    r = runner.invoke(app, ["data", "synth", "--cohort", "fetal", "--out", str(raw), "--grid", "32",
                            "--subjects", "45", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert len(list((raw / "subjects").glob("FS*/us_axial.nii.gz"))) == 45
    r = runner.invoke(app, ["data", "prepare", str(raw), "--format", "fetal", "--out", str(prep), "--grid", "32",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "show", str(prep)])
    assert r.exit_code == 0, r.output
    assert "fold0" in r.output and (prep / "figures" / "mosaic.png").stat().st_size > 10_000
    r = runner.invoke(app, ["data", "synth", "--cohort", "fetal", "--out", str(tmp_path / "x"), "--subjects", "20"])
    assert r.exit_code == 2 and "at least 42 subjects" in r.output
