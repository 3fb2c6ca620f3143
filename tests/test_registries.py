"""One test body over every entry of each registry (as Optuna's sampler tests run over every sampler): a model or
baseline added to its registry is covered here without a line of test code.

- ``MODELS``: the shipped config of each model, shrunk, trains one epoch through its task's batch loss; its
  checkpoint round-trips (the reloaded model validates exactly as the trained one) and validation is
  deterministic.
- ``MODEL_SPECS`` / ``TASK_SPECS`` (``shapetune.catalog``): every declared model and task has its implementation,
  and a model class agrees with its declaration.
- ``TASKS``: each task loads its tiny dataset, reports the metrics it declares, and refuses the other task's data.
- ``BASELINES``: each fits the tiny training split and predicts the test split.
- ``SAMPLERS``: each samples a shipped (conditional) space; an unknown name is refused with the registry's names
  by the space, the sweep settings and the CLI.
- ``SCHEDULERS``: each builds a Ray Tune scheduler that accepts a trial's first report; an unknown name is refused
  in the same three places.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from shapetune.catalog import MODEL_SPECS, TASK_SPECS, reported_metrics
from shapetune.cli import app
from shapetune.config import load_config
from shapetune.data.errors import DataError
from shapetune.evaluation.baselines import BASELINES
from shapetune.evaluation.splits import load_split
from shapetune.experiment.checkpoints import save_state
from shapetune.models.registry import MODELS, build_model
from shapetune.search_spaces import load_space
from shapetune.search_spaces.samplers import SAMPLERS, make_sampler
from shapetune.search_spaces.sampling import define_by_run
from shapetune.search_spaces.schedulers import SCHEDULERS, Budget, make_scheduler
from shapetune.search_spaces.spec import SamplerSpec, SchedulerSpec
from shapetune.training.checkpoints import load_model
from shapetune.training.engine import Engine, seed_everything
from shapetune.training.tasks import TASKS, load_task_data, task_of
from shapetune.tuning.sweep import SweepSettings

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
# Small enough for one CPU epoch in seconds, whatever the shipped config says.
TINY = {"cardiac": ["model.grid=16", "model.width=4", "model.ladder_hidden=32", "optim.batch_size=8",
                    "optim.epochs=1", "augment.enabled=false"],
        "fetal": ["model.grid=32", "model.width=4", "model.ladder_hidden=32", "optim.batch_size=4", "optim.epochs=1",
                  "model.norm=group"]}


def tiny_config(name: str):
    task = MODEL_SPECS[name].task
    extra = ["model.latent_dims=[8,4,2]"] if name == "lvae" else ["model.latent_dims=[8]"] if task == "cardiac" else []
    return load_config(CONFIGS / f"{name}.yaml", [*TINY[task], *extra])


@pytest.fixture()
def prepared(request, tiny_prepared):
    """The tiny prepared dataset of a task (the fetal one is built only when a fetal model asks for it)."""
    return {"cardiac": lambda: tiny_prepared, "fetal": lambda: request.getfixturevalue("fetal_prepared")}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_round_trips_and_validates_deterministically(name, prepared, tmp_path):
    cfg = tiny_config(name)
    assert (CONFIGS / f"{name}.yaml").exists(), f"model {name!r} has no shipped config"
    data = load_task_data(prepared[MODEL_SPECS[name].task](), cfg)
    seed_everything(cfg.seed, torch.device("cpu"))
    engine = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    before = [p.detach().clone() for p in engine.model.parameters()]
    metrics = {"epoch": 0, **engine.train_epoch(data, 0), **engine.validate(data)}
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
    assert any(not torch.equal(a, p) for a, p in zip(before, engine.model.parameters(), strict=True))  # it learned
    assert set(metrics) - {"epoch"} <= reported_metrics(cfg.model)  # nothing reported that a config cannot rank on

    save_state(tmp_path / "ck", engine.state(0, metrics, [metrics]))
    model, cfg2, state = load_model(tmp_path / "ck")
    assert cfg2 == cfg and state["epoch"] == 0
    again = Engine(cfg2, model, torch.device("cpu"))
    first, second, reloaded = engine.validate(data), engine.validate(data), again.validate(data)
    assert first == second == reloaded


def test_the_catalog_and_the_implementations_name_the_same_things():
    assert list(MODELS) == list(MODEL_SPECS) and set(TASKS) == set(TASK_SPECS)
    assert all(TASKS[t].spec is TASK_SPECS[t] for t in TASKS)
    assert {t for s in MODEL_SPECS.values() for t in [s.task]} == set(TASK_SPECS)  # every task has a model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_class_agrees_with_its_declaration(name):
    assert MODELS[name].variational is MODEL_SPECS[name].variational


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_loads_its_data_and_refuses_the_other(task, prepared):
    name = next(n for n in sorted(MODELS) if MODEL_SPECS[n].task == task)
    cfg = tiny_config(name)
    assert task_of(cfg) is TASKS[task]
    assert TASKS[task].n_train(load_task_data(prepared[task](), cfg)) > 0
    other = next(t for t in TASKS if t != task)
    with pytest.raises(DataError, match=f"is a {task} model but this is a {other} dataset"):
        load_task_data(prepared[other](), cfg)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_fits_and_predicts(name, tiny_prepared):
    train, test = load_split(tiny_prepared, "train", "train"), load_split(tiny_prepared, "test", "test")
    out = BASELINES[name]().fit(train.masks, train.labels, train.clinical).predict(test)
    assert out.prob.shape == (len(test.masks),) and ((out.prob >= 0) & (out.prob <= 1)).all()
    assert out.recon is None or out.recon.shape == test.masks.shape
    assert all(len(z) == len(test.masks) for z in out.latents)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_samples_a_shipped_space(name):
    space = load_space("lvae_hcm")
    study = optuna.create_study(sampler=make_sampler(space, name, seed=0))
    trial = study.ask()
    define_by_run(space)(trial)
    assert "hierarchy.depth" in trial.params and "loss.lambda_kl" in trial.params


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_takes_a_trials_report(name):
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    space = load_space("lvae_hcm")
    scheduler = make_scheduler(space, name, Budget("val_dice", "max", max_epochs=8, grace_period=2))
    assert isinstance(scheduler, TrialScheduler)
    trial = Trial("shapetune_trial", stub=True)
    scheduler.on_trial_add(None, trial)
    decision = scheduler.on_trial_result(None, trial, {"val_dice": 0.5, "epochs_done": 1, "training_iteration": 1})
    assert decision == TrialScheduler.CONTINUE  # before the grace period nothing is stopped


@pytest.mark.parametrize("kind,registry,spec,bad", [("sampler", SAMPLERS, SamplerSpec, "cmaes"),
                                                    ("scheduler", SCHEDULERS, SchedulerSpec, "pbt")])
def test_an_unknown_name_is_refused_everywhere_with_the_registry_names(kind, registry, spec, bad, tmp_path):
    message = f"unknown {kind} '{bad}'; choose from {', '.join(registry)}"
    with pytest.raises(ValueError, match=message):
        spec(name=bad)
    with pytest.raises(ValueError, match=message):
        SweepSettings(name="s", space="lvae_hcm", data=str(tmp_path), storage_path=str(tmp_path), **{kind: bad})
    r = CliRunner().invoke(app, ["tune", "--space", "lvae_hcm", "--data", str(tmp_path), "--name", "s",
                                 f"--{kind}", bad])
    assert r.exit_code == 2 and all(n in r.output for n in registry)
