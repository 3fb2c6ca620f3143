"""Generic rigid alignment of a label map onto the template grid, for anatomy without the cardiac LV frame.

Three modes, chosen with ``data prepare --align``:

- ``principal``: the grid's centre is the structure's centroid and its axes are the structure's principal axes
  (eigenvectors of the covariance of its voxel positions in scanner mm), longest first: axis 0 (D) along the
  longest extent, axis 2 (W) along the shortest. An eigenvector has no sign; each is oriented so that the
  third central moment of the structure along it is positive, i.e. the structure's longer, thinner tail
  points to high index (a hippocampus: head at low D, tail at high D). Where that moment is too small to
  trust (below 5 % of the standard deviation cubed: a near-symmetric extent) the axis is oriented to agree
  with the scanner axis it is closest to, so near-symmetric shapes keep the orientation they were scanned in.
  Axis 2 is then flipped if needed to keep the frame right-handed (a rotation, never a mirror image).
- ``centroid``: the grid's centre is the structure's centroid; its axes are the scanner's (RAS, mm) axes.
- ``none``: for data already registered to a common space: no per-subject motion at all; the grid's axes are
  the scanner's and its centre is one point for the whole cohort (the mean of the subjects' centroids).

The frame is estimated on the first phase and applied to every phase of the subject, so motion between
phases is kept, as the cardiac path keeps it between ED and ES.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

ALIGNMENTS = ("principal", "centroid", "none")
SKEW_TRUST = 0.05  # |third moment| / sd^3 below this: orient by the nearest scanner axis instead


def world_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Scanner-mm positions ``[N, 3]`` of the voxel centres of a binary mask."""
    idx = np.argwhere(mask).astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def principal_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and axes (the columns of a rotation matrix: longest extent first) of a point cloud.

    Args:
        points: ``[N, 3]`` positions in mm, N >= 4.

    Returns:
        The centroid ``[3]`` and a right-handed orthonormal ``[3, 3]`` whose columns are the oriented axes.
    """
    c = points.mean(axis=0)
    d = points - c
    w, v = np.linalg.eigh(d.T @ d / len(d))
    v = v[:, np.argsort(w)[::-1]]
    for k in range(3):
        proj = d @ v[:, k]
        sd = proj.std()
        m3 = float(np.mean(proj**3))
        if sd > 0 and abs(m3) >= SKEW_TRUST * sd**3:
            sign = np.sign(m3)
        else:  # near-symmetric along this axis: agree with the closest scanner axis
            j = int(np.argmax(np.abs(v[:, k])))
            sign = np.sign(v[j, k]) or 1.0
        v[:, k] *= sign
    if np.linalg.det(v) < 0:
        v[:, 2] *= -1
    return c, v


def frame(mask: np.ndarray, affine: np.ndarray, mode: str, cohort_centre: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The template frame (centre in scanner mm, axes as columns) of a subject's first-phase mask."""
    if mode not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {mode!r}; choose from {', '.join(ALIGNMENTS)}")
    if mode == "none":
        if cohort_centre is None:
            raise ValueError("alignment 'none' needs the cohort's centre")
        return np.asarray(cohort_centre, dtype=np.float64), np.eye(3)
    pts = world_points(mask, affine)
    if mode == "centroid":
        return pts.mean(axis=0), np.eye(3)
    if len(pts) < 4:
        raise ValueError(f"the structure has {len(pts)} voxel(s): too few for principal axes (at least 4)")
    return principal_frame(pts)


def resample(mask: np.ndarray, affine: np.ndarray, centre: np.ndarray, axes: np.ndarray, grid_coords: np.ndarray
             ) -> np.ndarray:
    """The binary mask resampled onto the template grid placed at ``centre`` with ``axes`` (linear, >= 0.5).

    Args:
        mask: the source binary mask.
        affine: its voxel -> scanner-mm affine.
        centre: where the grid's centre lies, scanner mm.
        axes: the grid's axes in scanner mm, as columns.
        grid_coords: ``TemplateGrid.coords()``, ``[3, D, H, W]`` in template mm.
    """
    shape = grid_coords.shape[1:]
    world = axes @ grid_coords.reshape(3, -1) + centre[:, None]
    inv = np.linalg.inv(affine)
    vox = inv[:3, :3] @ world + inv[:3, 3:4]
    out = map_coordinates(mask.astype(np.float32), vox, order=1, mode="constant", cval=0.0)
    return (out >= 0.5).reshape(shape)
