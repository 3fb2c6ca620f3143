"""The template grid and its orientation convention, shared by the generator and preprocessing.

Template frame (right-handed, millimetres, origin at the grid centre):
  axis 0 (D) runs apex -> base along the LV long axis,
  axis 1 (H) runs inferior -> anterior,
  axis 2 (W) runs septum -> lateral wall (the RV lies at low W).
A short-axis slice ``mask[k]`` shown with ``origin="lower"`` gives the standard cardiology view:
anterior at the top, septum and RV on the left. The LV (myocardium + cavity) centroid at ED sits at
the grid centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ORIENTATION = {
    "axis0": "apex->base (LV long axis)",
    "axis1": "inferior->anterior",
    "axis2": "septum->lateral (RV at low index)",
    "origin": "LV (myocardium+cavity) centroid at end-diastole at the grid centre",
    "display": "short-axis slice mask[k] with origin='lower' shows anterior up, septum left",
}

# Label values of a prepared mask volume.
BACKGROUND, MYOCARDIUM, CAVITY = 0, 1, 2


@dataclass(frozen=True)
class TemplateGrid:
    """A cubic-or-not template grid: ``shape`` voxels of ``spacing`` mm, centred on the LV."""

    shape: tuple[int, int, int] = (64, 64, 64)
    spacing: float = 2.0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"template grid shape must be 3 sizes >= 8, got {self.shape}")
        if not (0.1 <= self.spacing <= 10.0):
            raise ValueError(f"template spacing must be within 0.1..10 mm, got {self.spacing}")

    @classmethod
    def cube(cls, size: int, spacing: float) -> "TemplateGrid":
        return cls((size, size, size), float(spacing))

    def coords(self) -> np.ndarray:
        """Physical template coordinates (mm) of every voxel centre, shape ``[3, D, H, W]``."""
        axes = [(np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * self.spacing for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"))

    def affine(self) -> np.ndarray:
        """Voxel index -> template mm (a scaled, centred identity)."""
        aff = np.eye(4)
        aff[:3, :3] *= self.spacing
        aff[:3, 3] = [-(n - 1) / 2.0 * self.spacing for n in self.shape]
        return aff

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d
