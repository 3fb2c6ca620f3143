"""Rebuilding a model from a training checkpoint (the files themselves: :mod:`shapetune.experiment.checkpoints`)."""

from __future__ import annotations

from pathlib import Path

import torch

from shapetune.config import TrainConfig
from shapetune.experiment.checkpoints import load_state
from shapetune.training.engine import to_channels_last
from shapetune.models.registry import build_model


def load_model(directory: str | Path,
               map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint and load its weights (eval mode), in the layout it trained in.

    The layout matters for bitwise agreement: oneDNN picks other 3D conv kernels for channels-last weights, so a
    contiguous copy of the same weights differs from the trained model by rounding (measured 6e-8 on logits).

    Returns:
        The model, its validated config and the whole checkpoint state.

    Raises:
        CheckpointError: the checkpoint is missing, unreadable or not weights-only.
    """
    state = load_state(directory, map_location)
    cfg = TrainConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    if cfg.channels_last:
        to_channels_last(model)
    return model.eval(), cfg, state
