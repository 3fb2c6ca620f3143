"""Tasks: what the shared engine trains on. ``cardiac`` (ED/ES masks -> shape + diagnosis) and ``fetal``
(2D planes -> 3D skull). A model names its task (``MODELS[name].task``); a dataset names its cohort."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from shapetune.data.errors import DataError
from shapetune.models.config import ModelConfig
from shapetune.config import TrainConfig
from shapetune.training.tasks.cardiac import CardiacTask
from shapetune.training.tasks.fetal import FetalTask
from shapetune.models.registry import model_task


class Task(Protocol):
    name: str
    val_keys: tuple[str, ...]  # validation metrics every epoch reports (the objective among them)
    curves: dict[str, str]  # validation metric -> its label in the run's learning-curve figure

    def train_metrics(self, model: ModelConfig) -> frozenset[str]: ...
    def load(self, path: str, cfg: TrainConfig) -> Any: ...
    def n_train(self, data: Any) -> int: ...
    def batch_loss(self, engine, data: Any, sel, epoch: int, batch: int, t: float): ...
    def validate(self, engine, data: Any) -> dict[str, float]: ...
    def epoch_line(self, m: dict, epochs: int) -> str: ...


TASKS: dict[str, Task] = {"cardiac": CardiacTask(), "fetal": FetalTask()}


def task_of(cfg: TrainConfig) -> Task:
    return TASKS[model_task(cfg.model.name)]


# What Engine.train_epoch measures itself, beside the task's loss terms and validation metrics.
ENGINE_METRICS = frozenset({"lr", "samples_per_s", "epoch_time_s", "peak_mem_mb"})


def reported_metrics(cfg: TrainConfig) -> frozenset[str]:
    """Every metric a run of ``cfg`` reports on its validated epochs (what a checkpoint or sweep can rank on).

    Declared, not observed, so a config is checked before it runs; a test trains one tiny epoch of each model
    and compares, so the declaration cannot drift from the engine and the tasks.
    """
    task = task_of(cfg)
    return task.train_metrics(cfg.model) | frozenset(task.val_keys) | ENGINE_METRICS


def dataset_task(path: str | Path) -> str:
    """The task a prepared dataset serves (its ``dataset.json`` cohort)."""
    meta = Path(path) / "dataset.json"
    if not meta.exists():
        raise DataError(meta, "not a prepared dataset (dataset.json missing); run `shapetune data prepare`")
    return "fetal" if json.loads(meta.read_text()).get("cohort") == "fetal" else "cardiac"


def load_task_data(path: str | Path, cfg: TrainConfig) -> Any:
    """The train/val data of a prepared dataset for ``cfg``'s model; a model/dataset mismatch is a DataError."""
    task, have = task_of(cfg), dataset_task(path)
    if task.name != have:
        raise DataError(Path(path) / "dataset.json", f"model {cfg.model.name!r} is a {task.name} model but this is a "
                                                     f"{have} dataset")
    return task.load(str(path), cfg)
