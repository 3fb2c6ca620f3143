"""Training checkpoints: one ``checkpoint.pt`` (weights, optimizer, config, epoch, metrics, history)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from shapetune.errors import ShapeTuneError
from shapetune.io import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ShapeTuneError):
    """A checkpoint that is missing, unreadable, or refused (it is not weights-only)."""


def save_state(directory: str | Path, state: dict) -> Path:
    """Write atomically (temporary file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / CHECKPOINT_FILE, ".pt") as tmp:
        torch.save(state, tmp)
    return directory / CHECKPOINT_FILE


def load_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler names a global it does not allow; name it, not torch's advice to disable
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle at all, or a truncated one
            raise CheckpointError(f"{path}: unreadable checkpoint (not a PyTorch checkpoint, or a truncated one)") from exc
        raise CheckpointError(f"{path}: refused: not a weights-only checkpoint (it asks for {found.group(1)}); "
                              "loading it would run code from the file") from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def load_model(directory: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint and load its weights (eval mode)."""
    from shapetune.models.registry import build_model
    from shapetune.platform.config import TrainConfig

    state = load_state(directory, map_location)
    cfg = TrainConfig.model_validate(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, state
