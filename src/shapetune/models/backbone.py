"""3D convolutional encoder/decoder shared by every model (same backbone for a fair comparison)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from shapetune.models.config import ModelConfig


def _norm(c: int, kind: str = "group") -> nn.Module:
    return nn.BatchNorm3d(c) if kind == "batch" else nn.GroupNorm(min(8, c), c)


def _channels(width: int, stages: int) -> list[int]:
    return [width * min(2**i, 8) for i in range(stages + 1)]


class Residual(nn.Module):
    """``silu(x + norm(conv3(x)))``: a stage's second convolution with its input added back (He et al. 2016).

    The same compute as the plain conv it replaces; the identity path lets the gradient reach the early stages
    undiminished.
    """

    def __init__(self, c: int, norm: str):
        super().__init__()
        self.conv, self.norm, self.act = nn.Conv3d(c, c, 3, padding=1), _norm(c, norm), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.norm(self.conv(x)))


def _refine(c: int, norm: str, residual: bool) -> list[nn.Module]:
    """A stage's second (same-resolution) convolution, plain or residual."""
    return [Residual(c, norm)] if residual else [nn.Conv3d(c, c, 3, padding=1), _norm(c, norm), nn.SiLU()]


def encoder_for(cfg: ModelConfig, in_channels: int | None = None) -> Encoder:
    """The encoder ``cfg`` describes (every model builds its backbone through these two functions)."""
    return Encoder(cfg.in_channels if in_channels is None else in_channels, cfg.width, cfg.grid, cfg.bottleneck,
                   cfg.norm, light_bottom=cfg.light_ends, residual=cfg.residual)


def decoder_for(cfg: ModelConfig, out_channels: int | None = None) -> Decoder:
    return Decoder(cfg.in_channels if out_channels is None else out_channels, cfg.width, cfg.grid, cfg.bottleneck,
                   cfg.norm, light_top=cfg.light_ends, residual=cfg.residual)


class Encoder(nn.Module):
    """Strided 3D convs from ``grid``^3 down to ``bottleneck``^3, then flattened: ``[B, C, G, G, G] -> [B, F]``."""

    def __init__(self, in_channels: int, width: int, grid: int, bottleneck: int = 2, norm: str = "group",
                 light_bottom: bool = False, residual: bool = False):
        super().__init__()
        stages = int(math.log2(grid // bottleneck))
        ch = _channels(width, stages)
        if light_bottom:  # one strided conv from full resolution (mirror of the decoder's light top)
            layers: list[nn.Module] = [nn.Conv3d(in_channels, ch[1], 4, stride=2, padding=1), _norm(ch[1], norm),
                                       nn.SiLU()]
        else:
            layers = [nn.Conv3d(in_channels, ch[0], 3, padding=1), _norm(ch[0], norm), nn.SiLU()]
        for i in range(1 if light_bottom else 0, stages):
            layers += [nn.Conv3d(ch[i], ch[i + 1], 3, stride=2, padding=1), _norm(ch[i + 1], norm), nn.SiLU(),
                       *_refine(ch[i + 1], norm, residual)]
        self.net = nn.Sequential(*layers)
        self.features = ch[-1] * bottleneck**3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """Mirror of the encoder: ``[B, F] -> [B, out_channels, G, G, G]`` logits.

    ``light_top`` ends with one transposed convolution straight to logits at full resolution instead of a
    full stage there: 4-5x less compute at 64^3, for shapes whose detail the half-resolution features hold.
    """

    def __init__(self, out_channels: int, width: int, grid: int, bottleneck: int = 2, norm: str = "group",
                 light_top: bool = False, residual: bool = False):
        super().__init__()
        stages = int(math.log2(grid // bottleneck))
        ch = _channels(width, stages)[::-1]
        self.start, self.size = ch[0], bottleneck
        layers: list[nn.Module] = []
        for i in range(stages - 1 if light_top else stages):
            layers += [nn.ConvTranspose3d(ch[i], ch[i + 1], 4, stride=2, padding=1), _norm(ch[i + 1], norm), nn.SiLU(),
                       *_refine(ch[i + 1], norm, residual)]
        if light_top:
            layers.append(nn.ConvTranspose3d(ch[-2], out_channels, 4, stride=2, padding=1))
        else:
            layers.append(nn.Conv3d(ch[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.features = ch[0] * bottleneck**3

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.view(h.shape[0], self.start, self.size, self.size, self.size))


PCA_LOGIT_SCALE = 8.0  # PCA's reconstruction r in [0, 1] becomes logits in about [-4, 4], its 0.5 threshold at 0
PCA_LOGVAR = -6.0  # the bottom posterior's starting log-variance with a PCA start: sd 0.05 on unit-variance latents


class LinearPath(nn.Module):
    """A linear shape basis beside the conv path (``model.linear_path``): the flattened masks map linearly to
    the bottom latent's mean (``d_in``), and the latents the decoder reads (``d_out``: every level of a ladder)
    map linearly to every voxel's logit, added to the conv decoder's. The conv path alone learns the global
    modes of shape variation slowly (at 200 epochs it underfits, below PCA(50) on its own training subjects);
    a linear basis holds them from the first epochs, and the conv path models what is not linear."""

    def __init__(self, channels: int, grid: int, d_in: int, d_out: int | None = None):
        super().__init__()
        self.shape = (channels, grid, grid, grid)
        n = channels * grid**3
        self.enc = nn.Linear(n, d_in)
        self.dec = nn.Linear(d_in if d_out is None else d_out, n)
        nn.init.zeros_(self.dec.weight)  # starts as the conv model; the basis grows from the data
        nn.init.zeros_(self.dec.bias)

    @torch.no_grad()
    def init_pca(self, masks: np.ndarray, logit_scale: float = PCA_LOGIT_SCALE) -> None:
        """Start the basis at the principal components of the training masks ``[N, C, G, G, G]``
        (``model.linear_init: pca``): the encoder gives each component's coefficient divided by its standard
        deviation (unit variance, as the prior), the decoder's first ``d_in`` inputs map them back, and the
        reconstruction ``r`` becomes the logit ``logit_scale * (r - 0.5)``, so the linear path alone starts as
        PCA thresholded at 0.5. The principal components come from the N x N Gram matrix (N subjects << voxels)."""
        x = torch.as_tensor(masks.reshape(len(masks), -1), dtype=torch.float32)
        mean = x.mean(0)
        xc = x - mean
        evals, evecs = torch.linalg.eigh((xc @ xc.T).double())  # ascending
        k = min(self.enc.out_features, len(x) - 1)
        evals, evecs = evals.flip(0)[:k].clamp(min=1e-12), evecs.flip(1)[:, :k]
        comps = (evecs.T.float() @ xc) / evals.sqrt().float()[:, None]  # unit-norm rows
        sd = (evals / (len(x) - 1)).sqrt().float()
        self.enc.weight.zero_()
        self.enc.bias.zero_()
        self.enc.weight[:k] = comps / sd[:, None]
        self.enc.bias[:k] = -(comps @ mean) / sd
        self.dec.weight.zero_()
        self.dec.weight[:, :k] = logit_scale * (comps * sd[:, None]).T
        self.dec.bias.copy_(logit_scale * (mean - 0.5))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x.reshape(x.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z).view(z.shape[0], *self.shape)


@torch.no_grad()
def start_from_pca(model: nn.Module, head: nn.Linear, masks: np.ndarray) -> None:
    """``model.linear_init: pca`` for a model with a ``linear`` path, a bottom-latent ``head`` (mean, then
    log-variance) and a ``decoder``: the basis starts at the training masks' principal components, the bottom
    latent's mean as their coefficients alone, its posterior's log-variance ``PCA_LOGVAR`` (unit-variance noise on
    unit-variance coefficients scrambled the basis within the first epoch: val Dice 0.75 after it, PCA's 0.89),
    and the conv decoder's output at zero, so the model starts as PCA exactly; the conv path grows from there."""
    linear, decoder = model.linear, model.decoder
    if not isinstance(linear, LinearPath) or not isinstance(decoder, Decoder):
        raise ValueError("model.linear_init: pca needs model.linear_path (a linear path beside a conv decoder)")
    linear.init_pca(masks)
    d = head.out_features // 2
    head.weight[:d] = 0.0
    head.bias[:d] = 0.0
    if model.variational:
        head.bias[d:] = PCA_LOGVAR
    last = decoder.net[-1]
    assert isinstance(last, nn.Conv3d | nn.ConvTranspose3d), type(last)
    last.weight.zero_()
    if last.bias is not None:
        last.bias.zero_()
