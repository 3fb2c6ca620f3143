"""Size-normalised frame for the conditional models: the decoder draws a canonical skull, scaled into place.

Why: on the 64^3 cohort a head size 2 % off alone caps Dice near 0.86 (``bench_fetal_ceiling``), and a
decoder left to infer size from conv features misjudges it by 2-3 % (height ~6 %) whatever the views. The
planes' moments show size directly (a linear regression reads length and width to ~1 %), so size gets its
own small, explicit estimator and the decoder only the shape.

- :func:`rms_log`: log RMS radius of a 3D mask per axis (the size the frame normalises).
- :func:`plane_moments`: size features of a 2D plane, blind to its in-plane shift; principal ones (blind
  to rotation too) and ones along the image axes (a standard plane's rows and columns point along known
  anatomical axes up to the sonographer's ~10 degrees, and only they tell a coronal plane's width from height).
- :class:`SizeHead`: one linear estimate of the three radii per acquired view, fused by inverse-variance
  weights per view and axis over the views present (axial reads length and width, sagittal length and
  height, coronal width and height). A missing view drops out of the fusion, it is never a zero input.
  Its predictive variance per axis, ``1 / sum(1 / err2)`` over the views present, is what prediction samples
  sizes from: the uncertainty that a missing view leaves (height with the axial plane alone) shows in the maps.
- :func:`warp`: scale canonical-frame logits about the grid centre to given radii (``grid_sample``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

R_REF = math.log(0.4)  # the canonical skull's RMS radius per axis, in half-widths of the grid
N_MOMENTS = 9
EPS = 1e-4
ERR_MOMENTUM = 0.98  # running mean of each view's squared error: ~50 training steps of memory


def rms_log(volume: torch.Tensor) -> torch.Tensor:
    """Log RMS radius of each mask about its centroid along each grid axis (half-widths):
    ``[B, 1, G, G, G] -> [B, 3]``."""
    m = volume[:, 0].float()
    k = torch.linspace(-1, 1, m.shape[-1], device=m.device, dtype=torch.float32)
    # each axis's moments need only the mask's profile along it: one pass over the volume per axis, no 3D products
    profiles = torch.stack([m.sum((2, 3)), m.sum((1, 3)), m.sum((1, 2))], 1)  # [B, 3, G]
    n = profiles[:, 0].sum(1, keepdim=True).clamp(min=1)
    mean = (profiles * k).sum(2) / n
    var = (profiles * (k - mean[:, :, None]) ** 2).sum(2) / n
    return 0.5 * torch.log(var + 1e-6)


def plane_moments(planes: torch.Tensor) -> torch.Tensor:
    """Per plane: log area, log RMS radii and log extents along the principal axes and along the image rows
    and columns (half-widths); ``[B, V, P, P] -> [B, V, 9]``, zeros for an empty plane."""
    b, v, size, _ = planes.shape
    m = (planes.reshape(b * v, size, size) > 0.5).float()
    k = (torch.arange(size, dtype=torch.float32, device=m.device) - (size - 1) / 2) / (size / 2)
    r, c = k[:, None].expand(size, size), k[None, :].expand(size, size)
    area = m.sum((1, 2))
    full = area > 0
    n = area.clamp(min=1)
    dr = r - ((m * r).sum((1, 2)) / n)[:, None, None]
    dc = c - ((m * c).sum((1, 2)) / n)[:, None, None]
    srr, scc, src = ((m * a * w).sum((1, 2)) / n for a, w in ((dr, dr), (dc, dc), (dr, dc)))
    mean, half = (srr + scc) / 2, torch.sqrt(((srr - scc) / 2) ** 2 + src**2)
    theta = (0.5 * torch.atan2(2 * src, srr - scc))[:, None, None]
    along = (torch.cos(theta) * dr + torch.sin(theta) * dc, -torch.sin(theta) * dr + torch.cos(theta) * dc)
    inside = m > 0
    ext = [torch.where(inside, p, -3.0).amax((1, 2)) - torch.where(inside, p, 3.0).amin((1, 2))
           for p in (*along, dr, dc)]
    f = torch.stack([torch.log(area / size**2 + EPS), 0.5 * torch.log(mean + half + EPS),
                     0.5 * torch.log((mean - half).clamp(min=0) + EPS), 0.5 * torch.log(srr + EPS),
                     0.5 * torch.log(scc + EPS), *(torch.log(e.clamp(min=0) + 2.0 / size) for e in ext)], 1)
    return (f * full[:, None]).view(b, v, N_MOMENTS)


def warp(logits: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
    """Scale canonical-frame logits ``[B, C, D, H, W]`` about the grid centre so that RMS radii ``R_REF``
    become ``exp(log_r)`` (``[B, 3]``, axes D, H, W)."""
    s = torch.exp(log_r.float() - R_REF)
    theta = torch.zeros(len(s), 3, 4, dtype=torch.float32, device=logits.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 2, 2] = 1 / s[:, 2], 1 / s[:, 1], 1 / s[:, 0]  # grid x, y, z = W, H, D
    grid = F.affine_grid(theta, list(logits.shape), align_corners=True)
    return F.grid_sample(logits.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


class SizeHead(nn.Module):
    """Log RMS radii ``[B, 3]`` of the head from its planes: a linear estimate per acquired view, fused with
    weights 1 / (that view's running mean squared error on that axis in training), so a view that does not
    show an axis (coronal: length) barely counts for it. Feature scaling and the mean size are set from the
    first training batch, so the estimates start at the cohort's mean size and a plain Adam step suits every
    feature; all three are buffers, so DDP ranks agree (they follow rank 0's). Float32 whatever the autocast:
    1 % of size matters."""

    # buffers, declared for the type checker (nn.Module types its attribute lookup as "Tensor | Module")
    shift: torch.Tensor
    scale: torch.Tensor
    ready: torch.Tensor
    offset: torch.Tensor
    err2: torch.Tensor

    def __init__(self, views: int = 3):
        super().__init__()
        self.register_buffer("shift", torch.zeros(views, N_MOMENTS))
        self.register_buffer("scale", torch.ones(views, N_MOMENTS))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.weight = nn.Parameter(torch.zeros(views, N_MOMENTS, 3))
        self.register_buffer("offset", torch.full((views, 3), R_REF))
        self.bias = nn.Parameter(torch.zeros(views, 3))
        self.register_buffer("err2", torch.ones(views, 3))

    @torch.no_grad()
    def _initialise(self, feats: torch.Tensor, present: torch.Tensor, target: torch.Tensor) -> None:
        for v in range(feats.shape[1]):
            rows = feats[present[:, v] > 0, v]
            if len(rows) > 1:
                self.shift[v] = rows.mean(0)
                self.scale[v] = rows.std(0).clamp(min=1e-3)
        self.offset.copy_(target.mean(0).expand_as(self.offset))
        self.err2.copy_(target.var(0, unbiased=False).clamp(min=1e-6).expand_as(self.err2))  # the mean's own error
        self.ready.fill_(True)

    def per_view(self, planes: torch.Tensor) -> torch.Tensor:
        """Each view's own estimate, ``[B, V, 3]`` (meaningless for a view not acquired)."""
        x = (plane_moments(planes.float()) - self.shift) / self.scale
        return torch.einsum("bvf,vfa->bva", x, self.weight) + self.bias + self.offset

    def forward(self, planes: torch.Tensor, present: torch.Tensor,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused estimate ``[B, 3]``; with ``target`` (true :func:`rms_log`) also the size loss: the mean
        squared error of each acquired view's own estimate (every view a regressor of its own)."""
        with torch.autocast(planes.device.type, enabled=False):
            return self._fuse(planes.float(), present.float(), None if target is None else target.float())

    def _fuse(self, planes: torch.Tensor, present: torch.Tensor,
              target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if target is not None and self.training and not bool(self.ready):
            self._initialise(plane_moments(planes), present, target)
        est = self.per_view(planes)
        if target is not None and self.training:
            self._track_errors(est.detach(), present, target)
        w = present[:, :, None] / self.err2[None].clamp(min=1e-8)
        total = w.sum(1)
        # no view: mean size
        fused = torch.where(total > 0, (w * est).sum(1) / total.clamp(min=1e-12), self.offset.mean(0))
        if target is None:
            return fused, None
        return fused, (((est - target[:, None]) ** 2).mean(2) * present).sum() / present.sum().clamp(min=1)

    def variance(self, present: torch.Tensor) -> torch.Tensor:
        """Predictive variance of the fused log radii, ``[B, 3]``: inverse-variance fusion of the views present
        (its square root within a factor of 2 of the RMS error per axis and view subset on the study's test
        folds); with no view, the worst view's error (the estimate is then the mean size)."""
        inv = (present.float()[:, :, None] / self.err2[None].clamp(min=1e-8)).sum(1)
        spread = self.err2.max(0).values.expand_as(inv)
        return torch.where(inv > 0, 1.0 / inv.clamp(min=1e-12), spread)

    def sample(self, planes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """A draw of the log radii from N(fused estimate, :meth:`variance`), ``[B, 3]``."""
        mean = self(planes, present)[0]
        return mean + torch.randn_like(mean) * self.variance(present).sqrt()

    @torch.no_grad()
    def _track_errors(self, est: torch.Tensor, present: torch.Tensor, target: torch.Tensor) -> None:
        count = present.sum(0)[:, None]
        batch = (((est - target[:, None]) ** 2) * present[:, :, None]).sum(0) / count.clamp(min=1)
        self.err2.copy_(torch.where(count > 0, ERR_MOMENTUM * self.err2 + (1 - ERR_MOMENTUM) * batch, self.err2))
