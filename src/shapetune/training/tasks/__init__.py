"""Tasks: what the shared engine trains on. ``cardiac`` (ED/ES masks -> shape + diagnosis) and ``fetal``
(2D planes -> 3D skull). Their names, metrics and curves are declared in ``shapetune.catalog`` (``TASK_SPECS``);
a model names its task there (``MODEL_SPECS[name].task``) and a dataset names its cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from shapetune.catalog import TaskSpec, task_spec
from shapetune.config import TrainConfig
from shapetune.data.dataset import dataset_task
from shapetune.data.errors import DataError
from shapetune.training.tasks.cardiac import CardiacTask
from shapetune.training.tasks.fetal import FetalTask


class Task(Protocol):
    """What the engine calls, in this order: ``load`` once, then per epoch ``batch_loss`` for each batch of
    ``n_train`` samples and ``validate``, and ``epoch_line`` for the console."""

    spec: TaskSpec  # its declaration: name, validation metrics, curves, loss terms
    name: str
    val_keys: tuple[str, ...]  # validation metrics every epoch reports (the objective among them)
    curves: dict[str, str]  # validation metric -> its label in the run's learning-curve figure

    def load(self, path: str, cfg: TrainConfig) -> Any: ...
    def n_train(self, data: Any) -> int: ...
    def batch_loss(self, engine, data: Any, sel, epoch: int, batch: int, t: float): ...
    def validate(self, engine, data: Any) -> dict[str, float]: ...
    def epoch_line(self, m: dict, epochs: int) -> str: ...


TASKS: dict[str, Task] = {"cardiac": CardiacTask(), "fetal": FetalTask()}


def task_of(cfg: TrainConfig) -> Task:
    """The task ``cfg``'s model trains on."""
    return TASKS[task_spec(cfg.model.name).name]


def load_task_data(path: str | Path, cfg: TrainConfig) -> Any:
    """The train/val data of a prepared dataset for ``cfg``'s model; a model/dataset mismatch is a DataError."""
    task, have = task_of(cfg), dataset_task(path)
    if task.name != have:
        raise DataError(Path(path) / "dataset.json", f"model {cfg.model.name!r} is a {task.name} model but this is a "
                                                     f"{have} dataset")
    return task.load(str(path), cfg)
