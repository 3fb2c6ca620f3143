"""Batch augmentation on the template grid that respects anatomy (no flips).

Small rotations about the long axis (template axis 0), translations and a smooth elastic jitter, applied
with one resampling (``grid_sample``) and re-binarised at 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shapetune.config import AugmentConfig


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """``x``: ``[B, C, D, H, W]`` binary float masks -> augmented copies (same shape)."""
    if not cfg.enabled:
        return x
    B, _, D, H, W = x.shape
    dev = x.device

    def u(*shape):  # uniform in [-1, 1), drawn on CPU for reproducibility across devices
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(dev)

    ang = u(B) * math.radians(cfg.rotate_deg)
    c, s = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(B, 3, 4, device=dev)
    # grid_sample coordinates are (x=W, y=H, z=D): rotate in the (W, H) short-axis plane, keep D.
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    theta[:, 2, 2] = 1.0
    shift = u(B, 3) * cfg.translate_vox
    theta[:, 0, 3] = shift[:, 0] * 2 / W
    theta[:, 1, 3] = shift[:, 1] * 2 / H
    theta[:, 2, 3] = shift[:, 2] * 2 / D
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if cfg.elastic_vox > 0:
        coarse = u(B, 3, 4, 4, 4) * cfg.elastic_vox
        field = F.interpolate(coarse, size=(D, H, W), mode="trilinear", align_corners=False)
        scale = torch.tensor([2 / W, 2 / H, 2 / D], device=dev)
        grid = grid + field.permute(0, 2, 3, 4, 1) * scale
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    fmt = torch.channels_last_3d if x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
    return (out > 0.5).to(x.dtype).contiguous(memory_format=fmt)  # in the layout it came in
