"""The same training loop in the calling process, without Ray (baseline for benchmarks, quick runs)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from shapetune.models.registry import build_model
from shapetune.platform.checkpoints import save_state
from shapetune.platform.config import TrainConfig
from shapetune.platform.engine import Engine, seed_everything
from shapetune.platform.ray_train import TrainOutcome, _epoch_line, write_run_summary


def train_local(cfg: TrainConfig, data, out: str | Path | None = None, device: str = "cpu",
                verbose: bool = True) -> TrainOutcome:
    """Train in-process; with ``out``, keep the best checkpoint (by the configured metric) and the latest."""
    seed_everything(cfg.seed)
    dev = torch.device(device)
    engine = Engine(cfg, build_model(cfg.model).to(dev), dev)
    history: list[dict] = []
    best_val, best_metrics = None, {}
    out = Path(out).resolve() if out else None
    sign = 1.0 if cfg.checkpoint.mode == "max" else -1.0
    t0 = time.perf_counter()
    for epoch in range(cfg.optim.epochs):
        metrics = {"epoch": epoch, **engine.train_epoch(data, epoch)}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.optim.epochs:
            metrics.update(engine.validate(data))
        history.append(metrics)
        if verbose:
            print(_epoch_line(metrics, cfg), flush=True)
        score = metrics.get(cfg.checkpoint.metric)
        improved = score is not None and (best_val is None or sign * score > sign * best_val)
        if improved:
            best_val, best_metrics = score, metrics
        if out is not None:
            state = engine.state(epoch, metrics, history)
            save_state(out / "checkpoint_latest", state)
            if improved:
                save_state(out / "checkpoint_best", state)
    outcome = TrainOutcome(out or Path("."), (out / "checkpoint_best") if out else Path(), best_metrics,
                           pd.DataFrame(history), time.perf_counter() - t0)
    if out is not None:
        write_run_summary(outcome, cfg)
    outcome.engine = engine
    return outcome
