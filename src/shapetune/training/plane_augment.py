"""Fetal study augmentation: scale each skull anisotropically and cut its planes afresh, perturbed.

Works on batches in torch (``grid_sample``), so the planes a model trains on differ every epoch, as a
sonographer's would; poses are drawn on the CPU from a seeded generator for reproducibility.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shapetune.data.fetal.planes import PlanePose, perturb
from shapetune.config import PlaneAugmentConfig


def cut_planes(volume: torch.Tensor, poses: np.ndarray, spacing: float, size: int) -> torch.Tensor:
    """Cut ``[B, 1, G, G, G]`` binary volumes at poses ``[B, V, 9]`` (origin, u, v in mm) -> ``[B, V, P, P]``."""
    B, V = poses.shape[:2]
    g = volume.shape[-1]
    k = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0) * spacing
    p = torch.from_numpy(poses)
    o, u, v = p[..., 0:3], p[..., 3:6], p[..., 6:9]
    pts = (o[:, :, None, None, :] + u[:, :, None, None, :] * k[None, None, :, None, None]
           + v[:, :, None, None, :] * k[None, None, None, :, None])  # [B, V, P, P, 3] mm, axes (x, y, z)
    norm = pts / (spacing * (g - 1) / 2.0)  # align_corners=True: -1 and 1 are the first and last voxel centres
    grid = norm.flip(-1).to(volume.device, volume.dtype)  # grid_sample wants (W, H, D) = (z, y, x)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (out[:, 0] > 0.5).to(volume.dtype)


def scale_volumes(volume: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Scale each binary volume about the grid centre by ``scales`` ``[B, 3]`` along (x, y, z)."""
    B = volume.shape[0]
    theta = torch.zeros(B, 3, 4, dtype=volume.dtype, device=volume.device)
    inv = (1.0 / scales).to(volume.device, volume.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 2, 2] = inv[:, 2], inv[:, 1], inv[:, 0]  # (W, H, D) = (z, y, x)
    grid = F.affine_grid(theta, list(volume.shape), align_corners=True)
    return (F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            > 0.5).to(volume.dtype)


def augment_fetal(volume: torch.Tensor, poses: np.ndarray, spacing: float, cfg: PlaneAugmentConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled volumes and planes cut from them at perturbed poses; ``poses`` ``[B, V, 9]`` are the planes'
    reference poses (the standard planes when known)."""
    B, V = poses.shape[:2]
    scales = rng.uniform(1 - cfg.scale, 1 + cfg.scale, size=(B, 3))
    vol = scale_volumes(volume, torch.from_numpy(scales)) if cfg.scale > 0 else volume
    new = np.empty_like(poses)
    for b in range(B):
        for v in range(V):
            ref = PlanePose.from_list(poses[b, v])
            # the anatomy moved with the scaling
            ref = PlanePose(tuple(np.asarray(ref.origin) * scales[b]), ref.u, ref.v)
            new[b, v] = perturb(ref, rng, spacing, cfg.rotate_deg, cfg.translate_px, cfg.normal_px).as_list()
    return vol, cut_planes(vol, new, spacing, volume.shape[-1])
