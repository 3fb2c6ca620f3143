"""Ray Train (Train V2) driver: a ``TorchTrainer`` whose workers run the shared engine under DDP.

Data reaches the workers through Ray's object store (``ray.put`` on the driver), so workers on other
nodes never need the driver's disk. CPU workers use gloo; GPU workers NCCL with bf16 autocast.
Every epoch each rank reports its metrics and rank 0 a checkpoint; Ray keeps the best ``keep`` by the
configured validation metric plus the latest, and restarts a crashed worker group from the latest
(``FailureConfig(max_failures)``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune import storage
from shapetune.config import TrainConfig
from shapetune.experiment.checkpoints import load_state, save_state
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine, seed_everything, to_channels_last
from shapetune.training.faults import marker_dir
from shapetune.training.loop import InjectFaults, LoopCallback, LoopState, PrintEpochs, StampTimes, run_epochs
from shapetune.training.ray_driver import ensure_ray
from shapetune.training.tasks import load_task_data, task_of


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: the shared epoch loop under DDP, reporting every epoch to Ray Train."""
    import ray
    import ray.train
    import ray.train.torch as rtt
    import torch

    cfg = TrainConfig.model_validate(config["cfg"])
    torch.set_num_threads(max(1, int(round(config.get("cpus", 1)))))  # intra-op threads = the CPUs reserved
    data = ray.get(config["data_ref"][0])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.seed, rtt.get_device(), cfg.deterministic)
    model = build_model(cfg.model)
    if cfg.channels_last:  # before DDP wraps it: DDP's gradient buckets follow the parameters' layout
        to_channels_last(model)
    model = rtt.prepare_model(model)
    engine = Engine(cfg, model, rtt.get_device(), rank, world)
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_state(d)
    callbacks = [InjectFaults(rank, marker_dir(config["run_dir"])), StampTimes(),
                 *([PrintEpochs(mark=True)] if rank == 0 else []), ReportToRayTrain(rank)]
    run_epochs(engine, data, callbacks, resume)


class ReportToRayTrain(LoopCallback):
    """Every rank reports each epoch's metrics to Ray Train; rank 0 attaches the checkpoint (Ray keeps the best
    ``keep`` by the configured metric plus the latest, and restarts a failed worker group from the latest)."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_epoch_end(self, state: LoopState, metrics: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_state(tmp, state.engine.state(state.epoch, metrics, state.history))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


@dataclass
class TrainOutcome:
    run_dir: Path
    best_checkpoint: Path
    best_metrics: dict
    history: pd.DataFrame
    wall_s: float


def default_cpus(parallel: int) -> float:
    """CPUs for each of ``parallel`` workers (or trials) by default: the cluster's CPUs shared out, at most one
    node's. Measured: a sweep of one trial at a time on this 2-core machine trained on 1 thread (load 1.0)."""
    import ray

    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    total, largest = sum(nodes), max(nodes, default=1.0)
    return float(max(1, int(min(largest, total // max(1, parallel)))))


def run_training(cfg: TrainConfig, data_dir, out: str | Path, workers: int = 1,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None,
                 placement_strategy: str = "PACK", callbacks: list | None = None,
                 summary: bool = True) -> TrainOutcome:
    """Train ``cfg`` on a prepared dataset with ``workers`` Ray Train workers; results under ``out``.

    Args:
        cfg: the validated training config.
        data_dir: a prepared dataset (folder or URI), or data already loaded for ``cfg``'s task.
        out: the run folder or a URI (Ray Train persists checkpoints there itself); a run already there resumes.
        workers: Ray Train workers (DDP over gloo on CPU, NCCL on GPU).
        gpus_per_worker, cpus_per_worker: resources per worker; ``cpus_per_worker`` None means
            :func:`default_cpus` (the cluster's CPUs shared among the workers).
        placement_strategy: Ray's placement of the workers (``PACK`` or ``SPREAD``).
        callbacks: go to the Train ``RunConfig`` (a Tune trial passes ``TuneReportCallback``).
        summary: write ``summary.json``, ``history.csv`` and the learning curves into ``out``.

    Returns:
        The best checkpoint, its metrics, the history and the wall time.

    Raises:
        DataError: the dataset is missing, unreadable, or of the other task than ``cfg``'s model.
        ray.train.TrainingFailedError: a worker failed more often than ``cfg``'s failure budget allows.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = str(out) if storage.is_uri(out) else Path(out).resolve()  # Ray Train persists to URIs itself
    data = load_task_data(data_dir, cfg) if isinstance(data_dir, (str, Path)) else data_dir
    ensure_ray()
    # Train's controller polls its workers every 2 s by default: a finished run then took 4-5 s to return
    # (measured per run here, 0.5 s with 0.2 s polls). A poll is one small call per worker, nothing beside an epoch.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if cpus_per_worker is None:
        cpus_per_worker = default_cpus(workers)
    t0 = time.perf_counter()
    ref = ray.put(data)
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    ck = cfg.checkpoint
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "data_ref": [ref], "run_dir": str(out),
                           "cpus": cpus_per_worker},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources,
                                               placement_strategy=placement_strategy),
        run_config=ray.train.RunConfig(
            name=storage.name_of(out), storage_path=storage.parent_of(out),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=ck.keep, checkpoint_score_attribute=ck.metric,
                                                         checkpoint_score_order=ck.mode),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures), callbacks=callbacks or None),
    )
    result = trainer.fit()
    wall = time.perf_counter() - t0
    best = result.get_best_checkpoint(ck.metric, ck.mode) or result.checkpoint
    with result.checkpoint.as_directory() as d:
        history = pd.DataFrame(load_state(d)["history"])
    with best.as_directory() as d:
        best_metrics = load_state(d)["metrics"]
    outcome = TrainOutcome(out, Path(best.path), best_metrics, history, wall)
    if summary and storage.is_uri(out):  # Train wrote the checkpoints to the bucket; the summary joins them
        with tempfile.TemporaryDirectory() as tmp:
            write_run_summary(dataclasses.replace(outcome, run_dir=Path(tmp)), cfg)
            storage.upload(tmp, out)
    elif summary:
        write_run_summary(outcome, cfg)
    return outcome


def write_run_summary(o: TrainOutcome, cfg: TrainConfig) -> None:
    """``summary.json``, ``history.csv`` and ``learning_curves.png`` in the run directory."""
    o.run_dir.mkdir(parents=True, exist_ok=True)
    o.history.to_csv(o.run_dir / "history.csv", index=False)
    summary = {"best_checkpoint": str(o.best_checkpoint), "best_metrics": o.best_metrics, "wall_s": o.wall_s,
               "epochs": int(o.history["epoch"].max()) + 1, "config": cfg.model_dump(mode="json")}
    (o.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    plot_learning_curves(o.history, o.run_dir / "learning_curves.png", task_of(cfg).curves)


def _jsonable(v):
    return float(v) if isinstance(v, (np.floating, np.integer)) else str(v)


def plot_learning_curves(h: pd.DataFrame, path: Path, curves: dict[str, str]) -> None:
    """Training loss, KL and the task's validation ``curves`` (metric -> label) per epoch, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ep = h["epoch"] + 1
    ax[0].plot(ep, h["train_loss"], label="total")
    ax[0].plot(ep, h["train_bce"] + h["train_dice_loss"], label="reconstruction")
    if "train_ce" in h:
        ax[0].plot(ep, h["train_ce"], label="classifier CE")
    ax[0].set_title("training loss"), ax[0].legend(fontsize=7)
    ax[1].plot(ep, h["train_kl"], color="C3")
    ax[1].set_title("KL (all levels)")
    if "val_dice" in h:
        for key, label in curves.items():
            if key in h:
                ax[2].plot(ep, h[key], label=label)
        ax[2].set_ylim(0, 1), ax[2].legend(fontsize=7), ax[2].set_title("validation")
    for a in ax:
        a.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
