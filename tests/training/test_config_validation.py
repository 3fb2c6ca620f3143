"""Training configs that validate but cannot work are refused at the edge: the field, the line, the reason.

Non-finite and out-of-range values in every section, a checkpoint metric no run reports (checked against
the metrics each task declares, which a real tiny epoch of every model must match), grids too big for this
machine's memory, unknown keys with their close match and line, and the CLI's one-line error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.models.registry import build_model
from shapetune.models.config import training_bytes
from shapetune.config import ConfigError, TrainConfig, load_config, memory_problem
from shapetune.catalog import reported_metrics

CONFIGS = Path(__file__).parents[2] / "src" / "shapetune" / "configs"


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=inf"], "optim.lr: Input should be a finite number"),
    (["optim.lr=nan"], "optim.lr: Input should be a finite number"),
    (["optim.lr=0"], "optim.lr: Input should be greater than 0"),
    (["optim.grad_clip=-5"], "optim.grad_clip: Input should be greater than or equal to 0"),
    (["optim.betas=[2,-1]"], "optim.betas.0: Input should be less than 1"),
    (["optim.betas=[0.9,1.0]"], "optim.betas.1: Input should be less than 1"),
    (["optim.betas=[0.9,-0.1]"], "optim.betas.1: Input should be greater than or equal to 0"),
    (["optim.weight_decay=inf"], "optim.weight_decay: Input should be a finite number"),
    (["optim.min_lr_ratio=nan"], "optim.min_lr_ratio: Input should be a finite number"),
    (["optim.min_lr_ratio=1.5"], "optim.min_lr_ratio: Input should be less than or equal to 1"),
    (["optim.batch_size=0"], "optim.batch_size: Input should be greater than or equal to 1"),
    (["optim.epochs=0"], "optim.epochs: Input should be greater than or equal to 1"),
    (["loss.lambda_kl=inf"], "loss.lambda_kl: Input should be a finite number"),
    (["loss.lambda_kl=-1e-5"], "loss.lambda_kl: Input should be greater than or equal to 0"),
    (["loss.gamma_cls=nan"], "loss.gamma_cls: Input should be a finite number"),
    (["loss.kl_warmup_epochs=inf"], "loss.kl_warmup_epochs: Input should be a finite number"),
    (["loss.size_weight=inf"], "loss.size_weight: Input should be a finite number"),
    (["augment.rotate_deg=720"], "augment.rotate_deg: Input should be less than or equal to 180"),
    (["augment.translate_vox=16"], "augment.translate_vox: 16 must be under half the grid (16 at model.grid 32)"),
    (["augment.elastic_vox=inf"], "augment.elastic_vox: Input should be a finite number"),
    (["plane_augment.normal_px=nan"], "plane_augment.normal_px: Input should be a finite number"),
    (["plane_augment.translate_px=40"], "plane_augment.translate_px: 40 must be under half the grid"),
    (["views.p_sagittal=inf"], "views.p_sagittal: Input should be a finite number"),
    (["seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["fault_injection={epoch: 30}"], "fault_injection.epoch: epoch 30 is never reached: the run has optim.epochs=30"),
    (["fault_injection.rank=-1"], "fault_injection.rank: Input should be greater than or equal to 0"),
    (["model.in_channels=3"], "in_channels must be 1 or 2 for model 'lvae'"),
    (["optim.batch_size=1"], "optim.batch_size: batch normalisation needs optim.batch_size >= 2"),
    (["model.name=cvae", "model.latent_dims=[8]", "optim.head_lr_scale=0.1"],
     "optim.head_lr_scale: is for vae, lvae and ae (their bottom latent's head), not model 'cvae'"),
    (["optim.head_lr_scale=0"], "optim.head_lr_scale: Input should be greater than 0"),
    (["optim.head_lr_scale=2"], "optim.head_lr_scale: Input should be less than or equal to 1"),
])
def test_values_that_cannot_work_are_refused_with_the_field(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert message in str(exc.value), str(exc.value)


@pytest.mark.parametrize("overrides, message", [
    (["checkpoint.metric=val_dcie"], "'val_dcie' is not a metric a cardiac run of model 'lvae' reports "
                                     "(did you mean 'val_dice'?); it reports: "),
    (["checkpoint.metric=val_dice_3v"], "'val_dice_3v' is not a metric a cardiac run"),  # a fetal metric
    (["model.latent_dims=[8,4,2]", "checkpoint.metric=train_kl_3"], "did you mean 'train_kl_2'?"),
    (["model.name=ae", "model.latent_dims=[8]", "checkpoint.metric=train_kl_0"], "model 'ae' reports"),
    (["model.name=cvae", "model.latent_dims=[8]", "checkpoint.metric=val_auc"], "a fetal run of model 'cvae'"),
    (["model.name=cgan", "model.latent_dims=[8]", "checkpoint.metric=train_kl_0"], "val_dice_1v"),
])
def test_checkpoint_metric_no_run_reports_is_refused_with_the_list(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert "checkpoint.metric: " in str(exc.value) and message in str(exc.value), str(exc.value)


@pytest.mark.parametrize("overrides", [
    ["optim.grad_clip=0"],  # 0 and null: no clipping (the engine tests `if grad_clip`)
    ["optim.grad_clip=null"],
    ["optim.betas=[0.0,0.999]"],
    ["optim.min_lr_ratio=0", "optim.schedule=cosine"],
    ["optim.min_lr_ratio=1"],
    ["loss.lambda_kl=0", "loss.kl_warmup_epochs=0"],
    ["checkpoint.metric=train_kl_2", "checkpoint.mode=min"],
    ["checkpoint.metric=val_auc"],
    ["checkpoint.metric=samples_per_s"],
    ["fault_injection={epoch: 29, rank: 1}"],
    ["augment.enabled=false", "augment.translate_vox=16"],  # switched off: the value is never used
    ["model.name=cvae", "model.latent_dims=[8]", "model.in_channels=1", "checkpoint.metric=val_dice_3v"],
])
def test_edge_values_that_work_stay_valid(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_stays_valid(path):
    cfg = load_config(path)
    assert memory_problem(cfg, available=2**30) is None  # the shipped grids need far less than 1 GiB a step


@pytest.mark.parametrize("text, message", [
    ("model:\n  name: lvae\n  grdi: 32\n",
     "model.grdi: Extra inputs are not permitted (unknown key 'grdi'; did you mean 'grid'?) (line 3)"),
    ("modle:\n  grid: 32\n",
     "modle: Extra inputs are not permitted (unknown key 'modle'; did you mean 'model'?) (line 1)"),
    ("optim:\n  lr: 0.001\n  learning_rate: 0.1\n", "optim.learning_rate: Extra inputs are not permitted (unknown key "
                                                     "'learning_rate'; known keys: lr, weight_decay, betas"),
    ("optim:\n  lr: .inf\n", "optim.lr: Input should be a finite number (line 2)"),
    ("optim:\n  betas: [0.9, 1.5]\n", "optim.betas.1: Input should be less than 1 (line 2)"),
    ("seed: 0\ncheckpoint:\n  metric: val_dcie\n", "checkpoint.metric: 'val_dcie' is not a metric"),
    ("seed: 0\ncheckpoint:\n  metric: val_dcie\n", "(line 3)"),
    ("model: {name: vae, latent_dims: [8]}\noptim:\n  batch_size: 1\n",
     "optim.batch_size: batch normalisation needs optim.batch_size >= 2 (line 3)"),
])
def test_config_file_errors_name_key_and_line(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"{f}: invalid configuration") and message in str(exc.value), str(exc.value)


def test_an_override_is_not_blamed_on_a_file_line(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("optim:\n  lr: 0.001\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, ["optim.lr=inf"])
    assert "optim.lr: Input should be a finite number" in str(exc.value) and "(line" not in str(exc.value)


@pytest.mark.parametrize("model, batch, available, refused", [
    ({"grid": 1024}, 16, 2**42, True),  # 16 x 1024^3 voxels: terabytes
    ({"grid": 512, "width": 4}, 2, 2**34, True),
    ({"grid": 256, "width": 4}, 2, 2**34, False),
    ({"grid": 64}, 16, 2**32, False),
    ({"grid": 96, "bottleneck": 6, "light_ends": True}, 16, 2**32, False),
])
def test_grids_too_big_for_memory_are_refused(model, batch, available, refused):
    cfg = TrainConfig.model_validate({"model": model, "optim": {"batch_size": batch}})  # no machine check here
    problem = memory_problem(cfg, available=available)
    assert (problem is not None) == refused, problem
    if refused:
        assert problem.startswith(f"model.grid: {model['grid']}^3 needs at least") and "lower model.grid" in problem


def test_load_config_refuses_a_grid_no_machine_holds(tmp_path):
    with pytest.raises(ConfigError, match=r"^defaults: model.grid: 1024\^3 needs at least 6.7 TiB for one training"):
        load_config(None, ["model.grid=1024"])
    f = tmp_path / "big.yaml"
    f.write_text("seed: 0\nmodel:\n  grid: 1024\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:3: model.grid: 1024\^3 needs at least"):
        load_config(f)


def _saved_bytes(cfg, batch: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one real training step (no weights,
    gradients or optimiser state: those come on top)."""
    from shapetune.models.config import CONDITIONAL_MODELS
    from shapetune.models.losses import LossWeights, conditional_loss, shape_loss

    torch.manual_seed(0)
    model, g, kept = build_model(cfg).train(), cfg.grid, {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[(t.data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if cfg.name in CONDITIONAL_MODELS:
            vol, planes = (torch.rand(batch, 1, g, g, g) > 0.7).float(), (torch.rand(batch, 3, g, g) > 0.7).float()
            conditional_loss(model(vol, planes, torch.ones(batch, 3)), vol, LossWeights(), 1.0, model.variational)
        else:
            x = (torch.rand(batch, 2, g, g, g) > 0.7).float()
            shape_loss(model(x), x, torch.zeros(batch), LossWeights(), 1.0, model.variational)
    return sum(kept.values())


@pytest.mark.parametrize("model", [
    {"name": "lvae", "grid": 32, "width": 4, "latent_dims": [8, 4, 2]},
    {"name": "vae", "grid": 32, "width": 8, "bottleneck": 2, "latent_dims": [8]},
    {"name": "cvae", "grid": 32, "width": 4, "bottleneck": 8, "light_ends": True, "norm": "group", "latent_dims": [8]},
    {"name": "cgan", "grid": 32, "width": 4, "light_ends": True, "norm": "group", "latent_dims": [8],
     "size_frame": True},
], ids=lambda m: m["name"])
def test_memory_need_is_a_lower_bound_of_a_real_step(model):
    """The refusal says 'needs at least': what autograd really keeps in one step must be no less."""
    from shapetune.models.config import ModelConfig

    cfg = ModelConfig(**model)
    need = training_bytes(cfg, 2)
    assert 0 < need <= _saved_bytes(cfg, 2)
    assert training_bytes(cfg.model_copy(update={"grid": 64}), 2) > 7 * need  # at least with the voxels
    assert training_bytes(cfg, 4) == 2 * need


def _cardiac_data(g: int = 16):
    from shapetune.training.tasks.cardiac import TrainData

    rng = np.random.default_rng(0)
    x = lambda n: (rng.random((n, 2, g, g, g)) > 0.7).astype(np.uint8)  # noqa: E731
    return TrainData(x(4), np.array([0, 1, 0, 1]), x(2), np.array([0, 1]), ["a", "b"])


def _fetal_data(g: int = 16):
    from shapetune.training.tasks.fetal import FetalData

    rng = np.random.default_rng(0)
    vol = lambda n: (rng.random((n, 1, g, g, g)) > 0.7).astype(np.uint8)  # noqa: E731
    planes = lambda n: (rng.random((n, 3, g, g)) > 0.7).astype(np.float32)  # noqa: E731
    return FetalData(vol(4), planes(4), np.zeros((4, 3, 9)), vol(2), planes(2), ["a", "b"], 1.0, 0)


@pytest.mark.parametrize("overrides", [
    ["model.name=lvae", "model.latent_dims=[8,4,2]"],
    ["model.name=lvae", "model.latent_dims=[6]"],
    ["model.name=vae", "model.latent_dims=[8]"],
    ["model.name=ae", "model.latent_dims=[8]"],
    ["model.name=cvae", "model.latent_dims=[8]"],
    ["model.name=cvae", "model.latent_dims=[8]", "model.size_frame=true"],
    ["model.name=hcvae", "model.latent_dims=[8,4]"],
    ["model.name=hcvae", "model.latent_dims=[8,6,4]", "model.size_frame=true"],
    ["model.name=tlnet", "model.latent_dims=[8]"],
    ["model.name=tlnet", "model.latent_dims=[8]", "model.size_frame=true"],
    ["model.name=cgan", "model.latent_dims=[8]"],
    ["model.name=cgan", "model.latent_dims=[8]", "model.size_frame=true"],
], ids=lambda o: "-".join(v.split("=")[1] for v in o))
def test_declared_metrics_are_what_a_real_epoch_reports(overrides):
    """The checks above trust each task's declaration; one real epoch of every kind of model keeps it honest."""
    from shapetune.training.engine import Engine

    cfg = load_config(None, ["model.grid=16", "model.width=4", "model.ladder_hidden=16", "model.norm=group",
                             "optim.batch_size=2", "optim.epochs=1", "plane_augment.enabled=false",
                             "augment.enabled=false", *overrides])
    torch.manual_seed(0)
    engine = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    data = _fetal_data() if engine.task.name == "fetal" else _cardiac_data()
    metrics = {**engine.train_epoch(data, 0), **engine.validate(data)}
    assert set(metrics) == reported_metrics(cfg.model)


runner = CliRunner()


@pytest.mark.parametrize("override, message", [
    ("model.grid=1024", "model.grid: 1024^3 needs at least"),
    ("checkpoint.metric=val_dcie", "did you mean 'val_dice'?"),
    ("optim.lr=inf", "optim.lr: Input should be a finite number"),
])
def test_cli_train_refuses_with_exit_code_2(tmp_path, override, message):
    res = runner.invoke(app, ["train", "--config", "lvae", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                              override])
    assert res.exit_code == 2 and "error:" in res.output and message in res.output, res.output
    assert not (tmp_path / "run").exists()
