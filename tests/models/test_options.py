"""Every model and training option of issue 17: builds, trains a step, round-trips its checkpoint; the schedules."""

from __future__ import annotations

import math

import pytest
import torch

from shapetune.models.registry import build_model
from shapetune.training.checkpoints import load_model
from shapetune.experiment.checkpoints import load_state
from shapetune.config import ConfigError, load_config
from shapetune.errors import ShapeTuneError
from shapetune.training.engine import Engine
from shapetune.training.tasks.cardiac import load_training_data
from shapetune.training.local import train_local

TINY = ["model.grid=16", "model.width=4", "model.latent_dims=[8,4,2]", "model.ladder_hidden=32",
        "optim.batch_size=4", "optim.lr=0.003", "optim.epochs=2"]

# One row per option (on; its default is off): what it changes, and a check that it is really in the model.
OPTIONS = [
    ("residual", ["model.residual=true"], lambda m: any(type(x).__name__ == "Residual" for x in m.modules())),
    ("light_ends", ["model.light_ends=true"],
     lambda m: m.encoder.net[0].stride == (2, 2, 2) and isinstance(m.decoder.net[-1], torch.nn.ConvTranspose3d)),
    ("linear_path", ["model.linear_path=true"],
     lambda m: m.linear is not None and m.linear.dec.weight.abs().sum() > 0),  # the basis left zero init
    # The PCA start begins at a fitted basis (its mean in the decoder's bias): its loss need not fall in 2 epochs.
    ("linear_pca", ["model.linear_path=true", "model.linear_init=pca"],
     lambda m: m.linear is not None and m.linear.dec.bias.abs().sum() > 0),
    ("linear_pca_slow_head", ["model.linear_path=true", "model.linear_init=pca", "optim.head_lr_scale=0.1"],
     lambda m: m.linear is not None and m.linear.dec.bias.abs().sum() > 0),
    ("kl_alpha", ["loss.kl_alpha=[1.0,0.5,0.1]"], None),
    ("ema", ["optim.ema=0.9"], None),
    ("onecycle", ["optim.schedule=onecycle"], None),
    ("cosine_warmup", ["optim.schedule=cosine", "optim.warmup_epochs=1"], None),
    ("fp32_channels_first", ["amp=off", "channels_last=false"], None),
]


@pytest.mark.parametrize("name,over,present", OPTIONS, ids=[o[0] for o in OPTIONS])
@pytest.mark.parametrize("model", ["lvae", "vae"])
def test_option_trains_and_round_trips(tiny_prepared, tmp_path, model, name, over, present):
    dims = "[8,4,2]" if model == "lvae" else "[8]"
    if model == "vae" and name == "kl_alpha":
        over = ["loss.kl_alpha=[0.5]"]
    cfg = load_config(None, TINY + [f"model.name={model}", f"model.latent_dims={dims}"] + over)
    data = load_training_data(str(tiny_prepared), 16)
    out = train_local(cfg, data, tmp_path / "run", verbose=False)
    h = out.history
    assert h.train_loss.notna().all(), h.train_loss.tolist()
    if not name.startswith("linear_pca"):
        assert h.train_loss.iloc[1] < h.train_loss.iloc[0], h.train_loss.tolist()
    if present is not None:
        assert present(out.engine.model)
    # The best checkpoint rebuilds the model that validation saw, and reproduces its metrics.
    model_, cfg2, state = load_model(out.best_checkpoint)
    assert cfg2 == cfg
    val = Engine(cfg2, model_, torch.device("cpu")).validate(data)
    for k in ("val_dice_ed", "val_dice_es", "val_acc"):
        assert val[k] == pytest.approx(state["metrics"][k], abs=5e-3), k


@pytest.mark.parametrize("model", ["lvae", "vae", "ae"])
def test_head_lr_scale_steps_the_bottom_head_at_its_fraction_of_the_schedule(tiny_prepared, tmp_path, model):
    """``optim.head_lr_scale``: the bottom latent's head is its own parameter group at that fraction of every
    step's lr, so its weights move that much less; a run's checkpoint resumes with both groups."""
    data = load_training_data(str(tiny_prepared), 16)
    dims = "[8,4,2]" if model == "lvae" else "[8]"
    moved = {}
    for scale in (1.0, 0.1):
        cfg = load_config(None, TINY + [f"model.name={model}", f"model.latent_dims={dims}", "model.linear_path=true",
                                        "model.linear_init=pca", f"optim.head_lr_scale={scale}"])
        torch.manual_seed(0)
        eng = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
        groups = eng.optimizer.param_groups
        assert len(groups) == (1 if scale == 1.0 else 2)
        eng.model.start_from_pca(data.train_x)
        head = eng.model.bottom_head
        start = head.weight.detach().clone()
        eng.train_epoch(data, 1)  # past epoch 0, which would fit the PCA start again
        moved[scale] = float((head.weight.detach() - start).abs().max())
        if scale != 1.0:
            assert {id(p) for p in groups[1]["params"]} == {id(p) for p in head.parameters()}
            assert groups[1]["lr"] == pytest.approx(scale * groups[0]["lr"])
            assert groups[0]["lr"] == pytest.approx(eng.lr_at(1 + 5 / 6))  # the last of 6 steps
    # Adam steps each weight by about lr whatever its gradient's size: a tenth of the lr moves it about a tenth.
    assert 0 < moved[0.1] < 0.2 * moved[1.0], moved
    out = train_local(cfg, data, tmp_path / "run", verbose=False)
    resumed = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    resumed.load_state(load_state(tmp_path / "run" / "checkpoint_latest"))
    assert [g["lr_scale"] for g in resumed.optimizer.param_groups[1:]] == [0.1]
    assert out.history.train_loss.notna().all()
    # Resuming with another scale would misplace Adam's per-group state: refused, with both values.
    other = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"head_lr_scale": 1.0, "epochs": 3})})
    with pytest.raises(ShapeTuneError, match=r"optim.head_lr_scale=1: .* trained with optim.head_lr_scale=0.1"):
        train_local(other, data, tmp_path / "run", verbose=False, resume=True)


def test_ema_checkpoint_holds_the_average_and_resumes_both(tiny_prepared, tmp_path):
    cfg = load_config(None, TINY + ["optim.ema=0.5"])
    data = load_training_data(str(tiny_prepared), 16)
    out = train_local(cfg, data, tmp_path / "run", verbose=False)
    state = load_state(tmp_path / "run" / "checkpoint_latest")
    assert set(state) >= {"model", "trained_model", "ema_steps"}
    eng = out.engine
    n_steps = 2 * (24 // 4)
    assert state["ema_steps"] == n_steps
    avg, trained = state["model"], state["trained_model"]
    conv = next(k for k, v in trained.items() if v.dim() == 5)
    assert not torch.equal(avg[conv], trained[conv])  # the average is not the last step's weights
    assert torch.equal(avg[conv], eng.ema.module.state_dict()[conv].contiguous())
    # Resuming restores the trained weights into the model and the average into the EMA, not one into both.
    fresh = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    fresh.load_state(state)
    assert torch.equal(fresh.model.state_dict()[conv].contiguous(), trained[conv])
    assert torch.equal(fresh.ema.module.state_dict()[conv].contiguous(), avg[conv])
    assert int(fresh.ema.n_averaged) == n_steps


@pytest.mark.parametrize("over,at,expected", [
    # onecycle: lr/25 at 0, lr at the end of the warm-up (30 % of 11 epochs), lr/(25e4) at the last epoch
    (["optim.schedule=onecycle"], [0, 3.3, 10], [0.003 / 25, 0.003, 0.003 / 25e4]),
    (["optim.schedule=onecycle", "optim.warmup_epochs=1"], [0.5, 1], [0.003 / 25 + 0.5 * (0.003 - 0.003 / 25), 0.003]),
    (["optim.schedule=cosine", "optim.warmup_epochs=2"], [0, 1, 2, 6, 10], [0.0, 0.0015, 0.003, 0.00165, 0.0003]),
    (["optim.warmup_epochs=2"], [0, 1, 2, 7], [0.0, 0.0015, 0.003, 0.003]),
], ids=["onecycle", "onecycle_warmup", "cosine_warmup", "constant_warmup"])
def test_schedules(over, at, expected):
    cfg = load_config(None, TINY + ["optim.epochs=11", "optim.min_lr_ratio=0.1"] + over)
    eng = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    for t, want in zip(at, expected, strict=True):
        if want is not None:
            assert eng.lr_at(t) == pytest.approx(want, rel=1e-6, abs=1e-12), t
    lrs = [eng.lr_at(e / 10) for e in range(101)]
    assert all(math.isfinite(v) and v >= 0 for v in lrs) and max(lrs) == pytest.approx(0.003, rel=0.02)


def test_kl_alpha_weights_each_level():
    from shapetune.models.losses import LossWeights, shape_loss

    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    m = build_model(cfg.model).train()
    x = (torch.rand(4, 2, 16, 16, 16) > 0.6).float()
    out = m(x)
    y = torch.tensor([0, 1, 0, 1])
    _, plain = shape_loss(out, x, y, LossWeights(), 10.0, True)
    _, weighted = shape_loss(out, x, y, LossWeights(kl_alpha=(1.0, 0.5, 0.0)), 10.0, True)
    assert weighted["kl"] == pytest.approx(float(plain["kl_0"] + 0.5 * plain["kl_1"]), rel=1e-5)
    assert weighted["kl_2"] == pytest.approx(float(plain["kl_2"]))  # each level's own KL is reported unweighted


def test_kl_alpha_needs_one_weight_per_level():
    with pytest.raises(ConfigError, match=r"loss.kl_alpha.*2 weights for 3 latent levels"):
        load_config(None, TINY + ["loss.kl_alpha=[1,1]"])


def test_bf16_channels_last_step_matches_fp32():
    """The fast path (bf16 autocast, channels-last) computes the same loss as fp32 channels-first, to bf16's
    precision: within 2 % at initialisation (bf16 keeps 8 bits of mantissa: ~0.4 % per product)."""
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    x = (torch.rand(4, 2, 16, 16, 16) > 0.6).float().numpy()
    y = torch.tensor([0, 1, 0, 1])
    losses = {}
    for over in (["amp=off", "channels_last=false"], ["amp=bf16", "channels_last=true"]):
        c = load_config(None, TINY + over)
        torch.manual_seed(1)
        eng = Engine(c, build_model(c.model).eval(), torch.device("cpu"))
        from shapetune.models.losses import shape_loss

        xx = eng.tensor(x)
        assert xx.is_contiguous(memory_format=torch.channels_last_3d) == c.channels_last
        with eng.autocast():
            out = eng.model(xx)
        losses[c.amp] = float(shape_loss(out, xx, y, eng.weights, 10.0, True)[0].detach())
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.02)
    assert cfg.channels_last  # the default


def test_compiled_training_matches_eager_and_saves_the_plain_model(tiny_prepared, tmp_path):
    """``compile``: the training step runs through torch.compile (inductor here; on a GPU 'reduce-overhead' adds
    CUDA graphs). At the same weights its loss and gradients are eager's to float32 reassociation (measured: the
    same loss, gradients within 1e-7 of a largest 0.05); whole runs drift apart a little as Adam amplifies that
    (measured: rel 1.1e-3 after 12 steps) and agree within rel 1e-2. Checkpoints hold the plain model's keys (no
    torch.compile prefix), so they load as any other."""
    from shapetune.models.losses import shape_loss

    x = (torch.rand(4, 2, 16, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.6).float().numpy()
    y = torch.tensor([0, 1, 0, 1])
    step = {}
    for mode in ("off", "default"):
        cfg = load_config(None, TINY + ["model.name=vae", "model.latent_dims=[8]", "amp=off", f"compile={mode}"])
        torch.manual_seed(0)
        eng = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
        eng.model.train()
        torch.manual_seed(1)  # the same reparameterisation noise (inductor's own generator would draw other)
        with torch._inductor.config.patch(fallback_random=True):
            loss = shape_loss(eng.model(eng.tensor(x)), eng.tensor(x), y, eng.weights, 10.0, True)[0]
        loss.backward()
        step[mode] = (float(loss), torch.cat([p.grad.flatten() for p in eng.model.parameters()]))
    assert step["default"][0] == pytest.approx(step["off"][0], rel=1e-5)
    assert torch.allclose(step["default"][1], step["off"][1], rtol=1e-4, atol=1e-6)
    data = load_training_data(str(tiny_prepared), 16)
    runs = {}
    for mode in ("off", "default"):
        cfg = load_config(None, TINY + ["model.name=vae", "model.latent_dims=[8]", "amp=off", f"compile={mode}"])
        runs[mode] = train_local(cfg, data, tmp_path / mode, verbose=False)
    assert type(runs["default"].engine.model).__name__ == "OptimizedModule"
    for col in ("train_loss", "val_dice"):
        assert runs["default"].history[col].tolist() == pytest.approx(runs["off"].history[col].tolist(), rel=1e-2), col
    state = load_state(runs["default"].best_checkpoint)
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    model_, cfg2, _ = load_model(runs["default"].best_checkpoint)
    assert cfg2.compile == "default" and type(model_).__name__ == "VAE"
