"""The console while Ray runs: ShapeTune's lines once, Ray's lines in the run's log, tables that fit. (A real
`shapetune train --workers 2` console: tests/training/test_train.py.)"""

from __future__ import annotations


import pandas as pd
import pytest
from rich.console import Console

from shapetune.training.ray_driver import MARK, LineRouter

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
