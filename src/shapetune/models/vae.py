"""The plain VAE and the deterministic autoencoder baseline, on the shared backbone."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shapetune.models.backbone import LinearPath, decoder_for, encoder_for, start_from_pca
from shapetune.models.classifier import LatentClassifier
from shapetune.models.config import ModelConfig
from shapetune.models.gaussian import reparameterize
from shapetune.models.outputs import Level, ModelOutput

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


class VAE(nn.Module):
    """3D conv VAE over the 2-channel (ED, ES) mask volume with a Gaussian posterior of size d."""

    variational = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.latent_dims[0]
        self.encoder = encoder_for(cfg)
        self.head = nn.Linear(self.encoder.features, 2 * d)
        self.decoder = decoder_for(cfg)
        self.project = nn.Linear(d, self.decoder.features)
        self.classifier = LatentClassifier(d, cfg.classifier_hidden)
        self.linear = LinearPath(cfg.in_channels, cfg.grid, d) if cfg.linear_path else None

    @property
    def bottom_head(self) -> nn.Linear:
        """The map from the conv features to the latent's mean and log-variance (``optim.head_lr_scale``)."""
        return self.head

    def start_from_pca(self, masks: np.ndarray) -> None:
        """``model.linear_init: pca`` (:func:`shapetune.models.backbone.start_from_pca`)."""
        start_from_pca(self, self.bottom_head, masks)

    def encode(self, x: torch.Tensor) -> list[Level]:
        mu, logvar = self.head(self.encoder(x)).chunk(2, dim=-1)
        if self.linear is not None:
            mu = mu + self.linear.encode(x)
        if not self.variational:
            return [Level(mu, torch.zeros_like(mu), mu)]
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        return [Level(mu, logvar, reparameterize(mu, logvar, self.training))]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.project(z))
        return logits if self.linear is None else logits + self.linear.decode(z)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        levels = self.encode(x)
        return ModelOutput(self.decode(levels[0].z), self.classifier(levels[0].mu_q), levels)

    def classify(self, z_top: torch.Tensor) -> torch.Tensor:
        """HCM logit as a differentiable function of the top latent."""
        return self.classifier(z_top)

    def latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Posterior means per level, bottom -> top."""
        return [lv.mu_q for lv in self.encode(x)]


class AE(VAE):
    """Deterministic autoencoder with the same backbone (no KL, no sampling)."""

    variational = False

    def forward(self, x: torch.Tensor) -> ModelOutput:
        levels = self.encode(x)
        return ModelOutput(self.decode(levels[0].z), self.classifier(levels[0].mu_q), levels)
