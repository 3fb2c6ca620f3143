"""The console while Ray runs: ShapeTune's lines once, Ray's lines in the run's log, tables that fit."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from rich.console import Console

from shapetune.training.ray_driver import MARK, LineRouter

TINY = ["model.grid=16", "model.width=4", "model.latent_dims=[8,4,2]", "model.ladder_hidden=32",
        "optim.batch_size=4", "optim.lr=0.003"]
# What Ray prints on its own when nothing routes it (seen on the console of `shapetune train` before routing).
RAY_LINES = ("pid=", "TrainController", "RayTrainWorker", "Reporting training result", "Checkpoint successfully",
             "Token authentication", "Started a local Ray instance", "autoscaler", "View detailed results",
             "Configuration for experiment", "A new study created")


def test_router_logs_every_line_and_echoes_a_marked_one_once(tmp_path):
    shown = []
    router = LineRouter(tmp_path / "ray.log", shown.append)
    line = MARK + "epoch 1/2 loss 1.0"
    router({"pid": 7, "actor_name": "RayTrainWorker", "is_err": False, "lines": [line]})
    router({"pid": 7, "actor_name": "RayTrainWorker", "is_err": True, "lines": [line, "Reporting training result 1"]})
    router({"pid": 8, "actor_name": "TrainController", "is_err": True, "lines": ["Requesting resources"]})
    assert shown == ["epoch 1/2 loss 1.0"]  # Train V2 sent it on both streams
    log = (tmp_path / "ray.log").read_text().splitlines()
    assert log == ["(RayTrainWorker pid=7) [out] " + line, "(RayTrainWorker pid=7) [err] " + line,
                   "(RayTrainWorker pid=7) [err] Reporting training result 1",
                   "(TrainController pid=8) [err] Requesting resources"]


def test_train_prints_each_epoch_once_and_none_of_rays_lines(tiny_prepared, tmp_path):
    """`shapetune train` with 2 DDP workers in its own process and its own local Ray, as a person runs it."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "shapetune.cli", "train", "--config", "lvae", "--data",
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


@pytest.mark.parametrize("width", [80, 60, 200])
def test_trial_table_fits_the_terminal_with_whole_cells(finished_sweep, monkeypatch, width):
    import shapetune.tuning.sweep as sweep

    df = pd.read_parquet(finished_sweep / "trials.parquet")
    con = Console(width=width, record=True, force_terminal=False)
    monkeypatch.setattr(sweep, "console", con)
    sweep.print_table(df)
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    body = [line for line in text.splitlines() if any(t in line for t in df.trial_id)]
    assert len(body) == len(df)  # one line per trial: no cell folded onto a second line
    for tid, line in zip(df.sort_values("best_val_dice", ascending=False).trial_id, body, strict=True):
        assert line.startswith(tid) and "completed" in line and "…" not in line
    if width >= 200:
        assert "not shown" not in text and "optuna" in text and "lr" in text
    else:
        assert "not shown for the terminal's width: " in text and "optuna" in text.split("not shown")[1]
        assert "lr" not in text.split("not shown")[0].split()  # a column is whole or left out
