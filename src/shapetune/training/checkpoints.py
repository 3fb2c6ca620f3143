"""Rebuilding a model from a training checkpoint (the files themselves: :mod:`shapetune.experiment.checkpoints`)."""

from __future__ import annotations

from pathlib import Path

import torch

from shapetune.config import TrainConfig
from shapetune.experiment.checkpoints import load_state
from shapetune.models.registry import build_model


def load_model(directory: str | Path,
               map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint and load its weights (eval mode).

    Returns:
        The model, its validated config and the whole checkpoint state.

    Raises:
        CheckpointError: the checkpoint is missing, unreadable or not weights-only.
    """
    state = load_state(directory, map_location)
    cfg = TrainConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, state
