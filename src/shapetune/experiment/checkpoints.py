"""Checkpoints on disk: one ``checkpoint.pt`` (weights, optimizer, config, epoch, metrics, history) and, beside it,
a small ``metrics.json`` (the epoch and its metrics) from which the best checkpoint is chosen.

Choosing the best checkpoint of a 100-trial sweep used to ``torch.load`` every full checkpoint; reading the JSON
beside it is what makes export and ``evaluate --trials all`` cheap (``benchmarks/bench_export.py``). torch is
imported only by the functions that read or write a ``.pt`` file, so the record readers stay light.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shapetune.errors import ShapeTuneError
from shapetune.experiment.ranking import score
from shapetune.io import atomic_path, atomic_write_json

if TYPE_CHECKING:
    import torch

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
# The two checkpoint folders a run or trial trained outside Ray Train keeps (Ray Train names its own).
BEST_DIR = "checkpoint_best"  # the best epoch by the configured metric: what export and evaluate read
LATEST_DIR = "checkpoint_latest"  # the last epoch: where a run resumes


class CheckpointError(ShapeTuneError):
    """A checkpoint that is missing, unreadable, or refused (it is not weights-only)."""


def save_state(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``checkpoint.pt`` atomically, then its ``metrics.json`` (epoch, metrics, the checkpoint's size).

    Args:
        directory: the checkpoint folder (created if missing).
        state: what :meth:`Engine.state` returns (``epoch`` and ``metrics`` among its keys).

    Returns:
        The path of ``checkpoint.pt``.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / CHECKPOINT_FILE, ".pt") as tmp:
        torch.save(state, tmp)
    size = (directory / CHECKPOINT_FILE).stat().st_size
    # The size ties the JSON to this checkpoint: a crash between the two writes leaves the previous epoch's JSON,
    # whose size differs (the history inside the checkpoint grows every epoch), so it is not trusted.
    atomic_write_json(directory / METRICS_FILE, {"epoch": int(state["epoch"]), "metrics": state.get("metrics", {}),
                                                 "checkpoint_bytes": size})
    return directory / CHECKPOINT_FILE


def load_state(directory: str | Path, map_location: "str | torch.device" = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from pickles).

    Raises:
        CheckpointError: no ``checkpoint.pt``, an unreadable file, or a pickle that asks for code.
    """
    import torch

    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
        return state
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler names a global it does not allow; name it, not torch's advice to disable
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle at all, or a truncated one
            raise CheckpointError(f"{path}: unreadable checkpoint (not a PyTorch checkpoint, or a truncated "
                                  "one)") from exc
        raise CheckpointError(f"{path}: refused: not a weights-only checkpoint (it asks for {found.group(1)}); "
                              "loading it would run code from the file") from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def read_metrics(directory: str | Path) -> dict[str, Any]:
    """The metrics a checkpoint was saved with, ``epoch`` among them: from ``metrics.json`` when it belongs to this
    checkpoint, else (a checkpoint from before the JSON existed, or a JSON left by an interrupted save) from the
    checkpoint itself.

    Raises:
        CheckpointError: as :func:`load_state`, when the checkpoint has to be read.
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / METRICS_FILE).read_text())
        if meta["checkpoint_bytes"] == (directory / CHECKPOINT_FILE).stat().st_size:
            return {**meta["metrics"], "epoch": meta["epoch"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    state = load_state(directory)
    return {**state["metrics"], "epoch": state["epoch"]}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Every checkpoint folder under ``run_dir``, sorted."""
    return sorted(p.parent for p in Path(run_dir).rglob(CHECKPOINT_FILE))


def best_checkpoint(run_dir: Path, metric: str, mode: str, floor: tuple[str, float] | None = None) -> Path | None:
    """The checkpoint under ``run_dir`` whose recorded ``metric`` is best (the earlier epoch on ties).

    Args:
        run_dir: a run or trial folder.
        metric: the metric to rank on; checkpoints that did not record it are skipped.
        mode: ``max`` or ``min``.
        floor: ``(metric, value)``: only checkpoints that recorded at least ``value`` for that metric.

    Returns:
        The checkpoint folder, or None when no checkpoint qualifies.
    """
    scored = []
    for ck in checkpoint_dirs(run_dir):
        m = read_metrics(ck)
        s = score(m, metric, mode)
        if s is not None and (floor is None or m.get(floor[0], float("-inf")) >= floor[1]):
            scored.append((s, -m["epoch"], ck))
    return max(scored)[2] if scored else None
