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
voxel, the nearest-border distances come from k-d trees over the border voxels' physical coordinates
(index x spacing; shared border voxels are at distance 0 and skip the query), so the cost follows the
surface area; for compact crops (thick slices) two Euclidean distance transforms of the crop are cheaper.
Both give the same numbers to floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure
from scipy.spatial import cKDTree

_CROSS = generate_binary_structure(3, 1)
# Above this many crop voxels per border point, k-d trees beat a distance transform of the crop (measured).
EDT_VOXELS_PER_POINT = 5

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
    structure = _CROSS if mask.ndim == 3 else generate_binary_structure(mask.ndim, 1)
    border: np.ndarray = mask & ~binary_erosion(mask, structure=structure, border_value=0)
    return border


def _bbox(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    both = a | b
    sl = []
    for ax in range(both.ndim):
        other = tuple(i for i in range(both.ndim) if i != ax)
        nz = np.flatnonzero(both.any(axis=other))
        sl.append(slice(max(nz[0] - 1, 0), nz[-1] + 2))
    return tuple(sl)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """Directed border-to-border distances (mm): pred -> ref and ref -> pred. Both masks must be non-empty."""
    sl = _bbox(pred, ref)
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred.ndim,))
    bp, br = _border(pred[sl]), _border(ref[sl])
    n_points = int(np.count_nonzero(bp)) + int(np.count_nonzero(br))
    if bp.size < EDT_VOXELS_PER_POINT * n_points:  # a compact crop (thick slices): one pass over its voxels is cheaper
        return distance_transform_edt(~br, sampling=sp)[bp], distance_transform_edt(~bp, sampling=sp)[br]
    # Border voxels shared by both masks are at distance 0; only the others need a nearest-neighbour query.
    d_pr, d_rp = np.zeros(int(bp.sum())), np.zeros(int(br.sum()))
    d_pr[(~br)[bp]] = _tree(np.argwhere(br) * sp).query(np.argwhere(bp & ~br) * sp)[0]
    d_rp[(~bp)[br]] = _tree(np.argwhere(bp) * sp).query(np.argwhere(br & ~bp) * sp)[0]
    return d_pr, d_rp


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
    vp, vr = int(pred.sum()), int(ref.sum())
    rvd = (vp - vr) / vr if vr else (0.0 if vp == 0 else float("nan"))
    if vp == 0 and vr == 0:
        return PairMetrics(1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    if vp == 0 or vr == 0:
        return PairMetrics(0.0, float("inf"), float("inf"), float("inf"), rvd, 0.0)
    dice = 2.0 * int(np.count_nonzero(pred & ref)) / (vp + vr)
    a, b = surface_distances(pred, ref, spacing)
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
