"""Conditional shape models: a 3D skull from up to three 2D planes (axial, sagittal, coronal).

Every model takes ``planes`` ``[B, 3, P, P]`` (binary masks, views in :data:`VIEWS` order) and ``present``
``[B, 3]`` (which views were acquired; axial always). Training also sees the 3D mask; prediction does not.

- :class:`CVAE` (Sohn et al. 2015; Cerrolaza et al. 2018): one 2D encoder per view, a condition from all
  three, a conditional prior p(z | planes), a posterior q(z | volume, planes) and a decoder p(volume | z,
  planes). A missing view is a zero image, as in the reference CVAE.
- :class:`TLNet` (Girdhar et al. 2016): a 3D autoencoder and a 2D-to-embedding regressor, trained jointly;
  prediction decodes the regressed embedding. Missing views are zero images.
The hierarchical CVAE is in :mod:`shapetune.models.hcvae`. With ``model.size_frame`` every one of them draws
the skull in a size-normalised frame and scales it by a head size read off the planes
(:mod:`shapetune.models.size_frame`): the true size on the posterior / autoencoder path during training; a
variational model's prediction samples (``sample=True``) draw the size too, from the head's predictive spread
for the views acquired.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shapetune.models.backbone import decoder_for, encoder_for
from shapetune.models.config import ModelConfig
from shapetune.models.gaussian import reparameterize
from shapetune.models.outputs import ConditionalOutput, Level
from shapetune.models.size_frame import SizeHead, rms_log, warp

LOGVAR_MIN, LOGVAR_MAX = -10.0, 6.0
N_VIEWS = 3


def mlp(i: int, h: int, o: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(i, h), nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, h), nn.SiLU()]
    if o is not None:
        layers.append(nn.Linear(h, o))
    return nn.Sequential(*layers)


class PlaneEncoder(nn.Module):
    """Strided 2D convs from ``P x P`` to ``4 x 4`` (average-pooled there when ``P`` is 3 x a power of two),
    then a linear map to ``features``."""

    def __init__(self, size: int, width: int, features: int):
        super().__init__()
        stages = int(math.log2(size // 4))
        ch = [width * min(2**i, 8) for i in range(stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(1, ch[0], 3, padding=1), nn.GroupNorm(min(8, ch[0]), ch[0]), nn.SiLU()]
        for i in range(stages):
            layers += [nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1), nn.GroupNorm(min(8, ch[i + 1]), ch[i + 1]),
                       nn.SiLU()]
        if size // 2**stages != 4:  # e.g. 96 -> 6 x 6
            layers.append(nn.AdaptiveAvgPool2d(4))
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch[-1] * 16, features), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ViewEncoders(nn.Module):
    """One :class:`PlaneEncoder` per view: ``[B, 3, P, P] -> [B, 3, F]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.features = cfg.ladder_hidden
        self.views = nn.ModuleList([PlaneEncoder(cfg.grid, cfg.width, self.features) for _ in range(N_VIEWS)])

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return torch.stack([enc(planes[:, i:i + 1]) for i, enc in enumerate(self.views)], dim=1)


def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = params.chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class ConditionalModel(nn.Module):
    """What the conditional models share: view encoders, a 3D encoder for training, a 3D decoder."""

    variational = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.planes = ViewEncoders(cfg)
        self.encoder = encoder_for(cfg, 1)
        self.decoder = decoder_for(cfg, 1)
        self.size_head = SizeHead(N_VIEWS) if cfg.size_frame else None

    def _sizes(self, volume: torch.Tensor, planes: torch.Tensor,
               present: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Size frame: the true log radii, those read off the planes (detached: the shape loss must not bend
        the size estimate) and the size loss; all None without the frame."""
        if self.size_head is None:
            return None, None, None
        r_true = rms_log(volume)
        r_pred, loss = self.size_head(planes, present, r_true)
        return r_true, r_pred.detach(), loss

    def _place(self, logits: torch.Tensor, log_r: torch.Tensor | None) -> torch.Tensor:
        """Canonical-frame logits scaled to the given log radii (unchanged without the size frame)."""
        return logits if log_r is None else warp(logits, log_r)

    def _zero_image_features(self, planes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """All views' encoder features side by side, ``[B, 3 x F]``, a missing view encoded as a zero image (the
        reference CVAE's convention; the HCVAE instead leaves a missing view's term out)."""
        return self.planes(planes * present[:, :, None, None]).flatten(1)

    def _size(self, planes: torch.Tensor, present: torch.Tensor, sample: bool = False) -> torch.Tensor | None:
        """Head size for prediction: the fused estimate, or (``sample``) a draw from its predictive spread."""
        if self.size_head is None:
            return None
        return self.size_head.sample(planes, present) if sample else self.size_head(planes, present)[0]

    def predict(self, planes: torch.Tensor, present: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Volume logits ``[B, 1, G, G, G]`` from the planes alone (prior means, or a prior sample)."""
        raise NotImplementedError


class CVAE(ConditionalModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d, h = cfg.latent_dims[0], cfg.ladder_hidden
        self.condition = mlp(N_VIEWS * h, h)
        self.prior = nn.Linear(h, 2 * d)
        self.posterior = mlp(self.encoder.features + h, h, 2 * d)
        self.project = nn.Linear(d + h, self.decoder.features)

    def _condition(self, planes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.condition(self._zero_image_features(planes, present))

    def _decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(torch.cat([z, c], dim=-1)))

    def forward(self, volume: torch.Tensor, planes: torch.Tensor, present: torch.Tensor) -> ConditionalOutput:
        c = self._condition(planes, present)
        r_true, r_pred, size_loss = self._sizes(volume, planes, present)
        mu_p, lv_p = _gaussian(self.prior(c))
        mu_q, lv_q = _gaussian(self.posterior(torch.cat([self.encoder(volume), c], dim=-1)))
        z = reparameterize(mu_q, lv_q, self.training)
        # the path prediction takes
        prior_logits = self._place(self._decode(mu_p, c), r_pred) if self.training else None
        return ConditionalOutput(self._place(self._decode(z, c), r_true), [Level(mu_q, lv_q, z, mu_p, lv_p)],
                                 prior_logits, size_loss=size_loss)

    def predict(self, planes: torch.Tensor, present: torch.Tensor, sample: bool = False) -> torch.Tensor:
        c = self._condition(planes, present)
        mu_p, lv_p = _gaussian(self.prior(c))
        return self._place(self._decode(reparameterize(mu_p, lv_p, sample), c), self._size(planes, present, sample))


class TLNet(ConditionalModel):
    """TL-embedding network: deterministic, so ``sample`` draws nothing (no uncertainty)."""

    variational = False

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d, h = cfg.latent_dims[0], cfg.ladder_hidden
        self.embed = nn.Linear(self.encoder.features, d)
        self.regress = mlp(N_VIEWS * h, h, d)
        self.project = nn.Linear(d, self.decoder.features)

    def _regress(self, planes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.regress(self._zero_image_features(planes, present))

    def forward(self, volume: torch.Tensor, planes: torch.Tensor, present: torch.Tensor) -> ConditionalOutput:
        e = F.layer_norm(self.embed(self.encoder(volume)), (self.cfg.latent_dims[0],))  # a target of fixed scale
        e_hat = self._regress(planes, present)
        r_true, r_pred, size_loss = self._sizes(volume, planes, present)
        extra = ((e_hat - e.detach()) ** 2).mean() if self.training else None
        prior_logits = self._place(self.decoder(self.project(e_hat)), r_pred) if self.training else None
        zero = torch.zeros_like(e)
        return ConditionalOutput(self._place(self.decoder(self.project(e)), r_true), [Level(e, zero, e)], prior_logits,
                                 extra, size_loss)

    def predict(self, planes: torch.Tensor, present: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self._place(self.decoder(self.project(self._regress(planes, present))), self._size(planes, present))
