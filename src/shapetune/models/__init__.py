"""Models: the registry of shape models (VAE, Ladder VAE, AE) with the latent diagnosis head."""

from shapetune.models.config import ModelConfig
from shapetune.models.registry import MODELS, build_model

__all__ = ["MODELS", "ModelConfig", "build_model"]
