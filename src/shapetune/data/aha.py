"""The AHA 17-segment model (Cerqueira et al., Circulation 2002) in template coordinates.

Angles ``alpha`` are measured in the short-axis plane from the anterior direction towards the septum
(0 = anterior, 90 = septum / RV side, 180 = inferior, 270 = lateral), in degrees. The longitudinal
position ``zeta`` runs from 0 at the apex to 1 at the base.
"""

from __future__ import annotations

import numpy as np

SEGMENT_NAMES = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral",
    7: "mid anterior", 8: "mid anteroseptal", 9: "mid inferoseptal", 10: "mid inferior",
    11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral",
    17: "apex",
}
SEPTAL_SEGMENTS = (2, 3, 8, 9, 14)
APEX_CAP_ZETA = 0.08  # below this longitudinal position a point belongs to the apical cap (segment 17)


def alpha_from_template(y_ant: np.ndarray, x_lat: np.ndarray) -> np.ndarray:
    """AHA angle in degrees [0, 360) of in-plane template offsets (anterior, lateral components)."""
    return np.degrees(np.arctan2(-x_lat, y_ant)) % 360.0


def segment_of(zeta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """AHA segment number (1..17) of each point given its longitudinal position and angle."""
    zeta = np.asarray(zeta, dtype=float)
    alpha = np.asarray(alpha, dtype=float) % 360.0
    six = (np.floor(((alpha + 30.0) % 360.0) / 60.0)).astype(int)  # 0 = anterior, 1 = anteroseptal, ...
    four = (np.floor(((alpha + 45.0) % 360.0) / 90.0)).astype(int)  # 0 = anterior, 1 = septal, ...
    seg = np.where(zeta >= 2.0 / 3.0, 1 + six, np.where(zeta >= 1.0 / 3.0, 7 + six, 13 + four))
    return np.where(zeta < APEX_CAP_ZETA, 17, seg)
