"""The single preprocessing path: alignment and shape-based resampling recover the template pose."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.dataset import PreparedDataset
from shapetune.data.nifti import save_nifti
from shapetune.data.preprocess import preprocess_subject, signed_distance
from shapetune.data.sources import RawSubject, read_imperial
from shapetune.data.template import CAVITY, MYOCARDIUM, TemplateGrid

GRID = TemplateGrid.cube(64, 2.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def _reslice(src, dst, rot: np.ndarray, shift: np.ndarray, spacing=(1.5, 1.5, 8.0), shape=(120, 110, 14)):
    """Rotate/translate the anatomy and re-slice it onto a thick-slice scanner grid (nearest neighbour)."""
    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    sp = np.asarray(spacing)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1).astype(float)
    world = idx * sp[:, None] - (np.asarray(shape)[:, None] - 1) / 2 * sp[:, None]
    src_world = rot.T @ (world - shift[:, None])
    inv = np.linalg.inv(img.affine)
    src_idx = inv[:3, :3] @ src_world + inv[:3, 3:4]
    out = map_coordinates(data, src_idx, order=0, mode="constant", cval=0).reshape(shape).astype(np.uint8)
    save_nifti(dst, out, np.diag([*spacing, 1.0]))


@pytest.fixture(scope="module")
def aligned_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp64")
    synth_imperial(root, SynthConfig(seed=11, grid=64, spacing=2.0), split=(("test", 1, 2),), workers=1, quiet=True)
    return root, read_imperial(root)


@pytest.mark.parametrize("angle", [37.0, 145.0, 290.0])
def test_rotated_translated_resliced_subject_matches_original(aligned_pair, tmp_path, angle):
    _, subjects = aligned_pair
    raw = next(s for s in subjects if s.group == "HCM")
    original, _ = preprocess_subject(raw, GRID)
    # Template long axis -> scanner -z, spun in-plane by `angle`, tilted 6 degrees, shifted.
    align = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    rot = Rotation.from_euler("xz", [6.0, angle], degrees=True).as_matrix() @ align
    shift = np.array([7.0, -11.0, 3.0])
    paths = [tmp_path / f"seg_{ph}.nii.gz" for ph in ("ED", "ES")]
    for src, dst in zip((raw.ed_path, raw.es_path), paths, strict=True):
        _reslice(src, dst, rot, shift)
    moved = RawSubject(raw.subject, "acdc", "test", raw.group, paths[0], paths[1], raw.demographics)
    recovered, info = preprocess_subject(moved, GRID)
    assert 0.5 < info["long_axis_tilt_deg"] < 12.0  # the 6 degree tilt, give or take the anatomy's own axis
    for phase in (0, 1):
        d_myo = dice(original[phase] == MYOCARDIUM, recovered[phase] == MYOCARDIUM)
        d_lv = dice(original[phase] > 0, recovered[phase] > 0)
        assert d_myo >= 0.85, (angle, phase, d_myo)
        assert d_lv >= 0.9, (angle, phase, d_lv)


def test_septal_bulges_land_in_septal_segments(acdc_prepared):
    m = PreparedDataset(acdc_prepared).manifest
    sept = m[m["phenotype"] == "septal"]
    assert len(sept) >= 2
    segs = [f"wt_aha{s:02d}_mm" for s in range(1, 17)]
    best = sept[segs].to_numpy().argmax(axis=1) + 1
    assert set(best) <= {2, 3, 8, 9, 14}, dict(zip(sept.subject, best, strict=True))


def test_template_orientation_of_prepared_acdc(acdc_prepared):
    ds = PreparedDataset(acdc_prepared)
    for i in range(len(ds)):
        ed = np.asarray(ds.masks[i, 0])
        lv = np.argwhere(ed > 0).mean(axis=0)
        assert np.allclose(lv, (np.array(GRID.shape) - 1) / 2, atol=1.5)  # LV centroid at the grid centre
        area = (ed == CAVITY).sum(axis=(1, 2))
        k = np.nonzero(area)[0]
        quarter = max(1, len(k) // 4)
        # axis 0 runs apex -> base: the cavity is narrow at low indices and wide at high ones
        assert area[k[:quarter]].mean() < area[k[-quarter:]].mean()


def test_signed_distance_thick_slices_is_per_slice():
    m = np.zeros((20, 20, 5), dtype=bool)
    m[5:15, 5:15, 1:4] = True
    sdf = signed_distance(m, np.array([1.0, 1.0, 8.0]))
    assert sdf[10, 10, 2] < 0 and sdf[0, 0, 2] > 0
    assert np.all(sdf[:, :, 0] == sdf[0, 0, 0])  # an empty slice is "far outside" everywhere
    iso = signed_distance(m, np.array([1.0, 1.0, 1.0]))
    assert iso[10, 10, 2] == pytest.approx(-2.0)  # 3D: the nearest outside voxel is 2 slices away
