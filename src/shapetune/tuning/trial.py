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
from shapetune.training.engine import Engine, TrainData, seed_everything
from shapetune.training.faults import inject_fault, marker_dir
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
    import ray
    import torch
    from ray import tune

    from shapetune.models.registry import build_model
    from shapetune.experiment.checkpoints import CHECKPOINT_FILE, load_state, save_state

    torch.set_num_threads(max(1, int(round(settings.cpus_per_worker))))
    device = torch.device("cuda" if settings.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")
    seed_everything(cfg.seed, device, cfg.deterministic)
    engine = Engine(cfg, build_model(cfg.model).to(device), device)
    trial_id = tune.get_context().get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()
    home = trial_location(settings.exp_dir, trial_id, settings.workers)
    remote = storage.is_uri(home)
    ckpt_dir = scratch_dir(settings.exp_dir, trial_id) if remote else Path(home)
    if remote and not (ckpt_dir / "checkpoint_latest" / CHECKPOINT_FILE).exists() \
            and storage.exists(storage.join(home, "checkpoint_latest", CHECKPOINT_FILE)):
        storage.download(home, ckpt_dir)  # restarted on a node that has never seen this trial
    start, history = 0, []
    if (ckpt_dir / "checkpoint_latest" / CHECKPOINT_FILE).exists():  # a restarted or resumed trial
        state = load_state(ckpt_dir / "checkpoint_latest")
        engine.load_state(state)
        start, history = state["epoch"] + 1, list(state["history"])
    sign = 1.0 if cfg.checkpoint.mode == "max" else -1.0
    best = max((sign * h[cfg.checkpoint.metric] for h in history), default=None)
    first_step = time.time()
    if start >= cfg.optim.epochs and history:  # finished before the driver died: tell Tune once more
        tune.report({**history[-1], "epochs_done": len(history), "first_step_time": first_step,
                     "report_time": time.time()})
    markers = marker_dir(storage.join(settings.exp_dir, "faults", trial_id))
    for epoch in range(start, cfg.optim.epochs):
        inject_fault(cfg, epoch, 0, markers)
        metrics = {"epoch": epoch, **engine.train_epoch(data, epoch), **engine.validate(data)}
        metrics["resumed_from_epoch"] = start - 1 if start else -1
        metrics["node_id"] = node_id
        history.append(metrics)
        state = engine.state(epoch, metrics, history)
        score = sign * metrics[cfg.checkpoint.metric]
        saved = ["checkpoint_latest"]
        if best is None or score > best:
            best = score
            save_state(ckpt_dir / "checkpoint_best", state)
            saved.insert(0, "checkpoint_best")  # best first: a copy of latest never names a missing best
        save_state(ckpt_dir / "checkpoint_latest", state)
        if remote:
            for name in saved:
                storage.upload(ckpt_dir / name, storage.join(home, name))
        tune.report({**metrics, "epochs_done": epoch + 1, "first_step_time": first_step, "report_time": time.time()})


def _train_in_tune(cfg: TrainConfig, data: TrainData, settings: TrialSettings) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from shapetune.training.ray_train import run_training

    run_dir = trial_location(settings.exp_dir, tune.get_context().get_trial_id(), settings.workers)
    run_training(cfg, data, run_dir, workers=settings.workers, gpus_per_worker=settings.gpus_per_worker,
                 cpus_per_worker=settings.cpus_per_worker, callbacks=[TuneReportCallback()], summary=False)
