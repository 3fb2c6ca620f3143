"""Training: Ray Train DDP on CPU (gloo), checkpoint reload, crash recovery, determinism, data checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.errors import DataError
from shapetune.training.checkpoints import load_model
from shapetune.config import load_config
from shapetune.training.engine import Engine
from shapetune.training.tasks.cardiac import load_training_data
from shapetune.training.local import train_local
from shapetune.training.ray_driver import MARK

from .test_ray_driver import RAY_LINES

TINY = ["model.grid=16", "model.width=4", "model.latent_dims=[8,4,2]", "model.ladder_hidden=32",
        "optim.batch_size=4", "optim.lr=0.003"]


def test_two_worker_ddp_run_learns_prints_each_epoch_once_and_checkpoint_reloads(tiny_prepared, tmp_path):
    """`shapetune train --workers 2` in its own process and its own local Ray, as a person runs it: the console shows
    ShapeTune's lines once and none of Ray's (they are in the run's log), the run learns, and its best checkpoint
    rebuilds the model the workers trained. (One run for both: each Ray Train run costs 20-25 s of start-up.)"""
    out = tmp_path / "run"
    config = tmp_path / "lvae.yaml"  # the defaults (the shipped lvae's KL warm-up and augmentation blur 2 epochs)
    config.write_text("model:\n  name: lvae\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "shapetune.cli", "train", "--config", str(config), "--data",
                          str(tiny_prepared), "--out", str(out), "--workers", "2", *TINY, "optim.epochs=2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = (res.stdout + res.stderr).splitlines()
    assert [ln.split(" loss ")[0] for ln in lines if "epoch" in ln and " loss " in ln] == ["epoch 1/2", "epoch 2/2"]
    assert [ln for ln in lines if any(s in ln for s in RAY_LINES)] == []
    assert max(len(ln) for ln in lines if not ln.startswith(("checkpoint:", "run folder:", "Ray's log:"))) <= 80
    log = (out / "ray.log").read_text()  # nothing lost: Ray's lines are in the run's log
    for line in ("Started a local Ray instance", "Reporting training result", MARK + "epoch 2/2"):
        assert line in log, (line, log[-3000:])
    assert f"Ray's log: {out / 'ray.log'}" in res.stdout

    h = pd.read_csv(out / "history.csv")
    assert list(h.epoch) == [0, 1] and h.train_loss.iloc[1] < h.train_loss.iloc[0]
    assert {"train_bce", "train_dice_loss", "train_kl", "train_kl_0", "train_kl_2", "train_ce", "val_dice_ed",
            "val_dice_es", "val_acc", "val_auc", "samples_per_s"} <= set(h.columns)
    assert (out / "summary.json").exists() and (out / "learning_curves.png").exists()
    # The best checkpoint rebuilds the model and reproduces the metrics the workers recorded for it.
    cfg = load_config(config, TINY + ["optim.epochs=2"])
    assert cfg == load_config(None, TINY + ["optim.epochs=2"])
    model, cfg2, state = load_model(Path(json.loads((out / "summary.json").read_text())["best_checkpoint"]))
    assert cfg2 == cfg and set(state) >= {"model", "optimizer", "config", "epoch", "metrics", "history"}
    data = load_training_data(str(tiny_prepared), 16)
    eng = Engine(cfg2, model, torch.device("cpu"))
    val = eng.validate(data)
    # Workers predicted half the set each in other batch shapes, so oneDNN may pick other conv kernels and a
    # voxel near p=0.5 may flip: equal to rounding, while another epoch's weights differ by far more.
    # (After 2 epochs the Dice is near 0.1 with many voxels near p=0.5: the rounding can reach a few 1e-3, more
    # than the gap between the two epochs here, so the epoch is checked by the selection rule instead.)
    for k in ("val_dice_ed", "val_dice_es", "val_acc"):
        assert val[k] == pytest.approx(state["metrics"][k], abs=5e-3), k
    assert state["epoch"] == int(h.loc[h.val_dice.idxmax(), "epoch"])  # the best epoch's weights were kept
    # This folder is a Ray Train run's: continuing it in one process would start again over it.
    r = CliRunner().invoke(app, ["train", "--config", str(config), "--data", str(tiny_prepared), "--out", str(out),
                                 "--workers", "0", *TINY, "optim.epochs=3"])
    assert r.exit_code == 2 and "holds a run trained through Ray Train" in " ".join(r.output.split())


def test_train_in_this_process_resumes_and_keeps_to_its_kind_of_run(tiny_prepared, tmp_path):
    """`shapetune train --workers 0`: no Ray; a second call with more epochs goes on from checkpoint_latest."""
    out = tmp_path / "run"
    base = ["train", "--config", "lvae", "--data", str(tiny_prepared), *TINY]
    args = [*base, "--out", str(out), "--workers", "0", "--cpus-per-worker", "1"]
    r = CliRunner().invoke(app, [*args, "optim.epochs=2"])
    assert r.exit_code == 0, r.output
    assert [ln.split(" loss ")[0] for ln in r.output.splitlines() if " loss " in ln] == ["epoch 1/2", "epoch 2/2"]
    assert "Ray's log" not in r.output and not (out / "ray.log").exists()
    assert {"checkpoint_best", "checkpoint_latest", "summary.json", "history.csv"} <= {p.name for p in out.iterdir()}
    first = pd.read_csv(out / "history.csv")
    r = CliRunner().invoke(app, [*args, "optim.epochs=3"])
    assert r.exit_code == 0, r.output
    assert [ln.split(" loss ")[0] for ln in r.output.splitlines() if " loss " in ln] == ["epoch 3/3"]
    h = pd.read_csv(out / "history.csv")
    assert list(h.epoch) == [0, 1, 2] and list(h.resumed_from_epoch) == [-1, -1, 1]
    pd.testing.assert_frame_equal(h.iloc[:2][first.columns], first)  # the finished epochs, kept as they were
    model, _, state = load_model(out / "checkpoint_best")  # what export and evaluate read
    assert state["epoch"] == int(h.loc[h.val_dice.idxmax(), "epoch"])
    # Through Ray this folder would start again over the in-process run: refused before Ray starts.
    r = CliRunner().invoke(app, [*base, "--out", str(out), "optim.epochs=4"])
    assert r.exit_code == 2 and "trained in one process (--workers 0)" in " ".join(r.output.split())
    r = CliRunner().invoke(app, [*args, "model.width=8", "optim.epochs=4"])  # another network: not a resume
    assert r.exit_code == 2 and "another model configuration" in " ".join(r.output.split())
    assert len(pd.read_csv(out / "history.csv")) == 3  # untouched
    r = CliRunner().invoke(app, [*base, "--out", "s3://bucket/run", "--workers", "0"])
    assert r.exit_code == 2 and "writes a local run folder" in " ".join(r.output.split())


def test_two_worker_fetal_run_with_the_size_frame(fetal_prepared, ray_local, tmp_path):
    """DDP on a size-frame model: the size head's data-set buffers follow rank 0, so the checkpoint (rank 0's)
    reproduces what both workers validated together."""
    from shapetune.training.ray_train import run_training
    from shapetune.training.tasks.fetal import FetalTask, load_fetal
    from tests.conftest import fetal_config

    cfg = fetal_config("cvae", 2)
    assert cfg.model.size_frame  # shipped on
    out = run_training(cfg, fetal_prepared, tmp_path / "run", workers=2)
    assert "train_size" in out.history.columns and out.history.train_size.notna().all()
    model, cfg2, state = load_model(out.best_checkpoint)
    head = model.size_head
    assert bool(head.ready) and (head.err2 < 1).all() and (head.scale != 1).any()
    eng = Engine(cfg2, model, torch.device("cpu"))
    val = FetalTask().validate(eng, load_fetal(str(fetal_prepared), 32, cfg2.data.fold))
    for k in ("val_dice_3v", "val_dice_2v", "val_dice_1v"):
        assert val[k] == pytest.approx(state["metrics"][k], abs=5e-3), k


def test_checkpoint_reload_gives_bit_identical_outputs(tiny_prepared, tmp_path):
    cfg = load_config(None, TINY + ["optim.epochs=1"])
    data = load_training_data(str(tiny_prepared), 16)
    out = train_local(cfg, data, tmp_path / "run", verbose=False)
    x = torch.from_numpy(data.val_x[:4]).float()
    live = out.engine.model.eval()
    reloaded, _, _ = load_model(tmp_path / "run" / "checkpoint_latest")
    with torch.no_grad():
        a, b = live(x), reloaded(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.cls_logit, b.cls_logit)


def test_same_config_and_seed_give_same_metrics(tiny_prepared):
    cfg = load_config(None, TINY + ["optim.epochs=2"])
    data = load_training_data(str(tiny_prepared), 16)
    h1 = train_local(cfg, data, verbose=False).history.drop(columns=["samples_per_s", "epoch_time_s", "peak_mem_mb"])
    h2 = train_local(cfg, data, verbose=False).history.drop(columns=["samples_per_s", "epoch_time_s", "peak_mem_mb"])
    assert h1.equals(h2)  # bitwise on CPU
    h3 = train_local(load_config(None, TINY + ["optim.epochs=2", "seed=1"]), data, verbose=False).history
    assert not np.isclose(h1.train_loss.iloc[-1], h3.train_loss.iloc[-1], rtol=0, atol=1e-9)


def test_deadline_cuts_the_run_and_its_schedule(tiny_prepared, tmp_path):
    """A run past its deadline still ends properly: timed probe epochs, one last validated epoch at the
    bottom of the (shortened) cosine schedule, the checkpoints and summary saying how long it was."""
    import json
    import time

    from shapetune.experiment.checkpoints import load_state
    from shapetune.training.loop import PROBE_EPOCHS, epochs_for_deadline

    assert epochs_for_deadline(500, 3, 2.0, 100.0) == 53 and epochs_for_deadline(40, 3, 2.0, 100.0) == 40
    assert epochs_for_deadline(500, 3, 2.0, -5.0) == 4  # overdue: one more epoch, never an unfinished run
    cfg = load_config(None, TINY + ["optim.epochs=30", "optim.schedule=cosine", "val_every=10"])
    data = load_training_data(str(tiny_prepared), 16)
    out = train_local(cfg, data, tmp_path / "run", verbose=False, deadline=time.time())
    h = out.history
    assert len(h) == PROBE_EPOCHS + 1 and h.val_dice.notna().iloc[-1]
    assert h.lr.iloc[-1] == pytest.approx(cfg.optim.lr * cfg.optim.min_lr_ratio)
    latest = load_state(tmp_path / "run" / "checkpoint_latest")
    assert latest["epoch"] == PROBE_EPOCHS and latest["config"]["optim"]["epochs"] == PROBE_EPOCHS + 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == PROBE_EPOCHS + 1
    assert (tmp_path / "run" / "checkpoint_best" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(tiny_prepared, ray_local, tmp_path):
    from shapetune.training.ray_train import run_training

    cfg = load_config(None, TINY + ["optim.epochs=3", "max_failures=1", "fault_injection={epoch: 2, rank: 1}"])
    out = run_training(cfg, tiny_prepared, tmp_path / "run", workers=2)
    assert (tmp_path / "run" / ".fault_injected_epoch2_rank1").exists()  # the worker really died
    h = out.history
    assert list(h.epoch) == [0, 1, 2]
    # The crash came at epoch 2; the group restarted from the latest registered checkpoint (epoch 0 or 1,
    # depending on whether the controller had registered epoch 1's before the worker died) and carried on.
    resumed = int(h.resumed_from_epoch.iloc[-1])
    assert resumed in (0, 1) and (h.resumed_from_epoch.iloc[: resumed + 1] == -1).all()


def test_grid_mismatch_is_a_clear_error(tiny_prepared):
    with pytest.raises(DataError, match="does not match the model grid 32"):
        load_training_data(str(tiny_prepared), 32)


def test_augmentation_keeps_anatomy(tiny_prepared):
    from shapetune.training.augment import augment_batch
    from shapetune.config import AugmentConfig

    data = load_training_data(str(tiny_prepared), 16)
    x = torch.from_numpy(data.train_x[:6]).float()
    g = torch.Generator().manual_seed(0)
    y = augment_batch(x, AugmentConfig(rotate_deg=8, translate_vox=1, elastic_vox=0.5), g)
    assert y.shape == x.shape and set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert not torch.equal(x, y)
    # No flips: the septum (low W) stays on the same side; volumes change little.
    def wcentre(v):
        w = torch.arange(16.0)
        return (v.sum(dim=(2, 3, 4)) * 0 + (v * w).sum(dim=(2, 3, 4)) / v.sum(dim=(2, 3, 4)).clamp(min=1))
    assert torch.allclose(wcentre(x), wcentre(y), atol=1.5)
    assert torch.allclose(y.sum(dim=(2, 3, 4)), x.sum(dim=(2, 3, 4)), rtol=0.25)
    off = augment_batch(x, AugmentConfig(enabled=False), g)
    assert torch.equal(off, x)


def test_cosine_schedule_is_a_function_of_the_epoch():
    from shapetune.models.registry import build_model

    cfg = load_config(None, TINY + ["optim.epochs=11", "optim.schedule=cosine", "optim.min_lr_ratio=0.1"])
    eng = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    lrs = [eng.lr_at(e) for e in range(11)]
    assert lrs[0] == pytest.approx(0.003) and lrs[-1] == pytest.approx(0.0003) and lrs[5] == pytest.approx(0.00165)
    # decreasing, and the same after a resume at any epoch; strict=False: consecutive pairs (lrs[1:] is one shorter)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    const = Engine(load_config(None, TINY), build_model(cfg.model), torch.device("cpu"))
    assert {const.lr_at(e) for e in range(5)} == {0.003}
