"""The three standard 2D ultrasound planes of the fetal head, cut from the 3D skull.

A plane is a pose in the skull frame: an origin (the image centre, mm) and two orthonormal in-plane axes
``u`` (image rows) and ``v`` (image columns); pixel ``(r, c)`` of a ``P x P`` image with pixel size ``s``
lies at ``origin + (r - (P-1)/2) s u + (c - (P-1)/2) s v``. The same pose is the 2D NIfTI's affine.

Standard planes (unperturbed): axial trans-ventricular (horizontal, a little above the widest level),
(para-)sagittal and coronal (slightly forward of the centre). A sonographer's planes are not registered to
the 3D frame: each is rotated by up to ``max_deg`` about a random axis and shifted by up to ``max_px``
pixels in-plane (and a little along its normal), the perturbations of the reference study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from shapetune.data.fetal.skull import SkullParams

VIEWS = ("axial", "sagittal", "coronal")  # acquired always, frequently, sometimes
AXIAL_LEVEL = 0.12  # trans-ventricular level, fraction of the vertical semi-axis above the centre
CORONAL_LEVEL = 0.10  # fraction of the occipito-frontal semi-axis forward of the centre
# The sagittal plane sits a little off the midline: exactly on it, the open sagittal suture would leave
# the whole vault out of the image.
SAGITTAL_OFFSET = 0.15  # fraction of the biparietal semi-axis


@dataclass(frozen=True)
class PlanePose:
    origin: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)

    def points(self, size: int, spacing: float) -> np.ndarray:
        """Physical points ``[3, size, size]`` of the plane's pixel centres."""
        k = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * spacing
        r, c = np.meshgrid(k, k, indexing="ij")
        return (np.asarray(self.origin)[:, None, None] + np.asarray(self.u)[:, None, None] * r
                + np.asarray(self.v)[:, None, None] * c)

    def affine(self, size: int, spacing: float) -> np.ndarray:
        """4x4 affine from pixel index ``(r, c, 0)`` to skull-frame mm (the plane's NIfTI header)."""
        u, v = np.asarray(self.u) * spacing, np.asarray(self.v) * spacing
        aff = np.eye(4)
        aff[:3, 0], aff[:3, 1], aff[:3, 2] = u, v, self.normal * spacing
        aff[:3, 3] = np.asarray(self.origin) - (size - 1) / 2.0 * (u + v)
        return aff

    @classmethod
    def from_affine(cls, aff: np.ndarray, size: int) -> "PlanePose":
        u, v = aff[:3, 0], aff[:3, 1]
        s = float(np.linalg.norm(u))
        origin = aff[:3, 3] + (size - 1) / 2.0 * (u + v)
        return cls(tuple(origin), tuple(u / s), tuple(v / s))

    def as_list(self) -> list[float]:
        return [*self.origin, *self.u, *self.v]

    @classmethod
    def from_list(cls, x) -> "PlanePose":
        x = [float(t) for t in x]
        return cls(tuple(x[:3]), tuple(x[3:6]), tuple(x[6:9]))


def standard_poses(p: SkullParams) -> dict[str, PlanePose]:
    """The unperturbed standard planes of skull ``p``."""
    a, b, c = p.semi_axes
    ex, ey, ez = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
    return {"axial": PlanePose((0.0, 0.0, AXIAL_LEVEL * c), ex, ey),
            "sagittal": PlanePose((0.0, SAGITTAL_OFFSET * b, 0.0), ex, ez),
            "coronal": PlanePose((CORONAL_LEVEL * a, 0.0, 0.0), ey, ez)}


def perturb(pose: PlanePose, rng: np.random.Generator, spacing: float, max_deg: float = 10.0,
            max_px: float = 7.0, normal_px: float = 2.0) -> PlanePose:
    """The pose as a sonographer would acquire it: a random rotation up to ``max_deg`` about the plane's
    origin, then a shift up to ``max_px`` pixels along each in-plane axis and ``normal_px`` along the normal."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(axis * np.radians(rng.uniform(-max_deg, max_deg))).as_matrix()
    u, v = rot @ np.asarray(pose.u), rot @ np.asarray(pose.v)
    n = np.cross(u, v)
    t = rng.uniform(-1, 1, 3) * np.array([max_px, max_px, normal_px]) * spacing
    origin = np.asarray(pose.origin) + t[0] * u + t[1] * v + t[2] * n
    return PlanePose(tuple(origin), tuple(u), tuple(v))


def cut_plane(volume: np.ndarray, spacing: float, pose: PlanePose, size: int | None = None) -> np.ndarray:
    """The 2D mask where ``pose`` cuts a binary cubic ``volume`` (trilinear, then > 0.5), uint8 ``[P, P]``."""
    g = volume.shape[0]
    size = size or g
    idx = pose.points(size, spacing) / spacing + (g - 1) / 2.0
    vals = map_coordinates(volume.astype(np.float32), idx, order=1, mode="constant", cval=0.0)
    return (vals > 0.5).astype(np.uint8)


def _rotated(pose: PlanePose, tilt_u: float, tilt_v: float, spin: float, offset: float) -> PlanePose:
    """``pose`` tilted about its in-plane axes, spun about its normal (degrees) and moved along it (mm)."""
    n = pose.normal
    rot = (Rotation.from_rotvec(np.radians(tilt_u) * np.asarray(pose.u))
           * Rotation.from_rotvec(np.radians(tilt_v) * np.asarray(pose.v))
           * Rotation.from_rotvec(np.radians(spin) * n)).as_matrix()
    return PlanePose(tuple(np.asarray(pose.origin) + offset * n), tuple(rot @ pose.u), tuple(rot @ pose.v))


def fit_pose(volume: np.ndarray, spacing: float, plane: np.ndarray, start: PlanePose,
             max_deg: float = 12.0, max_mm: float = 6.0) -> PlanePose:
    """Recover where a 2D mask was cut from a 3D mask, near ``start``: an exhaustive, then finer, search over
    the plane's tilt, spin and offset along its normal for the cut with the best Dice against the 2D mask,
    the in-plane shift from FFT cross-correlation. A quality check of the generator, not a registration
    tool: it assumes the pose is within ``max_deg`` / ``max_mm`` of ``start``."""
    size = plane.shape[0]
    ref = np.fft.rfft2(plane.astype(np.float32))
    n_ref = float(plane.sum())

    def score(pose: PlanePose) -> tuple[float, tuple[int, int]]:  # Dice at the best in-plane shift
        cut = cut_plane(volume, spacing, pose, size).astype(np.float32)
        xc = np.fft.irfft2(ref * np.conj(np.fft.rfft2(cut)), s=plane.shape)
        k = np.unravel_index(int(np.argmax(xc)), xc.shape)
        shift = tuple(int(i if i <= size // 2 else i - size) for i in k)
        return float(2 * xc[k] / (cut.sum() + n_ref + 1e-6)), shift

    best, centre = None, (0.0, 0.0, 0.0, 0.0)
    for step_deg, step_mm in ((3.0, 2.0), (1.0, 0.7), (0.35, 0.25)):
        reach_deg = max_deg if best is None else 2 * step_deg
        reach_mm = max_mm if best is None else 2 * step_mm
        tilts = np.arange(-reach_deg, reach_deg + 1e-9, step_deg)
        offsets = np.arange(-reach_mm, reach_mm + 1e-9, step_mm)
        for a in tilts + centre[0]:
            for b in tilts + centre[1]:
                for c in tilts + centre[2]:
                    for d in offsets + centre[3]:
                        sc, shift = score(_rotated(start, a, b, c, d))
                        if best is None or sc > best[0]:
                            best = (sc, (a, b, c, d), shift)
        centre = best[1]
    pose = _rotated(start, *best[1])
    dr, dc = best[2]  # the 2D mask is the cut moved by (dr, dc) pixels: the plane's origin moves the other way
    origin = np.asarray(pose.origin) - spacing * (dr * np.asarray(pose.u) + dc * np.asarray(pose.v))
    return PlanePose(tuple(origin), pose.u, pose.v)


def pose_error(a: PlanePose, b: PlanePose) -> tuple[float, float]:
    """Angle between two planes' frames (degrees) and distance between their origins (mm)."""
    ra = np.stack([a.u, a.v, a.normal], axis=1)
    rb = np.stack([b.u, b.v, b.normal], axis=1)
    angle = Rotation.from_matrix(ra @ rb.T).magnitude()
    return float(np.degrees(angle)), float(np.linalg.norm(np.subtract(a.origin, b.origin)))


def plane_error(a: PlanePose, b: PlanePose) -> tuple[float, float]:
    """How far apart two cutting planes are, whatever their in-image frames: the angle between their normals
    (degrees) and the distance of ``b``'s origin from plane ``a`` (mm)."""
    cos = abs(float(np.dot(a.normal, b.normal)))
    return float(np.degrees(np.arccos(min(1.0, cos)))), abs(float(np.dot(a.normal, np.subtract(b.origin, a.origin))))
