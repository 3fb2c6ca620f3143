"""Model registry: name -> class."""

from __future__ import annotations

from typing import Any

from torch import nn

from shapetune.models.cgan import ConditionalGAN
from shapetune.models.conditional import CVAE, TLNet
from shapetune.models.config import ModelConfig
from shapetune.models.hcvae import HierarchicalCVAE
from shapetune.models.lvae import LadderVAE
from shapetune.models.vae import AE, VAE

# Cardiac shape models (task "cardiac") and the fetal-skull conditional models (task "fetal").
MODELS: dict[str, type[nn.Module]] = {"vae": VAE, "lvae": LadderVAE, "ae": AE,
                                      "cvae": CVAE, "hcvae": HierarchicalCVAE, "tlnet": TLNet,
                                      "cgan": ConditionalGAN}


def model_task(name: str) -> str:
    """The task a registered model belongs to (``cardiac`` or ``fetal``)."""
    return getattr(MODELS[name], "task", "cardiac")


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Instantiate the registered model named by ``cfg.name``.

    Args:
        cfg: a model config, or its dict form (validated here).

    Returns:
        The model, freshly initialised, in training mode.

    Raises:
        ValueError: ``cfg`` does not validate, or names no registered model.
    """
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.model_validate(cfg)
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)
