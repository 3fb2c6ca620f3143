"""Bring your own cohort: the manifest table's checks, the stratified split, the generic alignment and
``prepare_table`` on the synthetic hippocampus-like tubes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from shapetune.data.align import frame, principal_frame, resample, world_points
from shapetune import storage
from shapetune.data.dataset import PreparedDataset, cohort_overrides, dataset_phases
from shapetune.data.errors import DataError
from shapetune.data.table_prepare import prepare_table
from shapetune.data.table_source import scan_table, stratified_split
from shapetune.data.template import TemplateGrid
from shapetune.data.tubes_synth import STRUCTURE_LABEL, TubesConfig, synth_tubes

GRID = TemplateGrid.cube(24, 3.0)


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    out = tmp_path_factory.mktemp("tubes") / "raw"
    gt = synth_tubes(out, TubesConfig(seed=3, n_per_group=6), workers=2, quiet=True)
    return out, gt


def _nifti(path, data, spacing=(1.0, 1.0, 1.0)):
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([*spacing, 1.0])), str(path))
    return path


@pytest.fixture()
def small_table(tmp_path):
    """Four subjects of one-voxel-label blobs, and a writer for a table over them."""
    for i in range(4):
        vol = np.zeros((12, 12, 12), np.int16)
        vol[3:8, 4:7, 3:5 + i] = 5  # each subject its own content
        _nifti(tmp_path / f"s{i}.nii.gz", vol)

    def write(rows: list[dict], name="t.csv"):
        path = tmp_path / name
        df = pd.DataFrame(rows)
        if name.endswith(".csv"):
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        return path

    return tmp_path, write


def _rows(**extra):
    return [{"subject": f"s{i}", "mask": f"s{i}.nii.gz", "group": "AD" if i % 2 else "CN", **extra} for i in range(4)]


def _split_rows():
    return [{**r, "split": ["train", "train", "val", "test"][i]} for i, r in enumerate(_rows())]


@pytest.mark.parametrize(("rows", "kwargs", "problem"), [
    ([{"id": "a", "mask": "s0.nii.gz", "label": 0}], {}, "no 'subject' column"),
    ([{"subject": "a", "image": "s0.nii.gz", "label": 0}], {}, "no phase columns"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 2}], {}, "line 2: label must be 0 or 1"),
    (_rows(), {}, "needs --positive GROUP naming the class that is label 1 (groups: AD, CN)"),
    (_rows(), {"positive": "HCM"}, "--positive 'HCM' is not a group"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0}, {"subject": "s0", "mask": "s1.nii.gz", "label": 1}], {},
     "line 3: duplicate subject 's0' (first on line 2)"),
    ([{"subject": "../x", "mask": "s0.nii.gz", "label": 0}], {}, "is not a plain name"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0, "split": "train"},
      {"subject": "s1", "mask": "s1.nii.gz", "label": 1, "split": ""}], {}, "line 3: empty split"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0, "split": "holdout"}], {}, "unknown split 'holdout'"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0, "cohort": "x"}], {}, "would be overwritten"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0, "age": -3}], {}, "age must be a >= 0 number"),
    ([{"subject": "s0", "mask": "s0.nii.gz", "label": 0}], {"phases": ("ed", "es")}, "--phases column(s) ed, es"),
])
def test_bad_tables_are_refused_with_the_line(small_table, rows, kwargs, problem):
    _, write = small_table
    with pytest.raises(DataError) as exc:
        scan_table(write(rows), **kwargs)
    assert problem in str(exc.value)


def test_a_missing_file_stops_the_read_or_is_listed_with_skip_bad(small_table):
    folder, write = small_table
    rows = _rows()
    rows[2]["mask"] = "gone.nii.gz"
    table = write(rows)
    with pytest.raises(DataError, match="mask label map of subject s2 .*line 4.* not found"):
        scan_table(table, positive="AD")
    scan = scan_table(table, positive="AD", skip_bad=True)
    assert [s.subject for s in scan.subjects] == ["s0", "s1", "s3"]
    assert scan.skipped == [{"subject": "s2", "file": str(folder / "gone.nii.gz"),
                             "problem": "mask label map of subject s2 (t.csv line 4) not found"}]


def test_parquet_tables_read_like_csv_and_carry_extra_columns(small_table):
    _, write = small_table
    rows = _rows(site="A", age=70)
    a = scan_table(write(rows), positive="AD")
    b = scan_table(write(rows, "t.parquet"), positive="AD")
    assert [(s.subject, s.label, s.group, s.paths, s.extra, s.demographics) for s in a.subjects] == \
           [(s.subject, s.label, s.group, s.paths, s.extra, s.demographics) for s in b.subjects]
    assert a.subjects[1].label == 1 and a.subjects[0].extra == {"site": "A"} and a.phases == ("mask",)
    assert b.subjects[0].where == "row 1" and a.subjects[0].where == "line 2"


def test_the_drawn_split_follows_the_subjects_not_the_row_order():
    ids = [f"sub-{i:03d}" for i in range(60)]
    labels = [i % 3 == 0 for i in range(60)]
    base = dict(zip(ids, stratified_split(labels, (70, 15, 15), 0, ids), strict=True))
    order = np.random.default_rng(0).permutation(60)
    shuffled = stratified_split([labels[i] for i in order], (70, 15, 15), 0, [ids[i] for i in order])
    assert dict(zip([ids[i] for i in order], shuffled, strict=True)) == base
    more = stratified_split([*labels, False], (70, 15, 15), 0, [*ids, "sub-new"])  # one subject added
    moved = sum(base[s] != m for s, m in zip(ids, more, strict=False))
    assert moved <= 2, moved  # only where a cut moves past a subject


def test_the_same_scan_for_two_subjects_is_refused(small_table, tmp_path):
    _, write = small_table
    rows = _split_rows()
    rows[3]["mask"] = "s1.nii.gz"
    with pytest.raises(DataError, match="line 5: the mask label map of subject s3 .* same file content as subject "
                                        "s1's"):
        prepare_table(write(rows), tmp_path / "p", TemplateGrid.cube(16, 1.0), 5, positive="AD", workers=1,
                      quiet=True)


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(small_table):
    folder, _ = small_table
    table = folder / "odd.csv"
    table.write_text('subject,mask,label,note\n\ns0,s0.nii.gz,0,"two\nlines"\n\ns1,s1.nii.gz,7,x\n')
    with pytest.raises(DataError, match="line 6: label must be 0 or 1, got '7'"):
        scan_table(table)


def test_parquet_whole_floats_read_as_integers(small_table):
    folder, _ = small_table
    pd.DataFrame({"subject": ["s0", "s1"], "mask": ["s0.nii.gz", "s1.nii.gz"], "label": [0.0, 1.0],
                  "age": [70.0, None]}).to_parquet(folder / "f.parquet")
    scan = scan_table(folder / "f.parquet")
    assert [s.label for s in scan.subjects] == [0, 1] and np.isnan(scan.subjects[1].demographics["age"])


def test_label_values_out_of_range_are_refused(small_table, tmp_path):
    folder, write = small_table
    vol = np.zeros((12, 12, 12), np.int32)
    vol[2:6, 2:6, 2:6] = -5
    vol[6:9, 6:9, 6:9] = 5
    _nifti(folder / "s0.nii.gz", vol.astype(np.int16))
    with pytest.raises(DataError, match="label values must lie within 0"):
        prepare_table(write(_split_rows()), tmp_path / "p", TemplateGrid.cube(16, 1.0), 5, positive="AD", workers=1,
                      quiet=True)


def test_the_stratified_split_keeps_each_class_in_proportion_and_follows_the_seed():
    labels = [0] * 40 + [1] * 20
    s = stratified_split(labels, (70, 15, 15), seed=1)
    counts = pd.crosstab(pd.Series(s, name="split"), pd.Series(labels, name="label"))
    assert counts.loc["train"].tolist() == [28, 14] and counts.loc["val"].tolist() == [6, 3]
    assert s == stratified_split(labels, (70, 15, 15), seed=1) and s != stratified_split(labels, (70, 15, 15), seed=2)
    with pytest.raises(ValueError, match="leaves split"):
        stratified_split([0, 1, 0, 1], (90, 5, 5))


def _skewed_blob(shape=(40, 40, 40)) -> np.ndarray:
    """A tapered, bent shape with a distinct extent along each axis (no symmetry to hide a sign)."""
    g = np.indices(shape).astype(float) - 19.5
    x, y, z = g
    r = 7.0 - 0.25 * (x + 15)  # thick at low x, thin at high x
    return ((x >= -15) & (x <= 15) & ((y - 0.02 * x**2) ** 2 / 1.6 + z**2 / 0.9 <= np.maximum(r, 0.5) ** 2))


@pytest.mark.parametrize("seed", range(5))
def test_principal_alignment_undoes_any_rotation_and_shift(seed):
    rng = np.random.default_rng(seed)
    blob = _skewed_blob()
    grid = TemplateGrid.cube(32, 1.5)
    base_c, base_axes = frame(blob, np.eye(4), "principal")
    ref = resample(blob, np.eye(4), base_c, base_axes, grid.coords())
    # the same shape scanned in another pose: rotate the voxel grid's affine and move it
    rot = Rotation.random(random_state=seed).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot * 1.0
    affine[:3, 3] = rng.uniform(-30, 30, 3)
    c, axes = frame(blob, affine, "principal")
    moved = resample(blob, affine, c, axes, grid.coords())
    assert np.isclose(np.linalg.det(axes), 1.0)  # a rotation, never a mirror image
    dice = 2 * (ref & moved).sum() / (ref.sum() + moved.sum())
    assert dice > 0.95, dice


def test_principal_axes_are_longest_first_and_point_the_thin_tail_to_high_index():
    blob = _skewed_blob()
    _, axes = principal_frame(world_points(blob, np.eye(4)))
    assert abs(axes[0, 0]) > 0.9  # axis 0 along x, the longest extent (the bend tilts it a little)
    assert axes[0, 0] > 0  # the thin end (high x) is at high index: the third moment along it is positive


def test_centroid_and_none_alignments(tmp_path):
    blob = _skewed_blob()
    shifted = np.eye(4)
    shifted[:3, 3] = [6.0, 0.0, 0.0]
    grid = TemplateGrid.cube(32, 1.5)
    c0, a0 = frame(blob, np.eye(4), "centroid")
    c1, a1 = frame(blob, shifted, "centroid")
    assert np.allclose(a0, np.eye(3)) and np.allclose(c1 - c0, [6, 0, 0])
    same = resample(blob, shifted, c1, a1, grid.coords())
    assert (same == resample(blob, np.eye(4), c0, a0, grid.coords())).all()  # the shift is undone
    centre = (c0 + c1) / 2  # 'none': one frame for the cohort, the shift between subjects is kept
    a = resample(blob, np.eye(4), *frame(blob, np.eye(4), "none", centre), grid.coords())
    b = resample(blob, shifted, *frame(blob, shifted, "none", centre), grid.coords())
    assert (np.roll(a, 4, axis=0) == b).all()  # 6 mm = 4 voxels of 1.5 mm


def test_prepare_table_on_the_tubes(tubes, tmp_path):
    raw, gt = tubes
    out = tmp_path / "prep"
    rep = prepare_table(raw / "manifest.csv", out, GRID, STRUCTURE_LABEL, positive="AD", workers=2, quiet=True)
    ds = PreparedDataset(out)
    assert rep.n_subjects == 12 and ds.masks.shape == (12, 1, 24, 24, 24) and ds.phases == ("mask",)
    assert dataset_phases(out) == ("mask",) and not ds.is_cardiac and ds.class_names == {0: "CN", 1: "AD"}
    m = ds.manifest.set_index("subject")
    assert (m.label == (m.group == "AD")).all() and set(m.split) == {"train", "val", "test"}
    assert (pd.crosstab(m.split, m.label).min() >= 1).all()  # stratified
    # the resampled volume keeps the structure's (the neighbour, label 18, is left out)
    ratio = m.volume_ml_mask / gt.set_index("subject").volume_ml
    assert ratio.between(0.85, 1.15).all(), ratio.describe()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["structure_label"] == STRUCTURE_LABEL and meta["orientation"]["alignment"] == "principal"
    again = prepare_table(raw / "manifest.csv", out, GRID, STRUCTURE_LABEL, positive="AD", workers=2, quiet=True)
    assert again.up_to_date
    moved = prepare_table(raw / "manifest.csv", out, GRID, STRUCTURE_LABEL, positive="AD", seed=5, workers=2,
                          quiet=True)
    assert not moved.up_to_date  # another split is another dataset


def test_the_aligned_tubes_agree_with_each_other(tubes, tmp_path):
    """After the principal alignment every subject overlaps the cohort's mean shape (no flipped subject)."""
    raw, _ = tubes
    prepare_table(raw / "manifest.csv", tmp_path / "p", TemplateGrid.cube(32, 2.5), STRUCTURE_LABEL,
                  positive="AD", workers=2, quiet=True)
    masks = np.asarray(PreparedDataset(tmp_path / "p").masks[:, 0]).astype(bool)
    mean = masks.mean(0) > 0.5
    dice = [2 * (m & mean).sum() / (m.sum() + mean.sum()) for m in masks]
    assert min(dice) > 0.7, dice
    flipped = [2 * (np.flip(m, 0) & mean).sum() / (m.sum() + mean.sum()) for m in masks]
    assert all(d > f for d, f in zip(dice, flipped, strict=True))


def test_a_wrong_structure_label_names_the_file_and_the_labels_present(tubes, tmp_path):
    raw, _ = tubes
    with pytest.raises(DataError, match=r"no voxel of structure label 3 \(labels present: \[17, 18\]\)"):
        prepare_table(raw / "manifest.csv", tmp_path / "p", GRID, 3, positive="AD", workers=1, quiet=True)


def test_two_phase_tables(small_table, tmp_path):
    folder, write = small_table
    for i in range(4):  # each subject its own ES map: the ED one shifted by a voxel and i more in the last axis
        vol = np.zeros((12, 12, 12), np.int16)
        vol[4:9, 4:7, 3 + i:6 + i] = 5
        _nifti(folder / f"es{i}.nii.gz", vol)
        vol = np.zeros((12, 12, 12), np.int16)
        vol[3:8, 4:7, 2 + i:6 + i] = 5
        _nifti(folder / f"ed{i}.nii.gz", vol)
    rows = [{"subject": f"s{i}", "ed": f"ed{i}.nii.gz", "es": f"es{i}.nii.gz", "label": i % 2,
             "split": ["train", "train", "val", "test"][i]} for i in range(4)]
    out = tmp_path / "two"
    prepare_table(write(rows), out, TemplateGrid.cube(16, 1.0), 5, workers=1, quiet=True)
    ds = PreparedDataset(out)
    assert ds.masks.shape == (4, 2, 16, 16, 16) and ds.phases == ("ed", "es")
    assert list(ds.manifest.split) == ["train", "train", "val", "test"]  # the table's own split
    assert {"src_ed", "src_es", "sha256_ed", "sha256_es", "volume_ml_ed", "volume_ml_es"} <= set(ds.manifest.columns)


def test_merged_groups_are_named_and_tiny_structures_refused(small_table, tmp_path):
    folder, write = small_table
    rows = _split_rows()
    rows[2]["group"] = "MCI"
    rep = prepare_table(write(rows), tmp_path / "p", TemplateGrid.cube(16, 1.0), 5, positive="AD", workers=1,
                        quiet=True)
    assert "label 0: group(s) CN, MCI" in rep.notes
    vol = np.zeros((12, 12, 12), np.int16)
    vol[5, 5, 5:8] = 5  # three voxels: no principal axes
    _nifti(folder / "s0.nii.gz", vol)
    with pytest.raises(DataError, match="subject s0: the structure has 3 voxel"):
        prepare_table(write(rows), tmp_path / "q", TemplateGrid.cube(16, 1.0), 5, positive="AD", workers=1,
                      quiet=True)


@pytest.mark.parametrize(("overrides", "problem"), [
    (["model.in_channels=2"], "holds 1 phase(s) per subject (mask) but the model takes 2; set model.in_channels=1"),
    (["model.in_channels=1", "checkpoint.metric=val_dice_ed"], "checkpoint.metric val_dice_ed is an ED/ES Dice"),
])
def test_training_on_a_one_phase_cohort_refuses_what_cannot_work(tubes, tmp_path, overrides, problem):
    from shapetune.config import load_config
    from shapetune.training.tasks import TASKS

    raw, _ = tubes
    prepare_table(raw / "manifest.csv", tmp_path / "p", TemplateGrid.cube(16, 5.0), STRUCTURE_LABEL, positive="AD",
                  workers=1, quiet=True)
    cfg = load_config(None, ["model.grid=16", "model.bottleneck=4", *overrides])
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        TASKS["cardiac"].load(str(tmp_path / "p"), cfg)
    ok = load_config(None, ["model.grid=16", "model.bottleneck=4", "model.in_channels=1"])
    data = TASKS["cardiac"].load(str(tmp_path / "p"), ok)
    assert data.train_x.shape[1:] == (1, 16, 16, 16) and data.phases == ("mask",)


@pytest.mark.parametrize(("given", "added"), [
    ([], ["model.in_channels=1"]),
    (["optim.epochs=3", "augment.enabled=false"], ["model.in_channels=1"]),
    (["model.in_channels=1"], []),  # the user's choice stands (a wrong one is refused when the data load)
])
def test_a_table_cohort_trains_one_channel_per_phase_unless_told(tubes, tmp_path, given, added):
    raw, _ = tubes
    prepare_table(raw / "manifest.csv", tmp_path / "p", TemplateGrid.cube(16, 5.0), STRUCTURE_LABEL, positive="AD",
                  workers=1, quiet=True)
    assert cohort_overrides(tmp_path / "p", given) == ([*given, *added], added)
    bucket = f"file://{tmp_path / 'bucket' / 'p'}"  # a sweep reads its data from a bucket: the same answer there
    storage.upload(tmp_path / "p", bucket)
    assert cohort_overrides(bucket, given) == ([*given, *added], added)


def test_a_cardiac_dataset_gets_its_overrides_unchanged(tiny_prepared):
    assert cohort_overrides(tiny_prepared, ["optim.epochs=3"]) == (["optim.epochs=3"], [])
