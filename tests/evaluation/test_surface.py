"""Reconstruction metrics: hand-computed cases, edge cases, invariances, agreement with MONAI when installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from shapetune.evaluation.surface import batch_metrics, pair_metrics


def vol(shape=(12, 12, 12)):
    return np.zeros(shape, dtype=bool)


def ball(shape, centre, r):
    g = np.indices(shape).astype(float)
    return ((g - np.array(centre, float)[:, None, None, None]) ** 2).sum(0) <= r * r


def test_single_voxels_anisotropic():
    a, b = vol(), vol()
    a[1, 1, 1] = True
    b[4, 5, 1] = True
    m = pair_metrics(a, b, spacing=(1, 1, 1))
    assert (m.dice, m.hd, m.hd95, m.assd, m.rvd) == (0.0, 5.0, 5.0, 5.0, 0.0)
    m = pair_metrics(a, b, spacing=(2.0, 1.0, 0.5))  # 3 voxels of 2 mm, 4 of 1 mm
    assert m.hd == pytest.approx(math.sqrt(36 + 16)) and m.assd == pytest.approx(math.sqrt(52))


def test_shifted_cube_under_anisotropic_spacing():
    a, b = vol(), vol()
    a[2:6, 2:6, 2:6] = True
    b[3:7, 2:6, 2:6] = True  # one voxel along axis 0, which is 2 mm thick
    m = pair_metrics(b, a, spacing=(2.0, 1.0, 1.0))
    assert m.hd == pytest.approx(2.0) and m.dice == pytest.approx(2 * 48 / 128) and m.rvd == 0.0
    m = pair_metrics(b, a, spacing=(1.0, 1.0, 1.0))
    assert m.hd == pytest.approx(1.0)


def test_identical_and_volume_difference():
    a = ball((20, 20, 20), (10, 10, 10), 6)
    m = pair_metrics(a, a, 1.5)
    assert (m.dice, m.hd, m.hd95, m.assd, m.rvd) == (1.0, 0.0, 0.0, 0.0, 0.0)
    big = ball((20, 20, 20), (10, 10, 10), 7)
    m = pair_metrics(big, a)
    assert m.rvd == pytest.approx(big.sum() / a.sum() - 1) and m.rvd > 0
    assert pair_metrics(a, big).rvd < 0 and 0.9 <= m.hd <= 1.5  # concentric balls one voxel apart


def test_empty_masks():
    e, a = vol(), vol()
    a[3:5, 3:5, 3:5] = True
    both = pair_metrics(e, e)
    assert (both.dice, both.hd, both.hd95, both.assd, both.rvd) == (1.0, 0.0, 0.0, 0.0, 0.0)
    one = pair_metrics(e, a)
    assert one.dice == 0.0 and math.isinf(one.hd) and math.isinf(one.assd) and one.rvd == -1.0
    other = pair_metrics(a, e)
    assert math.isinf(other.hd95) and math.isnan(other.rvd)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        pair_metrics(vol((4, 4, 4)), vol((4, 4, 5)))


def _naive(a, b, spacing):
    """The same definition on the full volume, without the bounding-box crop."""
    s = generate_binary_structure(3, 1)
    ba, bb = a & ~binary_erosion(a, s, border_value=0), b & ~binary_erosion(b, s, border_value=0)
    da = distance_transform_edt(~bb, sampling=spacing)[ba]
    db = distance_transform_edt(~ba, sampling=spacing)[bb]
    return max(da.max(), db.max()), max(np.percentile(da, 95), np.percentile(db, 95)), np.concatenate([da, db]).mean()


blobs = st.tuples(st.integers(3, 13), st.integers(3, 13), st.integers(3, 13), st.floats(1.5, 4.0))


@settings(max_examples=25, deadline=None)
@given(blobs, blobs, st.tuples(st.floats(0.5, 3), st.floats(0.5, 3), st.floats(0.5, 3)))
def test_symmetry_crop_exactness_and_translation_invariance(p, q, spacing):
    shape = (18, 18, 18)
    a, b = ball(shape, p[:3], p[3]), ball(shape, q[:3], q[3])
    m, r = pair_metrics(a, b, spacing), pair_metrics(b, a, spacing)
    assert m.dice == r.dice and m.hd == r.hd and m.hd95 == pytest.approx(r.hd95) and m.assd == pytest.approx(r.assd)
    hd, hd95, assd = _naive(a, b, spacing)
    assert m.hd == pytest.approx(hd, abs=1e-9) and m.hd95 == pytest.approx(hd95, abs=1e-9)
    assert m.assd == pytest.approx(assd, abs=1e-9)
    shifted = pair_metrics(np.roll(np.pad(a, 3), (2, -1, 3), (0, 1, 2)), np.roll(np.pad(b, 3), (2, -1, 3), (0, 1, 2)),
                           spacing)
    assert shifted.hd == pytest.approx(m.hd) and shifted.dice == m.dice and shifted.assd == pytest.approx(m.assd)


def _noisy_blob(shape, rng):
    """A ball with random voxels flipped near its surface, touching the array's edge now and then."""
    g = np.indices(shape).astype(float)
    centre = rng.uniform(0, np.array(shape) - 1)
    r = rng.uniform(0.2, 0.45) * min(shape)
    d = np.sqrt(((g - centre.reshape(-1, *([1] * len(shape)))) ** 2).sum(0))
    return (d <= r + rng.normal(0, 1.0, shape)) & (d <= r + 2)


# Every nearest-border strategy gives the same directed distances: the EDT of the crop, offset probing with the
# k-d tree for the rest, and the k-d tree alone (RING_VOXELS 0). Exact spacings give identical floats; spacings
# without an exact binary form may differ in the last bit, so those compare at 1e-12 mm.
@pytest.mark.parametrize(("shape", "spacing", "exact"), [
    ((40, 36, 30), (1.0, 1.0, 1.0), True),
    ((48, 40, 8), (1.5, 1.5, 10.0), True),
    ((30, 30, 30), (0.7, 1.3, 2.9), False),
    ((60, 50), (0.5, 2.0), True),
])
def test_nearest_border_strategies_agree(monkeypatch, shape, spacing, exact):
    from shapetune.evaluation import surface

    rngs = [np.random.default_rng(i) for i in range(6)]
    pairs = [(_noisy_blob(shape, r), _noisy_blob(shape, r)) for r in rngs]
    results = {}
    for name, edt_per_point, ring in (("edt", 10**9, 5), ("ring+kd", 0, 5), ("wide ring", 0, 12), ("kd", 0, 0)):
        monkeypatch.setattr(surface, "EDT_VOXELS_PER_POINT", edt_per_point)
        monkeypatch.setattr(surface, "RING_VOXELS", ring)
        results[name] = [surface.surface_distances(a, b, spacing) for a, b in pairs]
    for name, got in results.items():
        for (a, b), (ea, eb) in zip(got, results["edt"], strict=True):
            if exact:
                assert np.array_equal(a, ea) and np.array_equal(b, eb), name
            else:
                np.testing.assert_allclose(a, ea, rtol=0, atol=1e-12, err_msg=name)
                np.testing.assert_allclose(b, eb, rtol=0, atol=1e-12, err_msg=name)
    assert any(d.max() > 5 * min(spacing) for a, b in results["edt"] for d in (a, b))  # some beyond the ring


def test_batch_matches_pairs_and_threads():
    rng = np.random.default_rng(0)
    preds = np.stack([ball((16, 16, 16), rng.uniform(5, 11, 3), rng.uniform(2, 5)) for _ in range(6)])
    refs = np.stack([ball((16, 16, 16), rng.uniform(5, 11, 3), rng.uniform(2, 5)) for _ in range(6)])
    one = batch_metrics(preds, refs, (1.0, 1.2, 2.0))
    assert one == batch_metrics(preds, refs, (1.0, 1.2, 2.0), workers=2)
    assert one[3] == pair_metrics(preds[3], refs[3], (1.0, 1.2, 2.0))


def test_agrees_with_monai_when_installed():
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    rng = np.random.default_rng(1)
    for _ in range(5):
        a = ball((24, 24, 24), rng.uniform(7, 17, 3), rng.uniform(3, 7))
        b = ball((24, 24, 24), rng.uniform(7, 17, 3), rng.uniform(3, 7))
        spacing = tuple(rng.uniform(0.5, 2.5, 3))
        ours = pair_metrics(a, b, spacing)
        ta, tb = (torch.from_numpy(x[None, None].astype(np.float32)) for x in (a, b))
        hd = monai_metrics.compute_hausdorff_distance(ta, tb, spacing=spacing).item()
        hd95 = monai_metrics.compute_hausdorff_distance(ta, tb, percentile=95, spacing=spacing).item()
        asd = monai_metrics.compute_average_surface_distance(ta, tb, symmetric=True, spacing=spacing).item()
        assert ours.hd == pytest.approx(hd, abs=1e-6) and ours.hd95 == pytest.approx(hd95, abs=1e-6)
        assert ours.assd == pytest.approx(asd, abs=1e-6)


def test_agrees_with_medpy_when_installed():
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(2)
    for _ in range(4):
        a = ball((20, 20, 12), rng.uniform(6, 14, 3) * [1, 1, 0.6], rng.uniform(3, 6))
        b = ball((20, 20, 12), rng.uniform(6, 14, 3) * [1, 1, 0.6], rng.uniform(3, 6))
        spacing = (1.25, 1.25, 5.0)  # thick slices
        ours = pair_metrics(a, b, spacing)
        assert ours.hd == pytest.approx(binary.hd(a, b, spacing), abs=1e-9)
        assert ours.assd == pytest.approx(binary.assd(a, b, spacing), abs=1e-9)


@pytest.mark.parametrize("distance,tolerance,expected", [
    (3.0, 2.0, 0.0),   # two single voxels 3 mm apart: neither within 2 mm of the other
    (3.0, 3.0, 1.0),   # the tolerance is inclusive
    (0.0, 0.0, 1.0),   # identical
])
def test_nsd_of_single_voxels(distance, tolerance, expected):
    a, b = vol(), vol()
    a[2, 2, 2] = True
    b[2, 2, 2 + int(distance)] = True
    assert pair_metrics(a, b, 1.0, tolerance).nsd == expected


def test_nsd_counts_border_voxels_of_both_surfaces():
    a = ball((24, 24, 24), (12, 12, 12), 6)
    b = ball((24, 24, 24), (12, 12, 13), 6)  # shifted by one voxel
    m = pair_metrics(a, b, 1.0, 0.5)
    border_a, border_b = a & ~binary_erosion(a), b & ~binary_erosion(b)
    shared = int((border_a & border_b).sum())
    assert m.nsd == pytest.approx(2 * shared / (border_a.sum() + border_b.sum()))  # only coincident voxels
    assert pair_metrics(a, b, 1.0, 1.0).nsd == 1.0 and pair_metrics(a, a, 2.5).nsd == 1.0
    empty = vol((24, 24, 24))
    assert pair_metrics(empty, empty).nsd == 1.0 and pair_metrics(a, empty).nsd == 0.0


def test_nsd_is_bracketed_by_surface_distance_when_installed():
    sd = pytest.importorskip("surface_distance")
    rng = np.random.default_rng(0)
    for spacing in [(1.0, 1.0, 1.0), (1.25, 1.25, 5.0), (2.0, 2.0, 2.0), (0.8, 1.0, 1.5)]:
        h = 0.5 * float(np.linalg.norm(spacing))
        for tau in (max(spacing), 3.0, 6.0):
            shape = (32, 32, 24)
            a = ball(shape, rng.uniform(12, 20, 3) * [1, 1, 0.75], rng.uniform(5, 9))
            b = ball(shape, rng.uniform(12, 20, 3) * [1, 1, 0.75], rng.uniform(5, 9))
            ours = pair_metrics(a, b, spacing, tau).nsd
            d = sd.compute_surface_distances(b, a, spacing)
            lo = sd.compute_surface_dice_at_tolerance(d, max(tau - h, 0.0))
            hi = sd.compute_surface_dice_at_tolerance(d, tau + h)
            assert lo - 0.02 <= ours <= hi + 0.02, (spacing, tau, lo, ours, hi)
