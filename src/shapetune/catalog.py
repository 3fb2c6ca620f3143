"""What exists, declared without torch: each model's task and kind, each task's metrics and held-out split.

Every other list of names is built from these two dicts: the model classes (``shapetune.models.registry.MODELS``,
imported from ``ModelSpec.cls``), the task implementations (``shapetune.training.tasks.TASKS``), the model names a
config accepts, the metrics a config or a search space may rank on, the trial table's columns and the split the
sweep's on-complete evaluation scores. Reading them loads neither torch nor Ray, so the config checks and the
record readers stay light (``tests/test_layers.py``), and no caller branches on a model's or a task's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class ModelConfig(Protocol):
    """What the declarations read of a model config (``shapetune.models.config.ModelConfig``, which imports this
    module for its names)."""

    name: str
    latent_dims: list[int]
    size_frame: bool


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        cls: ``module:Class`` of its torch implementation (imported only by ``shapetune.models.registry``).
        task: the key of the task it trains on (:data:`TASK_SPECS`).
        variational: whether it samples a latent (a KL term per level; the class's ``variational`` agrees, tested).
        summary: one line for help texts.
    """

    cls: str
    task: str
    variational: bool
    summary: str


@dataclass(frozen=True)
class TaskSpec:
    """A task: what a model of it is trained on and what each of its epochs reports.

    Attributes:
        name: its key in :data:`TASK_SPECS`.
        cohorts: the ``dataset.json`` cohorts it reads; empty for the default task, which reads every other cohort.
        val_keys: validation metrics every epoch reports (a sweep's objective is among them).
        curves: validation metric -> its label in a run's learning-curve figure.
        loss_terms: the terms (without the ``train_`` prefix) its loss reports for a model config.
        test_split: the held-out split a sweep's on-complete evaluation scores each finished trial on; None where
            the task is evaluated by a study after the sweep instead.
        exportable: whether ``shapetune export`` and ``predict`` serve its models (their export card describes
            the cardiac template and its diagnosis).
    """

    name: str
    cohorts: tuple[str, ...]
    val_keys: tuple[str, ...]
    curves: dict[str, str]
    loss_terms: Callable[[ModelConfig], frozenset[str]]
    test_split: str | None
    exportable: bool


def _kl_levels(model: ModelConfig) -> set[str]:
    return {f"kl_{i}" for i in range(len(model.latent_dims))} if MODEL_SPECS[model.name].variational else set()


def _shape_terms(model: ModelConfig) -> frozenset[str]:
    """What ``models.losses.shape_loss`` reports: a KL per level when the model is variational."""
    return frozenset({"loss", "bce", "dice_loss", "kl", "ce"} | _kl_levels(model))


def _conditional_terms(model: ModelConfig) -> frozenset[str]:
    """What ``models.losses.conditional_loss`` reports for ``model`` (see each model's ``forward``)."""
    terms = {"loss", "bce", "dice_loss", "kl"} | _kl_levels(model)
    if model.name != "cgan" or model.size_frame:  # the GAN has a prior path only through the size frame
        terms.add("prior_dice_loss")
    if model.name == "tlnet":
        terms.add("embed")
    if model.name == "cgan":
        terms |= {"adv", "disc"}
    if model.size_frame:
        terms.add("size")
    return frozenset(terms)


TASK_SPECS: dict[str, TaskSpec] = {
    "cardiac": TaskSpec("cardiac", (), ("val_dice", "val_dice_ed", "val_dice_es", "val_acc", "val_auc"),
                        {"val_dice_ed": "val Dice ED", "val_dice_es": "val Dice ES", "val_acc": "val accuracy"},
                        _shape_terms, "imperial_test", exportable=True),
    "fetal": TaskSpec("fetal", ("fetal",), ("val_dice", "val_dice_3v", "val_dice_2v", "val_dice_1v"),
                      {"val_dice_3v": "val Dice 3 views", "val_dice_2v": "val Dice 2 views",
                       "val_dice_1v": "val Dice 1 view"},
                      _conditional_terms, None, exportable=False),  # evaluated by cross-validation (`evaluate`)
}
DEFAULT_TASK = "cardiac"

# Cardiac shape models, then the fetal-skull study's conditional models (3D skull from 2D planes).
MODEL_SPECS: dict[str, ModelSpec] = {
    "vae": ModelSpec("shapetune.models.vae:VAE", "cardiac", True, "VAE: reconstruction + lambda KL"),
    "lvae": ModelSpec("shapetune.models.lvae:LadderVAE", "cardiac", True,
                      "Ladder VAE: a hierarchy of latents, the 2-D top level separating the diagnoses"),
    "ae": ModelSpec("shapetune.models.vae:AE", "cardiac", False, "autoencoder baseline (the VAE without KL)"),
    "cvae": ModelSpec("shapetune.models.conditional:CVAE", "fetal", True, "conditional VAE from 2D planes"),
    "hcvae": ModelSpec("shapetune.models.hcvae:HierarchicalCVAE", "fetal", True, "hierarchical conditional VAE"),
    "tlnet": ModelSpec("shapetune.models.conditional:TLNet", "fetal", False, "TL-Net: planes embedded to a shape code"),
    "cgan": ModelSpec("shapetune.models.cgan:ConditionalGAN", "fetal", False, "conditional GAN"),
}

# What the engine measures itself on every epoch, beside the task's loss terms and validation metrics.
ENGINE_METRICS = frozenset({"lr", "samples_per_s", "epoch_time_s", "peak_mem_mb"})


def models_of(task: str) -> tuple[str, ...]:
    """The registered models of ``task``, in registry order."""
    return tuple(n for n, s in MODEL_SPECS.items() if s.task == task)


def task_spec(model_name: str) -> TaskSpec:
    """The task of a registered model.

    Raises:
        KeyError: ``model_name`` is not registered (a validated config always names a registered model).
    """
    return TASK_SPECS[MODEL_SPECS[model_name].task]


def cohort_task(cohort: str | None) -> str:
    """The task a prepared dataset of ``cohort`` (its ``dataset.json`` field) serves."""
    return next((t.name for t in TASK_SPECS.values() if cohort in t.cohorts), DEFAULT_TASK)


def reported_metrics(model: ModelConfig) -> frozenset[str]:
    """Every metric a run of ``model`` reports on its validated epochs (what a checkpoint or a sweep can rank on).

    Declared, not observed, so a config is checked before it runs; ``tests/test_registries.py`` trains one tiny
    epoch of each model and compares, so the declaration cannot drift from the engine and the tasks.
    """
    task = task_spec(model.name)
    return frozenset(f"train_{t}" for t in task.loss_terms(model)) | frozenset(task.val_keys) | ENGINE_METRICS


def table_metrics() -> tuple[str, ...]:
    """The metrics a trial table always has a column for: every task's validation metrics and the training loss
    (None where a trial's task does not report one), so tables of any task share one schema."""
    keys = dict.fromkeys(k for t in TASK_SPECS.values() for k in t.val_keys)
    return (*keys, "train_loss")
