"""One preprocessing path for every source: LV label maps at any spacing/orientation -> template grid.

Steps: validate both phases; estimate the LV frame at ED in scanner millimetres (long axis from the
cavity's principal axis, apex/base from the cavity's skew, in-plane rotation from the RV centroid, which
marks the septum); resample the cavity and the whole LV with shape-based interpolation (linear
interpolation of signed-distance maps, per slice for thick slices) at the template voxel centres; derive
myocardium = LV minus cavity. ED and ES share the ED frame, so cardiac motion is preserved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from shapetune.data.errors import DataError
from shapetune.data.nifti import load_label_map
from shapetune.data.sources import RawSubject
from shapetune.data.template import CAVITY, MYOCARDIUM, TemplateGrid

FAR_MM = 1e3  # signed distance used for "certainly outside" (empty slices, outside the field of view)
THICK_SLICE_RATIO = 1.5  # slice spacing / in-plane spacing above which SDFs are computed per slice


@dataclass
class Frame:
    """LV frame in scanner mm: template point p maps to ``centre + axes @ p``."""

    centre: np.ndarray
    axes: np.ndarray  # columns: apex->base, inferior->anterior, septum->lateral


def _voxel_mm(affine: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return idx @ affine[:3, :3].T + affine[:3, 3]


def estimate_frame(labels: np.ndarray, affine: np.ndarray, lab: dict, path, in_plane: str = "rv") -> Frame:
    """LV frame from an ED label map (see module docstring)."""
    cav_idx = np.argwhere(labels == lab["cav"]).astype(float)
    lv_idx = np.argwhere((labels == lab["cav"]) | (labels == lab["myo"])).astype(float)
    cav = _voxel_mm(affine, cav_idx)
    lv = _voxel_mm(affine, lv_idx)
    centre = lv.mean(axis=0)
    d = cav - cav.mean(axis=0)
    w, v = np.linalg.eigh(d.T @ d / len(d))
    axis = v[:, -1]
    proj = d @ axis
    if np.mean(proj**3) > 0:  # the cavity tapers towards the apex: the skew's tail points apically
        axis = -axis
    if in_plane == "rv":
        rv_idx = np.argwhere(labels == lab["rv"]).astype(float)
        if len(rv_idx) == 0:
            raise DataError(path, f"RV cavity label {lab['rv']} absent: needed to fix the in-plane rotation "
                                  "(septum direction); use in_plane='keep' for data already aligned in-plane")
        sept = _voxel_mm(affine, rv_idx).mean(axis=0) - centre
    elif in_plane == "keep":
        sept = -affine[:3, 2] / np.linalg.norm(affine[:3, 2])  # input axis 2 already runs septum -> lateral
    else:
        raise ValueError(f"in_plane must be 'rv' or 'keep', got {in_plane!r}")
    sept = sept - (sept @ axis) * axis
    if np.linalg.norm(sept) < 1e-6:
        raise DataError(path, "septum direction is parallel to the long axis; cannot fix the in-plane rotation")
    e2 = -sept / np.linalg.norm(sept)
    e1 = np.cross(e2, axis)
    return Frame(centre, np.stack([axis, e1, e2], axis=1))


def signed_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside); per-slice 2D along a thick-slice axis, else 3D."""
    thick = int(np.argmax(spacing))
    if spacing[thick] > THICK_SLICE_RATIO * np.min(spacing):
        out = np.full(mask.shape, FAR_MM, dtype=np.float32)
        m = np.moveaxis(mask, thick, 0)
        o = np.moveaxis(out, thick, 0)
        sp = np.delete(spacing, thick)
        for k in range(m.shape[0]):
            if m[k].any():
                o[k] = distance_transform_edt(~m[k], sampling=sp) - distance_transform_edt(m[k], sampling=sp)
        return out
    if not mask.any():
        return np.full(mask.shape, FAR_MM, dtype=np.float32)
    return (distance_transform_edt(~mask, sampling=spacing)
            - distance_transform_edt(mask, sampling=spacing)).astype(np.float32)


def resample_to_template(labels: np.ndarray, affine: np.ndarray, frame: Frame, grid: TemplateGrid,
                         lab: dict) -> np.ndarray:
    """Template-grid label map (MYOCARDIUM / CAVITY) by shape-based interpolation of SDFs."""
    lv_mask = (labels == lab["cav"]) | (labels == lab["myo"])
    # Crop to the LV (plus a margin) so distance transforms stay cheap on large scanner grids.
    nz = np.argwhere(lv_mask)
    lo = np.maximum(nz.min(0) - 6, 0)
    hi = np.minimum(nz.max(0) + 7, labels.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    pts = grid.coords().reshape(3, -1)
    world = frame.centre[:, None] + frame.axes @ pts
    inv = np.linalg.inv(affine)
    idx = inv[:3, :3] @ world + inv[:3, 3:4] - lo[:, None]
    shape = np.array(hi) - lo
    outside = np.any((idx < -0.5) | (idx > shape[:, None] - 0.5), axis=0)
    out = np.zeros(pts.shape[1], dtype=np.uint8)
    for mask, value in ((lv_mask[sl], MYOCARDIUM), ((labels == lab["cav"])[sl], CAVITY)):
        sdf = signed_distance(mask, spacing)
        vals = map_coordinates(sdf, idx, order=1, mode="nearest")
        out[(vals < 0) & ~outside] = value
    return out.reshape(grid.shape)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def grid_difference(shape_ed: tuple, aff_ed: np.ndarray, shape_es: tuple, aff_es: np.ndarray) -> str:
    """What differs between two voxel grids (shape, spacing, orientation, origin), with the values; '' if none."""
    out = []
    if tuple(shape_ed) != tuple(shape_es):
        out.append(f"shape {tuple(shape_es)} vs {tuple(shape_ed)} at ED")
    sp_ed, sp_es = np.sqrt((aff_ed[:3, :3] ** 2).sum(0)), np.sqrt((aff_es[:3, :3] ** 2).sum(0))
    if not np.allclose(sp_ed, sp_es, atol=1e-3):
        out.append(f"spacing {_fmt(sp_es)} mm vs {_fmt(sp_ed)} mm at ED")
    elif not np.allclose(aff_ed[:3, :3], aff_es[:3, :3], atol=1e-3):
        out.append(f"orientation (affine rows {_fmt(aff_es[:3, :3].ravel())} vs {_fmt(aff_ed[:3, :3].ravel())} at ED)")
    if not np.allclose(aff_ed[:3, 3], aff_es[:3, 3], atol=1e-3):
        out.append(f"origin {_fmt(aff_es[:3, 3])} mm vs {_fmt(aff_ed[:3, 3])} mm at ED")
    return "; ".join(out)


def load_pair(raw: RawSubject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load and cross-check the ED and ES label maps of one subject."""
    allowed = set(raw.labels.values())
    ed, aff_ed = load_label_map(raw.ed_path, allowed)
    es, aff_es = load_label_map(raw.es_path, allowed)
    if diff := grid_difference(ed.shape, aff_ed, es.shape, aff_es):
        raise DataError(raw.es_path, f"ES grid differs from the ED grid of {raw.ed_path}: {diff}; "
                                     "ED and ES must share one grid")
    for arr, path in ((ed, raw.ed_path), (es, raw.es_path)):
        if not np.any(arr == raw.labels["myo"]):
            raise DataError(path, f"empty myocardium (no voxel with label {raw.labels['myo']})")
        if not np.any(arr == raw.labels["cav"]):
            raise DataError(path, f"LV cavity label {raw.labels['cav']} missing")
    return ed, es, aff_ed


@dataclass
class Aligned:
    """A subject on the template grid plus what maps it back to scanner space."""

    vols: np.ndarray  # [2 (ED, ES), D, H, W] template labels
    info: dict
    frame: Frame
    affine: np.ndarray  # the source image's voxel -> scanner mm
    shape: tuple[int, int, int]  # the source image's shape


def align_subject(raw: RawSubject, grid: TemplateGrid, in_plane: str = "rv") -> Aligned:
    """Load, validate and resample one subject to the template grid, keeping the frame for the way back."""
    ed, es, affine = load_pair(raw)
    frame = estimate_frame(ed, affine, raw.labels, raw.ed_path, in_plane)
    vols = np.stack([resample_to_template(x, affine, frame, grid, raw.labels) for x in (ed, es)])
    for k, (phase, path) in enumerate((("ED", raw.ed_path), ("ES", raw.es_path))):
        if not np.any(vols[k] == MYOCARDIUM):
            raise DataError(path, f"{phase} myocardium vanished after resampling (LV outside the template field?)")
    border = np.zeros(grid.shape, dtype=bool)
    border[[0, -1], :, :] = border[:, [0, -1], :] = border[:, :, [0, -1]] = True
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    info = {"fov_clipped": bool(np.any(vols[:, border] > 0)),
            "long_axis_tilt_deg": float(np.degrees(np.arccos(min(1.0, abs(frame.axes[:, 0] @ affine[:3, 2])
                                                                 / np.linalg.norm(affine[:3, 2]))))),
            "src_spacing_mm": "x".join(f"{s:.2f}" for s in spacing), "src_shape": "x".join(map(str, ed.shape))}
    return Aligned(vols, info, frame, affine, tuple(ed.shape))


def preprocess_subject(raw: RawSubject, grid: TemplateGrid, in_plane: str = "rv") -> tuple[np.ndarray, dict]:
    """``[2, D, H, W]`` uint8 template masks (ED, ES) and alignment facts for the manifest."""
    a = align_subject(raw, grid, in_plane)
    return a.vols, a.info


def template_to_subject(volume: np.ndarray, aligned: Aligned, grid: TemplateGrid) -> np.ndarray:
    """Resample a template-grid volume (e.g. a reconstruction probability) onto the subject's own image grid.

    Each source voxel centre goes to scanner mm, then into the template frame; the template volume is
    interpolated linearly there (zero outside the template field).
    """
    idx = np.indices(aligned.shape).reshape(3, -1).astype(np.float64)
    world = aligned.affine[:3, :3] @ idx + aligned.affine[:3, 3:4]
    p = aligned.frame.axes.T @ (world - aligned.frame.centre[:, None])  # template mm
    origin = np.array([-(n - 1) / 2.0 * grid.spacing for n in grid.shape])[:, None]
    t_idx = (p - origin) / grid.spacing
    out = map_coordinates(volume.astype(np.float32), t_idx, order=1, mode="constant", cval=0.0)
    return out.reshape(aligned.shape)
