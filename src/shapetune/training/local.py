"""The shared epoch loop in the calling process, without Ray: ``shapetune train --workers 0``, the benchmarks'
baseline, quick runs and GPU leases.

A Ray Train run pays 20-25 s besides its epochs on this 2-core machine (its controller and worker processes start
and import torch; ``benchmarks/RESULTS.md``); a run here pays none of it, and has no worker restarts either.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from shapetune.config import TrainConfig
from shapetune.errors import OutputError, ShapeTuneError
from shapetune.experiment.checkpoints import BEST_DIR, LATEST_DIR, load_state
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine, seed_everything
from shapetune.training.loop import BestSoFar, Deadline, KeepCheckpoints, LoopCallback, PrintEpochs, run_epochs
from shapetune.training.ray_train import TrainOutcome, write_run_summary
from shapetune.training.tasks import load_task_data

RAY_RUN_MARK = "checkpoint_manager_snapshot.json"  # Ray Train's record in a run folder it wrote


def train_local(cfg: TrainConfig, data: Any, out: str | Path | None = None, device: str = "cpu",
                verbose: bool = True, deadline: float | None = None, resume: bool = False) -> TrainOutcome:
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
        resume: go on from ``out/checkpoint_latest`` when there is one (its weights, optimizer and history); its
            model configuration must be ``cfg``'s (the rest, e.g. the epochs, may change).

    Returns:
        The best checkpoint (by the config's checkpoint metric), its metrics, the history, the wall time, and
        the engine (``outcome.engine``).
    """
    dev = torch.device(device)
    seed_everything(cfg.seed, dev, cfg.deterministic)
    engine = Engine(cfg, build_model(cfg.model).to(dev), dev)
    out = Path(out).resolve() if out else None
    callbacks: list[LoopCallback] = [Deadline(deadline)] if deadline is not None else []
    start = load_state(out / LATEST_DIR, map_location=dev) if resume and out and (out / LATEST_DIR).is_dir() else None
    if start is not None and start.get("config", {}).get("model") != cfg.model.model_dump(mode="json"):
        raise OutputError(out, "holds a run of another model configuration (its checkpoint_latest's); continue it "
                               "with that configuration, or give another --out")
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
    state = run_epochs(engine, data, callbacks, resume=start)
    outcome = TrainOutcome(out or Path("."), (out / BEST_DIR) if out else Path(), best.metrics,
                           pd.DataFrame(state.history), time.perf_counter() - t0)
    if out is not None:
        write_run_summary(outcome, engine.cfg)
    outcome.engine = engine
    return outcome


def check_run_kind(out: str | Path, in_process: bool) -> None:
    """Refuse to continue a run folder with the other kind of run than the one that wrote it: an in-process run
    resumes from ``checkpoint_latest``, a Ray Train run from Ray's own checkpoint records; each ignores the other's
    and would start again over it.

    Raises:
        OutputError: ``out`` holds the other kind of run.
    """
    out = Path(out)
    if in_process and (out / RAY_RUN_MARK).is_file():
        raise OutputError(out, "holds a run trained through Ray Train; continue it with --workers 1 or more, or "
                               "give another --out")
    if not in_process and (out / LATEST_DIR).is_dir():
        raise OutputError(out, "holds a run trained in one process (--workers 0); continue it with --workers 0, "
                               "or give another --out")


def train_in_process(cfg: TrainConfig, data_dir: str | Path, out: str | Path, gpus: float = 0.0,
                     cpus: float | None = None) -> TrainOutcome:
    """One run in this process (``shapetune train --workers 0``): the loop Ray Train's workers run, one console line
    per epoch, ``checkpoint_best`` and ``checkpoint_latest`` in ``out``; a run already there resumes.

    Args:
        cfg: the validated training config.
        data_dir: a prepared dataset folder.
        out: the run folder (local: an in-process run keeps its checkpoints on this machine's disk).
        gpus: above 0, train on this machine's CUDA device.
        cpus: torch's threads (default: torch's own, every core).

    Raises:
        ShapeTuneError: ``gpus`` asked for where torch sees no CUDA device.
        OutputError: ``out`` holds a Ray Train run, or a run of another model configuration.
        DataError: the dataset is missing, unreadable, or of the other task than ``cfg``'s model.
    """
    if gpus > 0 and not torch.cuda.is_available():
        raise ShapeTuneError(f"{out}: --gpus-per-worker {gpus:g} asks for a GPU, and torch sees no CUDA device here")
    check_run_kind(out, in_process=True)
    if cpus is not None:
        torch.set_num_threads(max(1, int(round(cpus))))
    data = load_task_data(data_dir, cfg)
    return train_local(cfg, data, out, device="cuda" if gpus > 0 else "cpu", resume=True)
