"""The one ranking rule (``experiment.ranking``) behind the best checkpoint, the trial table's best values and the
training loop's best epoch: larger is better after orienting by mode, and only finite numbers rank."""

from __future__ import annotations

import math

import pytest
import torch

from shapetune.experiment.checkpoints import best_checkpoint, save_state
from shapetune.experiment.ranking import best_value, score


@pytest.mark.parametrize("metrics,mode,expected", [
    ({"m": 0.8}, "max", 0.8),
    ({"m": 0.8}, "min", -0.8),
    ({"m": 3}, "max", 3.0),
    ({}, "max", None),
    ({"m": None}, "max", None),
    ({"m": math.nan}, "max", None),
    ({"m": math.inf}, "min", None),
    ({"m": True}, "max", None),  # a flag is not a measurement
    ({"m": "0.8"}, "max", None),
])
def test_score(metrics, mode, expected):
    assert score(metrics, "m", mode) == expected


@pytest.mark.parametrize("values,mode,expected", [
    ([0.5, 0.9, 0.7], "max", 0.9),
    ([0.5, 0.9, 0.7], "min", 0.5),
    ([math.nan, 0.6], "max", 0.6),  # a diverged epoch does not hide a later finite one
    ([math.nan], "max", None),
    ([], "min", None),
])
def test_best_value(values, mode, expected):
    assert best_value([{"m": v} for v in values], "m", mode) == expected


def test_a_nan_checkpoint_is_never_the_best(tmp_path):
    for epoch, dice in enumerate([math.nan, 0.4, 0.6]):
        save_state(tmp_path / f"checkpoint_{epoch}", {"epoch": epoch, "metrics": {"epoch": epoch, "val_dice": dice},
                                                     "history": [], "model": {"w": torch.ones(1)}})
    assert best_checkpoint(tmp_path, "val_dice", "max").name == "checkpoint_2"
    assert best_checkpoint(tmp_path, "val_dice", "min").name == "checkpoint_1"
