"""Models: shape models (VAE, Ladder VAE, AE) and the fetal study's conditional models.

``shapetune.models.config`` is light (pydantic only) so that what reads an experiment's records never loads torch;
the classes and ``build_model`` are in ``shapetune.models.registry``.
"""

from shapetune.models.config import ModelConfig

__all__ = ["ModelConfig"]
