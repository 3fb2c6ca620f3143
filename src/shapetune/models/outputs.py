"""What every model's forward pass returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Level:
    """One latent level: posterior q, prior p (None = standard normal), and the sample used."""

    mu_q: torch.Tensor
    logvar_q: torch.Tensor
    z: torch.Tensor
    mu_p: torch.Tensor | None = None
    logvar_p: torch.Tensor | None = None


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, 2, D, H, W]
    cls_logit: torch.Tensor  # [B], HCM vs healthy, from the top level's posterior mean
    levels: list[Level] = field(default_factory=list)  # bottom -> top

    @property
    def top_mu(self) -> torch.Tensor:
        return self.levels[-1].mu_q


@dataclass
class ConditionalOutput:
    """A conditional model's forward pass (3D shape from 2D planes).

    ``logits`` decode the posterior (or, without a volume, the prior) path; ``prior_logits`` decode the
    conditional prior's means during training (the path prediction takes; a deterministic GSNN term).
    """

    logits: torch.Tensor  # [B, 1, D, H, W]
    levels: list[Level] = field(default_factory=list)  # bottom -> top
    prior_logits: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None  # model-specific term (TL-Net's embedding regression)
    size_loss: torch.Tensor | None = None  # size frame: error of the head size read off the planes
    adv_loss: torch.Tensor | None = None  # conditional GAN: the generator's adversarial term
    disc_loss: torch.Tensor | None = None  # conditional GAN: the discriminator's loss (reaches only its weights)
