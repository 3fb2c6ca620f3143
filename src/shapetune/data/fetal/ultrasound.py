"""A simple ultrasound-like rendering of a 2D skull mask: bright bone echo, speckle, acoustic shadow."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def render_ultrasound(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 B-mode-like image of a 2D mask, the probe at the top (row 0 -> depth): the skull echoes
    brightly, tissue below bone is shadowed, everything carries Rayleigh speckle."""
    m = mask.astype(np.float32)
    echo = gaussian_filter(m, 0.8)
    # Shadow: attenuation accumulates with depth (axis 0) behind bone.
    shadow = np.exp(-0.6 * np.cumsum(m, axis=0))
    tissue = 0.25 + 0.1 * gaussian_filter(rng.standard_normal(m.shape), 3.0)
    depth = np.linspace(1.0, 0.6, m.shape[0])[:, None]  # time-gain compensation is never perfect
    img = (tissue * shadow + 1.4 * echo) * depth
    speckle = rng.rayleigh(0.8, m.shape)
    img = np.clip(img * speckle, 0, None)
    return (255 * np.clip(img / (np.percentile(img, 99.5) + 1e-6), 0, 1)).astype(np.uint8)
