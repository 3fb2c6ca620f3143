"""One sweep trial: a Tune function trainable that trains one sampled configuration.

A one-worker trial runs the training engine in the trial's own process: no Train controller and worker
group to start, which is most of a tiny trial's cost. It keeps its own ``checkpoint_latest`` (every epoch)
and ``checkpoint_best`` (by the objective) under ``EXP/trials/TRIAL_ID``, written atomically, and resumes
from the latest when restarted. Tune's own checkpoint retention is not used for these trials: a snapshot of
Tune's state taken just before a SIGKILL can name a checkpoint that retention deleted a moment later, and
the resumed trial then cannot restore (seen here with ``num_to_keep=2``). A trial
with several workers nests a Ray Train run (Train V2's way inside Tune): a ``TorchTrainer`` named after
the Tune trial, so a restarted trial resumes its Train run, reporting through ``TuneReportCallback``.

When the experiment lives at a storage URI, a one-worker trial keeps its checkpoints in a scratch folder of
the node it runs on and uploads each one to ``EXP/trials/TRIAL_ID`` in the bucket; a trial restarted on
another node (its node died) finds no scratch copy there and continues from the bucket's
``checkpoint_latest``. Nested Train runs write to the bucket through Ray Train's own ``storage_path``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from shapetune.experiment.settings import trial_location, trial_run_dir  # noqa: F401 (re-exported)
from shapetune import storage
from shapetune.config import TrainConfig
from shapetune.experiment.checkpoints import CHECKPOINT_FILE, LATEST_DIR, load_state
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine, seed_everything
from shapetune.training.tasks.cardiac import TrainData
from shapetune.training.faults import marker_dir
from shapetune.training.ray_train import run_training
from shapetune.training.loop import (InjectFaults, KeepCheckpoints, LoopCallback, LoopState, StampTimes, run_epochs,
                                     uploader)
from shapetune.search_spaces.sampling import trial_config
from shapetune.search_spaces.spec import SearchSpace


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares (besides the data)."""

    space: SearchSpace
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    exp_dir: str = ""  # the experiment directory (shared storage on a cluster)



def scratch_dir(exp_location: str, trial_id: str) -> Path:
    """This node's working copy of a remote trial's checkpoints (one folder per Ray node: they share no disk)."""
    import ray

    node = ray.get_runtime_context().get_node_id()[:12]
    return storage.cache_root() / "trials" / node / storage.name_of(exp_location) / trial_id


def build_trial_config(settings: TrialSettings, params: dict) -> TrainConfig:
    """The trial's config: validated every epoch (the scheduler needs the objective), best kept by the objective."""
    cfg = trial_config(settings.space, params)
    obj = settings.space.objectives[0]
    keep = cfg.checkpoint.model_copy(update={"metric": obj.metric, "mode": obj.mode})
    return cfg.model_copy(update={"val_every": 1, "checkpoint": keep})


def sweep_trial(params: dict, data: TrainData, settings: TrialSettings) -> None:
    """Tune function trainable (wrapped with ``tune.with_parameters(data=..., settings=...)``)."""
    cfg = build_trial_config(settings, params)
    if settings.workers > 1:
        _train_in_tune(cfg, data, settings)
    else:
        _in_process(cfg, data, settings)


def _in_process(cfg: TrainConfig, data: TrainData, settings: TrialSettings) -> None:
    """A one-worker trial: the shared epoch loop in the trial's own process, its checkpoints kept (and, for a
    bucket, uploaded) every epoch, each epoch reported to Tune."""
    import ray
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(round(settings.cpus_per_worker))))
    device = torch.device("cuda" if settings.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")
    seed_everything(cfg.seed, device, cfg.deterministic)
    engine = Engine(cfg, build_model(cfg.model).to(device), device)
    trial_id = tune.get_context().get_trial_id()
    home = trial_location(settings.exp_dir, trial_id, settings.workers)
    remote = storage.is_uri(home)
    ckpt_dir = scratch_dir(settings.exp_dir, trial_id) if remote else Path(home)
    if remote and not (ckpt_dir / LATEST_DIR / CHECKPOINT_FILE).exists() \
            and storage.exists(storage.join(home, LATEST_DIR, CHECKPOINT_FILE)):
        storage.download(home, ckpt_dir)  # restarted on a node that has never seen this trial
    resume = None
    if (ckpt_dir / LATEST_DIR / CHECKPOINT_FILE).exists():  # a restarted or resumed trial
        resume = load_state(ckpt_dir / LATEST_DIR)
        if resume["epoch"] + 1 >= cfg.optim.epochs and resume["history"]:
            # finished before the driver died: tell Tune once more
            last = resume["history"][-1]
            tune.report({**last, "epochs_done": len(resume["history"]), "first_step_time": time.time(),
                         "report_time": time.time()})
    callbacks = [InjectFaults(0, marker_dir(storage.join(settings.exp_dir, "faults", trial_id))), StampTimes(),
                 NodeId(ray.get_runtime_context().get_node_id()),
                 KeepCheckpoints(ckpt_dir, publish=uploader(ckpt_dir, home) if remote else None), ReportToTune()]
    run_epochs(engine, data, callbacks, resume)


class NodeId(LoopCallback):
    """The Ray node that trained each epoch, in its metrics (the trial table shows the last epoch's)."""

    def __init__(self, node_id: str):
        self.node_id = node_id

    def on_metrics(self, state: LoopState, metrics: dict) -> None:
        metrics["node_id"] = self.node_id


class ReportToTune(LoopCallback):
    """Each epoch's metrics to Ray Tune (after the checkpoints are written: a report is a point the trial can be
    stopped at)."""

    def on_epoch_end(self, state: LoopState, metrics: dict) -> None:
        from ray import tune

        tune.report(metrics)


def _train_in_tune(cfg: TrainConfig, data: TrainData, settings: TrialSettings) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    run_dir = trial_location(settings.exp_dir, tune.get_context().get_trial_id(), settings.workers)
    run_training(cfg, data, run_dir, workers=settings.workers, gpus_per_worker=settings.gpus_per_worker,
                 cpus_per_worker=settings.cpus_per_worker, callbacks=[TuneReportCallback()], summary=False)
