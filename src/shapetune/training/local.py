"""The shared epoch loop in the calling process, without Ray (baseline for benchmarks, quick runs, GPU leases)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from shapetune.config import TrainConfig
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine, seed_everything
from shapetune.training.loop import BestSoFar, Deadline, KeepCheckpoints, LoopCallback, PrintEpochs, run_epochs
from shapetune.training.ray_train import TrainOutcome, write_run_summary


def train_local(cfg: TrainConfig, data: Any, out: str | Path | None = None, device: str = "cpu",
                verbose: bool = True, deadline: float | None = None) -> TrainOutcome:
    """Train in-process; with ``out``, keep the best checkpoint (by the configured metric) and the latest.

    Args:
        cfg: the validated training config.
        data: the task's training data (:func:`shapetune.training.tasks.load_task_data`).
        out: the run folder (checkpoints, ``summary.json``, ``history.csv``, learning curves); None keeps nothing.
        device: ``cpu`` or ``cuda``.
        verbose: one console line per epoch.
        deadline: a ``time.time()`` by which the run ends properly (:class:`~shapetune.training.loop.Deadline`);
            the latest checkpoint is then written only at the end (concurrent runs on one GPU would otherwise
            spend their budget writing checkpoints).

    Returns:
        The best checkpoint (by the config's checkpoint metric), its metrics, the history, the wall time, and
        the engine (``outcome.engine``).
    """
    dev = torch.device(device)
    seed_everything(cfg.seed, dev, cfg.deterministic)
    engine = Engine(cfg, build_model(cfg.model).to(dev), dev)
    out = Path(out).resolve() if out else None
    callbacks: list[LoopCallback] = [Deadline(deadline)] if deadline is not None else []
    if out is not None:
        keep = KeepCheckpoints(out, latest_every_epoch=deadline is None)
        callbacks.append(keep)
        best = keep.best
    else:
        best = BestSoFar()
        callbacks.append(best)
    if verbose:
        callbacks.append(PrintEpochs())
    t0 = time.perf_counter()
    state = run_epochs(engine, data, callbacks)
    outcome = TrainOutcome(out or Path("."), (out / "checkpoint_best") if out else Path(), best.metrics,
                           pd.DataFrame(state.history), time.perf_counter() - t0)
    if out is not None:
        write_run_summary(outcome, engine.cfg)
    outcome.engine = engine
    return outcome

