"""Model registry: name -> class."""

from __future__ import annotations

from torch import nn

from shapetune.models.config import ModelConfig
from shapetune.models.lvae import LadderVAE
from shapetune.models.vae import AE, VAE

MODELS: dict[str, type[nn.Module]] = {"vae": VAE, "lvae": LadderVAE, "ae": AE}


def build_model(cfg: ModelConfig | dict) -> nn.Module:
    """Instantiate the registered model named by ``cfg.name``."""
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.model_validate(cfg)
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)
