"""Training checkpoints: one ``checkpoint.pt`` (weights, optimizer, config, epoch, metrics, history)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT_FILE = "checkpoint.pt"


def save_state(directory: str | Path, state: dict) -> Path:
    """Write atomically (temporary file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def load_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def load_model(directory: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint and load its weights (eval mode)."""
    from shapetune.models.registry import build_model
    from shapetune.platform.config import TrainConfig

    state = load_state(directory, map_location)
    cfg = TrainConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, state
