"""A synthetic fetal skull: the calvarial shell with sutures and fontanelles, sized by gestational age.

Skull frame (millimetres, origin at the centre of the head's bounding ellipsoid):
  axis 0 (x) occiput -> forehead (occipito-frontal), axis 1 (y) right -> left (biparietal),
  axis 2 (z) skull base -> vertex.
Size follows gestational age (GA, weeks) through Hadlock's biparietal diameter (BPD) curve; the
occipito-frontal diameter comes from the cephalic index CI = 100 BPD / OFD, which spans
dolichocephalic (< 75) through normal to brachycephalic (> 85) heads. Smooth individual variation is a
sum of broad von Mises bumps on the radial function; the vault narrows towards the forehead (egg shape).
The segmentation is the echogenic calvarial band as delineated in ultrasound (thicker than the bone),
open at the cranial base, interrupted by the sagittal, metopic, coronal and lambdoid sutures and by the
anterior (diamond) and posterior (triangle) fontanelles, which narrow as GA increases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

GA_RANGE = (20.0, 36.0)
CI_RANGE = (72.0, 92.0)  # beyond these the head would not fit the default field of view
FOV_MM = 132.0  # field of view of the cubic grid; holds the largest head (36 weeks, CI 72) with a margin
N_BUMPS = 6


def hadlock_bpd_mm(ga: float) -> float:
    """Biparietal diameter (outer-outer, mm) at gestational age ``ga`` weeks (Hadlock et al. 1984)."""
    return 10.0 * (-3.08 + 0.41 * ga - 0.000061 * ga**3)


@dataclass(frozen=True)
class SkullParams:
    """Everything that defines one skull (all lengths in mm)."""

    subject: str
    ga_weeks: float
    cephalic_index: float
    bpd_mm: float
    ofd_mm: float
    height_mm: float  # base-to-vertex semi-axis x 2
    thickness_mm: float
    egg: float  # relative narrowing of the biparietal width towards the forehead
    bump_dirs: tuple[tuple[float, float, float], ...]
    bump_amps: tuple[float, ...]
    bump_kappa: float
    suture_mm: float
    anterior_fontanelle_mm: float  # half-diagonal of the diamond along x
    posterior_fontanelle_mm: float
    coronal_pos: float  # coronal suture at x = coronal_pos * a (forehead side)
    lambdoid_pos: float  # lambdoid suture at x = -lambdoid_pos * a
    base_cut: float  # the vault ends at z = -base_cut * c (lower at the occiput)

    @property
    def semi_axes(self) -> tuple[float, float, float]:
        return self.ofd_mm / 2, self.bpd_mm / 2, self.height_mm / 2

    @property
    def shape_class(self) -> str:
        ci = self.cephalic_index
        return "dolichocephalic" if ci < 75 else "brachycephalic" if ci > 85 else "normal"

    def record(self) -> dict:
        d = asdict(self)
        for k in ("bump_dirs", "bump_amps"):
            d[k] = np.asarray(d[k]).ravel().tolist()
        d["shape_class"] = self.shape_class
        return d

    @classmethod
    def from_record(cls, rec) -> SkullParams:
        """The parameters back from :meth:`record` (a dict, or a row of a cohort's ``ground_truth.parquet``)."""
        d = {f.name: rec[f.name] for f in fields(cls)}
        d["bump_dirs"] = tuple(map(tuple, np.asarray(d["bump_dirs"], dtype=float).reshape(-1, 3)))
        d["bump_amps"] = tuple(float(a) for a in np.asarray(d["bump_amps"], dtype=float))
        return cls(**d)


def sample_skull(subject: str, seed: int) -> SkullParams:
    """Draw one skull's parameters from its own random stream."""
    rng = np.random.default_rng(seed)
    ga = float(rng.uniform(*GA_RANGE))
    bpd = hadlock_bpd_mm(ga) * float(rng.normal(1.0, 0.04))
    ci = float(np.clip(rng.normal(80.5, 4.5), *CI_RANGE))
    ofd = bpd * 100.0 / ci
    height = bpd * float(rng.uniform(0.78, 0.92))
    dirs = rng.normal(size=(N_BUMPS, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    young = (GA_RANGE[1] - ga) / (GA_RANGE[1] - GA_RANGE[0])  # 1 at 20 weeks, 0 at 36
    return SkullParams(
        subject=subject, ga_weeks=ga, cephalic_index=ci, bpd_mm=bpd, ofd_mm=ofd, height_mm=height,
        thickness_mm=float(rng.uniform(4.6, 5.2) + 1.2 * (1 - young)), egg=float(rng.uniform(0.0, 0.10)),
        bump_dirs=tuple(map(tuple, dirs.round(6))), bump_amps=tuple(rng.normal(0.0, 0.012, N_BUMPS).round(6)),
        bump_kappa=float(rng.uniform(2.0, 4.0)), suture_mm=float(rng.uniform(2.0, 3.0) + 1.0 * young),
        anterior_fontanelle_mm=float(rng.uniform(9.0, 12.0) + 6.0 * young),
        posterior_fontanelle_mm=float(rng.uniform(4.0, 6.0) + 3.0 * young),
        coronal_pos=float(rng.uniform(0.12, 0.28)), lambdoid_pos=float(rng.uniform(0.50, 0.62)),
        base_cut=float(rng.uniform(0.35, 0.5)))


def outer_radius(p: SkullParams, d: np.ndarray) -> np.ndarray:
    """Outer surface radius along unit directions ``d`` (``[3, ...]``)."""
    a, b, c = p.semi_axes
    b_eff = b * (1.0 - p.egg * d[0])  # narrower towards the forehead (+x)
    r = 1.0 / np.sqrt((d[0] / a) ** 2 + (d[1] / b_eff) ** 2 + (d[2] / c) ** 2)
    bumps = np.zeros_like(r)
    for u, amp in zip(p.bump_dirs, p.bump_amps, strict=True):
        cos = d[0] * u[0] + d[1] * u[1] + d[2] * u[2]
        bumps += amp * np.exp(p.bump_kappa * (cos - 1.0))
    return r * (1.0 + bumps)


def skull_mask(p: SkullParams, pts: np.ndarray) -> np.ndarray:
    """Boolean calvarium at physical points ``pts`` (``[3, ...]`` mm in the skull frame)."""
    x, y, z = pts
    r = np.sqrt(x**2 + y**2 + z**2)
    d = pts / np.maximum(r, 1e-6)
    ro = outer_radius(p, d)
    a, _, c = p.semi_axes
    shell = (r <= ro) & (r >= ro - p.thickness_mm)
    shell &= z >= -c * (p.base_cut + 0.25 * np.clip(-x / a, 0, 1))  # open base, lower at the occiput
    half = p.suture_mm / 2
    xc = p.coronal_pos * a - 0.25 * np.maximum(z, 0)  # the coronal suture leans back towards the vertex
    xl = -p.lambdoid_pos * a + 0.35 * np.maximum(z, 0)
    upper = z > 0.15 * c
    gaps = (np.abs(y) < half) & (z > 0.2 * c) & (x > xl)  # sagittal suture (and metopic, forward of it)
    gaps |= (np.abs(x - xc) < half) & upper  # coronal sutures
    gaps |= (np.abs(x - xl) < half) & (z > 0.0)  # lambdoid sutures
    fa = p.anterior_fontanelle_mm
    gaps |= (np.abs(x - xc) / fa + np.abs(y) / (0.8 * fa) < 1.0) & upper  # anterior fontanelle (diamond)
    pf = p.posterior_fontanelle_mm
    gaps |= (np.clip(x - xl, 0, None) / pf + np.abs(y) / pf < 1.0) & (x >= xl - half) & (z > 0.0)  # posterior
    return shell & ~gaps


def grid_coords(grid: int, spacing: float) -> np.ndarray:
    """Physical coordinates ``[3, G, G, G]`` of a cubic grid centred on the skull frame's origin."""
    ax = (np.arange(grid, dtype=np.float64) - (grid - 1) / 2.0) * spacing
    return np.stack(np.meshgrid(ax, ax, ax, indexing="ij"))


def default_spacing(grid: int) -> float:
    """Voxel size (mm) that makes a ``grid``^3 volume span :data:`FOV_MM`."""
    return FOV_MM / grid


def render_skull(p: SkullParams, grid: int, spacing: float | None = None) -> np.ndarray:
    """The skull as a uint8 ``grid``^3 mask (1 = calvarium)."""
    spacing = spacing or default_spacing(grid)
    return skull_mask(p, grid_coords(grid, spacing)).astype(np.uint8)
