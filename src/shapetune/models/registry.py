"""Model registry: name -> class, built from the torch-free declarations in ``shapetune.catalog``."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from shapetune.catalog import MODEL_SPECS
from shapetune.models.config import ModelConfig


def _load(path: str) -> type[nn.Module]:
    module, _, name = path.partition(":")
    cls: type[nn.Module] = getattr(importlib.import_module(module), name)
    return cls


# Cardiac shape models (task "cardiac") and the fetal-skull conditional models (task "fetal").
MODELS: dict[str, type[nn.Module]] = {name: _load(spec.cls) for name, spec in MODEL_SPECS.items()}


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
