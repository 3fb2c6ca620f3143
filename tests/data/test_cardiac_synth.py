"""The generator: measured (not parametric) wall thickness, EF and volume conservation per class."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from shapetune.data.cardiac_synth import HCM, HEALTHY, RAW_LV, RAW_MYO, render, sample_subject
from shapetune.data.indices import clinical_indices
from shapetune.data.lv_model import Bump
from shapetune.data.template import CAVITY, MYOCARDIUM, TemplateGrid

GRID = TemplateGrid.cube(64, 2.0)


def _measure(args):
    label, seed, phenotype, borderline = args
    s = sample_subject(f"S{seed}", label, seed, borderline_fraction=1.0 if borderline else 0.0, phenotype=phenotype)
    vols = []
    for phase in ("ED", "ES"):
        raw = render(s, phase, GRID.coords())
        v = np.zeros_like(raw)
        v[raw == RAW_MYO], v[raw == RAW_LV] = MYOCARDIUM, CAVITY
        vols.append(v)
    ci = clinical_indices(np.stack(vols), GRID.spacing, s.demographics.bsa)
    return {"label": label, "phenotype": s.phenotype, "borderline": s.borderline, **ci}


@pytest.fixture(scope="module")
def measured() -> pd.DataFrame:
    jobs = [(HEALTHY, 100 + i, None, False) for i in range(14)]
    jobs += [(HCM, 200 + i, p, False) for i, p in enumerate(["septal", "concentric", "apical", "midventricular"] * 3)]
    jobs += [(HCM, 300 + i, None, True) for i in range(6)]
    with ProcessPoolExecutor(2) as ex:
        return pd.DataFrame(list(ex.map(_measure, jobs)))


def test_wall_thickness_ranges_measured_from_masks(measured):
    healthy = measured[measured.label == HEALTHY]
    hcm = measured[(measured.label == HCM) & ~measured.borderline]
    border = measured[(measured.label == HCM) & measured.borderline]
    assert healthy.mwt_mm.between(6.0, 12.0).all(), healthy.mwt_mm.tolist()
    assert (hcm.mwt_mm >= 15.0).all(), hcm[["phenotype", "mwt_mm"]].to_dict("records")
    assert border.mwt_mm.between(13.0, 16.0).all(), border.mwt_mm.tolist()
    assert set(hcm.phenotype) == {"septal", "concentric", "apical", "midventricular"}


def test_ejection_fraction_ranges_measured_from_masks(measured):
    healthy = measured[measured.label == HEALTHY]
    hcm = measured[measured.label == HCM]
    assert healthy.ef_pct.between(55.0, 70.0).all(), healthy.ef_pct.tolist()
    assert hcm.ef_pct.between(60.0, 80.0).all(), hcm.ef_pct.tolist()
    # HCM: smaller cavity than healthy volunteers on average.
    assert hcm.edvi_ml_m2.mean() < healthy.edvi_ml_m2.mean()


def test_myocardial_volume_conserved_ed_to_es(measured):
    rel = (measured.myo_es_ml - measured.myo_ed_ml).abs() / measured.myo_ed_ml
    assert (rel < 0.05).all(), rel.max()


def test_septal_hcm_is_thickest_in_septal_segments(measured):
    sept = measured[measured.phenotype == "septal"]
    segs = [f"wt_aha{s:02d}_mm" for s in range(1, 17)]
    best = sept[segs].to_numpy().argmax(axis=1) + 1
    assert set(best) <= {2, 3, 8, 9, 14}, best


def test_subject_is_deterministic_in_seed():
    a, b = sample_subject("x", HCM, 42), sample_subject("x", HCM, 42)
    assert a.phenotype == b.phenotype and a.ed.a == b.ed.a and a.es.thickness_scale == b.es.thickness_scale
    pts = TemplateGrid.cube(24, 5.0).coords()
    assert np.array_equal(render(a, "ES", pts), render(b, "ES", pts))
    assert sample_subject("x", HCM, 43).ed.a != a.ed.a


def test_analytic_volumes_match_voxel_counts():
    s = sample_subject("x", HCM, 7, phenotype="septal")
    v = render(s, "ED", GRID.coords())
    cav_ml, myo_ml, _ = s.ed.volumes()
    assert abs((v == RAW_LV).sum() * 8e-3 - cav_ml) / cav_ml < 0.03
    assert abs((v == RAW_MYO).sum() * 8e-3 - myo_ml) / myo_ml < 0.03


def test_bump_wraps_around_angle():
    b = Bump(zeta=0.5, sigma_zeta=0.2, alpha=350.0, sigma_alpha=20.0)
    assert b.profile(np.array(0.5), np.array(10.0)) == pytest.approx(b.profile(np.array(0.5), np.array(330.0)))


def test_bad_knob_is_refused():
    with pytest.raises(ValueError, match="borderline_fraction"):
        sample_subject("x", HCM, 1, borderline_fraction=1.5)
    with pytest.raises(ValueError, match="unknown HCM phenotype"):
        sample_subject("x", HCM, 1, phenotype="dilated")
