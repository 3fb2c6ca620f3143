"""Synthetic subjects: demographics, phenotype, ED and ES geometry, and label rendering at any points.

Healthy volunteers get a maximal wall thickness (MWT) of 7-11 mm (6-12 mm once measured from voxel
masks); HCM subjects 18-28 mm (>= 15 mm measured) with one of the clinical phenotypes, except a
controlled ``borderline_fraction`` of mild septal HCM at 13.8-15.4 mm (13-16 mm measured). ES is solved so
that the ejection fraction hits its target and the myocardial volume equals the ED one (analytic volumes,
so it is exact for the model and within a few percent once voxelised).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation

from shapetune.data.lv_model import N_HARM, Bump, LVShape

PHENOTYPES = {"septal": 0.6, "concentric": 0.15, "apical": 0.12, "midventricular": 0.13}
# Measured MWT (normal to the wall, from voxel masks) / field MWT (along prolate lambda-lines), per phenotype:
# a bulge that grows into the cavity curves the endocardium, so the normal thickness is shorter. Measured
# over 12 subjects each at 2 mm (see tests/data/test_cardiac_synth.py); targets are divided by it.
MWT_MEASURED_OVER_FIELD = {"healthy": 1.0, "septal": 0.93, "concentric": 1.0, "apical": 0.83, "midventricular": 0.87}
HEALTHY, HCM = 0, 1
# ACDC label convention, used by every raw file the generator writes.
RAW_RV, RAW_MYO, RAW_LV = 1, 2, 3


@dataclass
class Demographics:
    age: float
    sex: str
    height_cm: float
    weight_kg: float

    @property
    def bsa(self) -> float:
        """Body surface area (m^2), Mosteller formula."""
        return float(np.sqrt(self.height_cm * self.weight_kg / 3600.0))


@dataclass
class RVShape:
    centre_x: float  # mm along x_p (negative = septal side)
    semi: tuple[float, float, float]  # semi-axes along x_p, y_p, z_p
    centre_z: float


@dataclass
class Subject:
    """Everything needed to render one synthetic subject at ED and ES."""

    subject_id: str
    label: int
    phenotype: str  # "healthy" or one of PHENOTYPES
    borderline: bool
    demographics: Demographics
    ed: LVShape
    es: LVShape
    rv_ed: RVShape
    rv_es: RVShape
    z_centroid: float  # ED LV centroid along z_p, placed at the template origin
    target_mwt: float
    target_ef: float
    seed: int

    def ground_truth(self) -> dict:
        """Flat dict of ground-truth parameters for the manifest (volumes from the analytic model)."""
        v_ed, m_ed, _ = self.ed.volumes()
        v_es, m_es, _ = self.es.volumes()
        bump = self.ed.bumps[0] if self.ed.bumps else None
        return {
            "gt_mwt_mm": self.target_mwt,  # expected when measured normal to the wall
            "gt_field_mwt_mm": self.ed.max_thickness(),
            "gt_ef": (v_ed - v_es) / v_ed,
            "gt_edv_ml": v_ed,
            "gt_esv_ml": v_es,
            "gt_myo_ed_ml": m_ed,
            "gt_myo_es_ml": m_es,
            "gt_a_mm": self.ed.a,
            "gt_c_mm": self.ed.c,
            "gt_t0_mm": self.ed.t0,
            "gt_bump_zeta": bump.zeta if bump else np.nan,
            "gt_bump_alpha": (bump.alpha if bump and bump.alpha is not None else np.nan),
            "gt_bump_mm": bump.amplitude if bump else 0.0,
            "gt_es_thickening": self.es.thickness_scale,
        }


def sample_demographics(rng: np.random.Generator, label: int) -> Demographics:
    male = rng.random() < (0.62 if label == HCM else 0.5)
    age = float(np.clip(rng.normal(50 if label == HCM else 42, 13), 18, 85))
    height = float(rng.normal(176, 7) if male else rng.normal(163, 6.5))
    bmi = float(np.clip(rng.normal(26.5 if label == HCM else 25.5, 3.8), 17, 42))
    weight = bmi * (height / 100.0) ** 2
    return Demographics(round(age, 1), "M" if male else "F", round(height, 1), round(weight, 1))


def _bump_for(phenotype: str, rng: np.random.Generator) -> Bump:
    if phenotype == "septal":  # anteroseptal / inferoseptal, basal to mid
        return Bump(zeta=float(np.clip(rng.normal(0.7, 0.08), 0.5, 0.9)), sigma_zeta=rng.uniform(0.18, 0.28),
                    alpha=float(rng.normal(95, 12)), sigma_alpha=rng.uniform(28, 42))
    if phenotype == "concentric":
        return Bump(zeta=0.65, sigma_zeta=rng.uniform(0.45, 0.6), alpha=None)
    if phenotype == "apical":
        return Bump(zeta=rng.uniform(0.08, 0.18), sigma_zeta=rng.uniform(0.12, 0.17), alpha=None)
    if phenotype == "midventricular":
        return Bump(zeta=rng.uniform(0.42, 0.55), sigma_zeta=rng.uniform(0.1, 0.14), alpha=None)
    raise ValueError(f"unknown HCM phenotype {phenotype!r}; choose from {sorted(PHENOTYPES)}")


def _fit_amplitude(shape: LVShape, target: float) -> None:
    """Scale the healthy profile (no bumps) or the bump amplitude so the field's MWT equals ``target``."""
    if not shape.bumps:
        shape.t0 *= target / shape.max_thickness()
        return
    lo, hi = 0.0, 40.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        shape.bumps[0].amplitude = mid
        lo, hi = (mid, hi) if shape.max_thickness() < target else (lo, mid)
    shape.bumps[0].amplitude = 0.5 * (lo + hi)


def _root(f, lo: float, hi: float) -> float:
    """Brent's root of ``f`` on [lo, hi]; the better end when there is no sign change (saturated target)."""
    flo, fhi = f(lo), f(hi)
    if flo * fhi > 0:
        return lo if abs(flo) < abs(fhi) else hi
    return brentq(f, lo, hi, xtol=1e-4)


def _solve_es(ed: LVShape, ef: float, long_shortening: float) -> LVShape:
    """ES geometry: radial contraction for the target EF, wall thickening conserving myocardial volume."""
    v_ed, m_ed, _ = ed.volumes()
    es = copy.deepcopy(ed)
    es.c = ed.c * long_shortening
    es.z_shift = es.c - ed.c  # apex stays put, the base descends

    def set_radial(s: float) -> None:
        es.a = ed.a * s
        es.deform = ed.deform * s

    def ef_gap(s: float) -> float:
        set_radial(s)
        return es.volumes()[0] / v_ed - (1 - ef)

    def myo_gap(k: float) -> float:
        es.thickness_scale = k
        return es.volumes()[1] - m_ed

    k = 1.4
    for _ in range(2):
        es.thickness_scale = k
        set_radial(_root(ef_gap, 0.2, 0.999))
        k = _root(myo_gap, 0.8, 4.0)
    es.thickness_scale = k
    set_radial(_root(ef_gap, 0.2, 0.999))
    return es


def sample_subject(subject_id: str, label: int, seed: int, borderline_fraction: float = 0.15,
                   phenotype: str | None = None) -> Subject:
    """Draw one subject's demographics and ED/ES geometry, deterministic in ``seed``."""
    if not 0.0 <= borderline_fraction <= 1.0:
        raise ValueError(f"borderline_fraction must be in [0, 1], got {borderline_fraction}")
    rng = np.random.default_rng(seed)
    demo = sample_demographics(rng, label)
    scale = (demo.bsa / 1.9) ** (1.0 / 3.0) * (1.03 if demo.sex == "M" else 0.97)
    a = 25.5 * scale * rng.normal(1.0, 0.05)
    borderline = False
    if label == HCM:
        borderline = rng.random() < borderline_fraction
        if phenotype is None:
            names = list(PHENOTYPES)
            phenotype = "septal" if borderline else str(rng.choice(names, p=list(PHENOTYPES.values())))
        a *= rng.uniform(0.93, 1.0) if borderline else rng.uniform(0.84, 0.94)
    else:
        phenotype = "healthy"
    harm = rng.normal(0.0, 0.03, size=(N_HARM, N_HARM, 2))
    harm[0, 0] = 0.0
    decay = 1.0 / (1.0 + np.add.outer(np.arange(N_HARM), np.arange(N_HARM)))[..., None]
    deform = rng.normal(0.0, 1.5, size=(N_HARM, N_HARM, 2)) * decay
    deform[0, 0] = 0.0
    ed = LVShape(a=a, c=a * rng.uniform(2.0, 2.4), mu_base=rng.uniform(105, 115),
                 ellipticity=rng.uniform(0.93, 1.07), t0=8.0, apex_ratio=rng.uniform(0.55, 0.75),
                 septal_ratio=rng.uniform(1.0, 1.1), base_harm=harm, deform=deform,
                 inward_fraction=rng.uniform(0.25, 0.4) if phenotype == "concentric" else rng.uniform(0.5, 0.7))
    if label == HCM:
        _fit_amplitude(ed, rng.uniform(8.0, 11.0))  # the non-hypertrophied wall
        ed.bumps = [_bump_for(phenotype, rng)]
        target = rng.uniform(13.8, 15.4) if borderline else rng.uniform(18.0, 28.0)
        ef = rng.uniform(63, 77) / 100.0
        long_shortening = rng.uniform(0.86, 0.92)
    else:
        target = rng.uniform(7.0, 11.0)
        ef = rng.uniform(57, 68) / 100.0
        long_shortening = rng.uniform(0.83, 0.89)
    _fit_amplitude(ed, target / MWT_MEASURED_OVER_FIELD[phenotype])
    for _ in range(4):  # keep the ED cavity plausible (EDVi >= 30 ml/m^2): less of the bulge grows inwards
        if ed.volumes()[0] / demo.bsa >= 30.0 or not ed.bumps:
            break
        ed.inward_fraction *= 0.6
        _fit_amplitude(ed, target / MWT_MEASURED_OVER_FIELD[phenotype])
    es = _solve_es(ed, ef, long_shortening)
    _, _, zc = ed.volumes()
    # The RV ellipsoid overlaps the septum; subtracting the LV leaves the crescent that wraps it.
    rv_ed = RVShape(centre_x=-(ed.a + 4.0 * scale), semi=(rng.uniform(24, 30) * scale,
                    (ed.a + 8) * rng.uniform(1.25, 1.45), ed.c * rng.uniform(0.65, 0.8)),
                    centre_z=ed.z_base + 0.45 * ed.c)
    f = rng.uniform(0.8, 0.88)
    rv_es = RVShape(centre_x=rv_ed.centre_x * 0.95, semi=tuple(s * f for s in rv_ed.semi), centre_z=rv_ed.centre_z)
    return Subject(subject_id, label, phenotype, borderline, demo, ed, es, rv_ed, rv_es, zc, target, ef, seed)


def template_to_local(subject: Subject, pts: np.ndarray) -> np.ndarray:
    """Template mm ``[3, ...]`` (apex->base, inferior->anterior, septum->lateral) -> local prolate frame."""
    return np.stack([pts[2], pts[1], subject.z_centroid - pts[0]])


def render(subject: Subject, phase: str, pts: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """Raw labels (1 RV, 2 LV myocardium, 3 LV cavity) at template points ``[3, ...]`` (mm).

    ``noise`` (``[4, ...]``, mm) perturbs the endocardium, epicardium, base plane and RV boundaries to give
    segmentation-like roughness; None renders the exact model surfaces.
    """
    shape, rv = (subject.ed, subject.rv_ed) if phase == "ED" else (subject.es, subject.rv_es)
    if phase not in ("ED", "ES"):
        raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
    loc = template_to_local(subject, pts)
    s_endo, s_epi, s_base = shape.signed_fields(loc)
    n = np.zeros((4,) + s_endo.shape) if noise is None else noise
    inside_base = s_base < n[2]
    lv = (s_epi < n[1]) & inside_base
    cav = (s_endo < n[0]) & inside_base
    q = ((loc[0] - rv.centre_x) / rv.semi[0]) ** 2 + (loc[1] / rv.semi[1]) ** 2 \
        + ((loc[2] + shape.z_shift - rv.centre_z) / rv.semi[2]) ** 2
    rv_mask = (q < 1.0 + n[3] / max(rv.semi[0], 1.0)) & ~lv & (s_base < n[2] + 6.0)
    out = np.zeros(s_endo.shape, dtype=np.uint8)
    out[rv_mask] = RAW_RV
    out[lv] = RAW_MYO
    out[cav] = RAW_LV
    return out


def roughness_noise(shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator,
                    amplitude_mm: float, in_plane_only_axis: int | None = None) -> np.ndarray:
    """Four smooth random fields (mm) that jitter the boundaries like a manual/automatic segmentation."""
    from scipy.ndimage import gaussian_filter

    sigma = [max(1.0, 1.5 / s * 1.0) for s in spacing]
    if in_plane_only_axis is not None:
        sigma[in_plane_only_axis] = 0.0  # thick slices are segmented one by one
    out = np.empty((4,) + tuple(shape))
    for i in range(4):
        f = gaussian_filter(rng.standard_normal(shape), sigma)
        out[i] = f / (f.std() + 1e-12) * amplitude_mm
    return out


def random_pose(rng: np.random.Generator, max_deg: float, max_shift_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A small random rigid transform (rotation matrix, translation)."""
    rot = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.radians(max_deg) * rng.random()).as_matrix()
    return rot, rng.uniform(-max_shift_mm, max_shift_mm, size=3)


def subject_record(subject: Subject) -> dict:
    """Manifest row: identity, demographics and ground truth."""
    d = asdict(subject.demographics)
    return {"subject": subject.subject_id, "label": subject.label, "group": "HCM" if subject.label else "NOR",
            "phenotype": subject.phenotype, "borderline": subject.borderline, **d, "bsa": subject.demographics.bsa,
            "seed": subject.seed, **subject.ground_truth()}
