"""The same training loop in the calling process, without Ray (baseline for benchmarks, quick runs, GPU leases)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from shapetune.models.registry import build_model
from shapetune.experiment.checkpoints import save_state
from shapetune.config import TrainConfig
from shapetune.training.engine import Engine, seed_everything
from shapetune.training.ray_train import TrainOutcome, _epoch_line, write_run_summary

PROBE_EPOCHS = 3  # epochs timed before a deadline fixes the run's length (the first one pays the warm-up)


def epochs_for_deadline(cfg_epochs: int, done: int, epoch_wall_s: float, seconds_left: float) -> int:
    """How many epochs a run may have in all to end by its deadline; at least one more than ``done``, so
    the run always ends on a proper last epoch (validated and saved)."""
    return max(done + 1, min(cfg_epochs, done + int(seconds_left // max(epoch_wall_s, 1e-6))))


def train_local(cfg: TrainConfig, data, out: str | Path | None = None, device: str = "cpu",
                verbose: bool = True, deadline: float | None = None) -> TrainOutcome:
    """Train in-process; with ``out``, keep the best checkpoint (by the configured metric) and the latest.

    ``deadline`` (``time.time()``) makes a fixed wall-clock budget end the run properly: after
    :data:`PROBE_EPOCHS` epochs the run's length (and so its lr schedule) is cut to what fits, and cut
    again whenever the measured pace says it would overrun; the best checkpoint is then written when it
    improves and the latest only at the end (concurrent runs on one GPU would otherwise spend their budget
    writing checkpoints).
    """
    dev = torch.device(device)
    seed_everything(cfg.seed, dev, cfg.deterministic)
    engine = Engine(cfg, build_model(cfg.model).to(dev), dev)
    history: list[dict] = []
    best_val, best_metrics = None, {}
    out = Path(out).resolve() if out else None
    sign = 1.0 if cfg.checkpoint.mode == "max" else -1.0
    t0 = time.perf_counter()
    epoch, after_warmup = 0, 0.0
    while epoch < cfg.optim.epochs:  # not a for loop: a deadline can shorten the run
        if deadline is not None and epoch >= PROBE_EPOCHS:
            pace = (time.time() - after_warmup) / (epoch - 1)  # epoch 0 paid the warm-up
            fit = epochs_for_deadline(cfg.optim.epochs, epoch, pace, deadline - time.time())
            if fit < cfg.optim.epochs:  # the schedule (cosine) follows the new length
                cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": fit})})
                engine.cfg = cfg
        if epoch == 1:
            after_warmup = time.time()
        metrics = {"epoch": epoch, **engine.train_epoch(data, epoch)}
        last = epoch + 1 == cfg.optim.epochs
        if (epoch + 1) % cfg.val_every == 0 or last:
            metrics.update(engine.validate(data))
        history.append(metrics)
        if verbose:
            print(_epoch_line(metrics, cfg), flush=True)
        score = metrics.get(cfg.checkpoint.metric)
        improved = score is not None and (best_val is None or sign * score > sign * best_val)
        if improved:
            best_val, best_metrics = score, metrics
        if out is not None and (improved or deadline is None or last):
            state = engine.state(epoch, metrics, history)
            if deadline is None or last:
                save_state(out / "checkpoint_latest", state)
            if improved:
                save_state(out / "checkpoint_best", state)
        epoch += 1
    outcome = TrainOutcome(out or Path("."), (out / "checkpoint_best") if out else Path(), best_metrics,
                           pd.DataFrame(history), time.perf_counter() - t0)
    if out is not None:
        write_run_summary(outcome, cfg)
    outcome.engine = engine
    return outcome
