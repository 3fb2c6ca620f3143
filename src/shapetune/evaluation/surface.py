"""Reconstruction metrics of binary masks: Dice, Hausdorff (HD, HD95), ASSD in mm, relative volume difference and
normalized surface Dice (NSD) at a tolerance in mm.

Conventions (those of MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance``):
- The surface of a mask is its set of border voxels: foreground voxels with a background 6-neighbour
  (``mask & ~binary_erosion(mask)``, the outside of the array counting as background).
- The distance from a border voxel of A to B is the Euclidean distance, in mm with the voxel spacing
  honoured (anisotropic voxels), between voxel centres, to the nearest border voxel of B.
- HD is the larger of the two directed maxima; HD95 the larger of the two directed 95th percentiles
  (``numpy.percentile``, linear interpolation); ASSD the mean over both directions' distances together.
- NSD at tolerance tau (Nikolov et al. 2021): the fraction of both surfaces' border voxels lying within tau mm of
  the other surface, both directions pooled, each border voxel counting once.
- Edge cases: both masks empty -> Dice 1, HD = HD95 = ASSD = 0, RVD 0; exactly one empty -> Dice 0 and
  the distances are ``inf`` (MONAI returns nan/inf there with a warning); an empty reference gives RVD nan.
medpy (0.5) agrees except for HD95, which it takes over both directions pooled. DeepMind's
``surface-distance`` package differs on purpose: it measures between surface elements
(surfels) on the voxel faces and weights them by area, so its distances differ from these by up to about
half a voxel; they agree with MONAI's to floating-point precision. Its NSD
(``compute_surface_dice_at_tolerance``) measures surfel to surfel and weights by area, this one voxel centre to
voxel centre, one count per border voxel: at the same tau the two differ by up to 0.14 on random balls
(measured). What holds, for tau at least the largest voxel spacing, is a bracket: this NSD at tau lies between
``surface-distance``'s at tau - h and at tau + h, h being half the voxel diagonal (within 0.02 for the area
weighting; checked in ``tests/evaluation/test_surface.py``). Below one voxel spacing the voxel-centre NSD is
coarse (only coincident border voxels count): choose tau of at least a voxel.

Speed: everything happens inside the joint bounding box of both masks (plus one voxel), which changes
no value because every border voxel lies inside it. There, when the crop has many voxels per border
voxel, each border voxel's distance comes from probing the other border at integer offsets of increasing
physical length (all offsets of one length before the next, so the first hit is the exact minimum) up to
RING_VOXELS voxels, and from a k-d tree over the other border's physical coordinates beyond (shared border
voxels are at distance 0); the cost follows the surface area. For compact crops (thick slices) two Euclidean
distance transforms of the crop are as cheap. All give the same numbers (tested); ``bench_metrics`` measures
4.9x / 6.0x / 3.5x the fastest of MONAI, medpy and surface-distance at 64³ / 128³ / ACDC size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

# Above this many crop voxels per border point, k-d trees beat a distance transform of the crop (measured).
EDT_VOXELS_PER_POINT = 5
# Offsets up to this many (smallest) voxel spacings are probed directly before the k-d tree (measured).
RING_VOXELS = 5

Spacing = float | Sequence[float]  # mm per voxel: one value, or one per axis
NSD_TOLERANCE_MM = 2.0  # the default tolerance of the normalized surface Dice


@dataclass(frozen=True)
class PairMetrics:
    dice: float
    hd: float
    hd95: float
    assd: float
    rvd: float  # signed (V_pred - V_ref) / V_ref
    nsd: float = float("nan")  # normalized surface Dice at the tolerance pair_metrics was given

    def as_dict(self, suffix: str = "") -> dict[str, float]:
        return {f"dice{suffix}": self.dice, f"hd{suffix}": self.hd, f"hd95{suffix}": self.hd95,
                f"assd{suffix}": self.assd, f"rvd{suffix}": self.rvd, f"abs_rvd{suffix}": abs(self.rvd),
                f"nsd{suffix}": self.nsd}


def _border(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background face neighbour, the outside of the array counting as background.

    The same set as ``mask & ~binary_erosion(mask, cross, border_value=0)``, from shifted views of a padded copy:
    6x faster than scipy's erosion on a 77x83x79 crop (1.3 vs 8.1 ms, measured).
    """
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for ax in range(mask.ndim):
        for lo, hi in ((None, -2), (2, None)):
            view = list(inner)
            view[ax] = slice(lo, hi)
            interior &= padded[tuple(view)]
    border: np.ndarray = mask & ~interior
    return border


def _bbox(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    both = a | b
    sl = []
    for ax in range(both.ndim):
        other = tuple(i for i in range(both.ndim) if i != ax)
        nz = np.flatnonzero(both.any(axis=other))
        sl.append(slice(max(nz[0] - 1, 0), nz[-1] + 2))
    return tuple(sl)


@lru_cache(maxsize=32)
def _ring(spacing: tuple[float, ...], radius_mm: float) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Integer offsets within ``radius_mm`` (physical distance), nearest first; their squared distances; half-sizes."""
    sp = np.asarray(spacing)
    half = tuple(int(radius_mm // s) for s in spacing)
    grid = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), -1).reshape(-1, len(half))
    d2 = ((grid * sp) ** 2).sum(axis=1)
    keep = (d2 > 0) & (d2 <= radius_mm**2)
    order = np.argsort(d2[keep], kind="stable")
    return grid[keep][order], d2[keep][order], half


def _directed(src: np.ndarray, dst: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
              sp: np.ndarray) -> np.ndarray:
    """Distance (mm) from every border voxel of ``src`` to the nearest border voxel of ``dst`` (same-shape crops).

    ``*_points`` are the borders' voxel indices (``np.argwhere``). Most distances are a few voxels: those come
    from probing ``dst`` at offsets of increasing physical length, all offsets of one length before the next;
    the first length that hits is the exact minimum, because every shorter offset missed. What is still
    unresolved at RING_VOXELS voxels goes to a k-d tree over ``dst``'s border. At 128³ (1 mm) this takes 78 ms
    per pair for both directions where k-d trees alone took 122 ms (measured on the bench_metrics shells).
    """
    offsets, d2, half = _ring(tuple(float(s) for s in sp), RING_VOXELS * float(sp.min()))
    padded = np.pad(dst, [(h, h) for h in half]).ravel()
    strides = np.cumprod((1, *np.array(dst.shape)[::-1][:-1] + 2 * np.array(half)[::-1][:-1]))[::-1]
    flat = (src_points + half) @ strides
    out = np.zeros(len(src_points))
    todo = np.flatnonzero(~padded[flat])  # shared border voxels are at distance 0
    flat, deltas = flat[todo], offsets @ strides
    ends = np.r_[np.flatnonzero(np.diff(d2)) + 1, len(d2)] if len(d2) else []
    start = 0
    for end in ends:  # one group per distinct offset length; one 1-D gather per offset (2x faster than 2-D)
        if todo.size == 0:
            break
        hit = padded[flat + deltas[start]]
        for delta in deltas[start + 1:end]:
            hit |= padded[flat + delta]
        out[todo[hit]] = np.sqrt(d2[start])
        todo, flat = todo[~hit], flat[~hit]
        start = end
    if todo.size:
        out[todo] = _tree(dst_points * sp).query(src_points[todo] * sp)[0]
    return out


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """Directed border-to-border distances (mm): pred -> ref and ref -> pred. Both masks must be non-empty."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    sl = _bbox(pred, ref)
    return _crop_distances(pred[sl], ref[sl], np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred.ndim,)))


def _crop_distances(pred: np.ndarray, ref: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bp, br = _border(pred), _border(ref)
    pp, pr = np.argwhere(bp), np.argwhere(br)
    if bp.size < EDT_VOXELS_PER_POINT * (len(pp) + len(pr)):  # a compact crop (thick slices): one pass is cheaper
        return distance_transform_edt(~br, sampling=sp)[bp], distance_transform_edt(~bp, sampling=sp)[br]
    return _directed(bp, br, pp, pr, sp), _directed(br, bp, pr, pp, sp)


def _tree(points: np.ndarray) -> cKDTree:
    return cKDTree(points, balanced_tree=False, compact_nodes=False)  # built once, queried once: build fast


def pair_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Spacing = 1.0,
                 nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> PairMetrics:
    """All reconstruction metrics for one binary mask pair (see the module docstring for conventions).

    Args:
        pred: the predicted mask (any dtype; nonzero is foreground).
        ref: the reference mask, of the same shape.
        spacing: mm per voxel, one value or one per axis.
        nsd_tolerance_mm: the tolerance of the normalized surface Dice.

    Returns:
        Dice, HD, HD95 and ASSD in mm, the relative volume difference and the NSD.

    Raises:
        ValueError: the shapes differ.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs reference {ref.shape}")
    vp, vr = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    rvd = (vp - vr) / vr if vr else (0.0 if vp == 0 else float("nan"))
    if vp == 0 and vr == 0:
        return PairMetrics(1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    if vp == 0 or vr == 0:
        return PairMetrics(0.0, float("inf"), float("inf"), float("inf"), rvd, 0.0)
    sl = _bbox(pred, ref)  # every foreground voxel lies in the joint box: work there
    pc, rc = pred[sl], ref[sl]
    dice = 2.0 * int(np.count_nonzero(pc & rc)) / (vp + vr)
    a, b = _crop_distances(pc, rc, np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred.ndim,)))
    hd = float(max(a.max(), b.max()))
    hd95 = float(max(np.percentile(a, 95), np.percentile(b, 95)))
    assd = float(np.concatenate([a, b]).mean())
    within = int(np.count_nonzero(a <= nsd_tolerance_mm)) + int(np.count_nonzero(b <= nsd_tolerance_mm))
    nsd = within / (a.size + b.size)
    return PairMetrics(dice, hd, hd95, assd, rvd, nsd)


def batch_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Spacing = 1.0, workers: int = 1,
                  nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> list[PairMetrics]:
    """Metrics for a batch ``[N, ...]`` of mask pairs; ``workers`` > 1 uses threads (scipy releases the GIL)."""
    if pred.shape != ref.shape:
        raise ValueError(f"batch shapes differ: prediction {pred.shape} vs reference {ref.shape}")
    if workers <= 1:
        return [pair_metrics(p, r, spacing, nsd_tolerance_mm) for p, r in zip(pred, ref, strict=True)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda pr: pair_metrics(pr[0], pr[1], spacing, nsd_tolerance_mm),
                           zip(pred, ref, strict=True)))
