"""Conventional clinical indices measured from template masks (the seed study's conventional report).

Wall thickness is measured in 3D, normal to the wall: at every epicardial voxel (a myocardial voxel
with background beside it in-plane or towards the apex, so the open base face is excluded) it is the
distance to the nearest cavity voxel centre, which for a wall of k voxels is k * spacing. The maximal
wall thickness (MWT) is the largest median thickness over regional bins (longitudinal band x 22.5 deg
sector), robust to single-voxel roughness; AHA segment thicknesses are segment means.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from shapetune.data.aha import alpha_from_template, segment_of
from shapetune.data.template import CAVITY, MYOCARDIUM

MYOCARDIAL_DENSITY = 1.05  # g/ml
N_BANDS, N_SECTORS = 8, 16
BSA_INDEXED = {"edv_ml": "edvi_ml_m2", "esv_ml": "esvi_ml_m2", "sv_ml": "svi_ml_m2", "lv_mass_g": "lvmi_g_m2",
               "mwt_mm": "mwti_mm_m2"}


def wall_thickness_points(ed: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thickness mm, zeta, alpha deg) at every epicardial voxel of an ED template mask."""
    myo, cav = ed == MYOCARDIUM, ed == CAVITY
    if not cav.any() or not myo.any():
        return np.zeros(0), np.zeros(0), np.zeros(0)
    dist = distance_transform_edt(~cav, sampling=spacing)
    bg = ~(myo | cav)
    pad = np.pad(bg, 1, constant_values=True)
    D, H, W = ed.shape
    side = (pad[1:-1, :-2, 1:-1] | pad[1:-1, 2:, 1:-1] | pad[1:-1, 1:-1, :-2] | pad[1:-1, 1:-1, 2:]
            | pad[:-2, 1:-1, 1:-1])  # in-plane neighbours and the apical one (axis 0 runs apex -> base)
    epi = myo & side
    k, j, i = np.nonzero(epi)
    lv_k = np.nonzero((myo | cav).any(axis=(1, 2)))[0]
    apex, base = lv_k.min(), lv_k.max()
    zeta = (k - apex) / max(base - apex, 1)
    cy, cx = np.argwhere(cav).mean(axis=0)[1:]
    alpha = alpha_from_template(j - cy, i - cx)
    return dist[epi], zeta, alpha


def clinical_indices(vol: np.ndarray, spacing: float, bsa: float | None) -> dict:
    """EDV, ESV, SV, EF, LV mass, MWT and AHA segment thicknesses from one ``[2, D, H, W]`` template mask."""
    ml = spacing**3 / 1000.0
    edv = float(np.sum(vol[0] == CAVITY) * ml)
    esv = float(np.sum(vol[1] == CAVITY) * ml)
    myo_ed = float(np.sum(vol[0] == MYOCARDIUM) * ml)
    myo_es = float(np.sum(vol[1] == MYOCARDIUM) * ml)
    t, zeta, alpha = wall_thickness_points(vol[0], spacing)
    out = {"edv_ml": edv, "esv_ml": esv, "sv_ml": edv - esv, "ef_pct": 100.0 * (edv - esv) / edv if edv else np.nan,
           "lv_mass_g": myo_ed * MYOCARDIAL_DENSITY, "myo_ed_ml": myo_ed, "myo_es_ml": myo_es}
    mwt = np.nan
    if len(t):
        band = np.minimum((zeta * N_BANDS).astype(int), N_BANDS - 1)
        sector = (alpha // (360.0 / N_SECTORS)).astype(int) % N_SECTORS
        key = band * N_SECTORS + sector
        medians = [np.median(t[key == b]) for b in np.unique(key) if np.sum(key == b) >= 3]
        mwt = float(max(medians)) if medians else float(np.max(t))
        seg = segment_of(zeta, alpha)
        for s in range(1, 18):
            out[f"wt_aha{s:02d}_mm"] = float(np.mean(t[seg == s])) if np.any(seg == s) else np.nan
    out["mwt_mm"] = mwt
    if bsa and np.isfinite(bsa) and bsa > 0:
        for key, indexed in BSA_INDEXED.items():
            out[indexed] = out[key] / bsa
    return out
