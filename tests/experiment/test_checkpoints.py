"""Checkpoint files: ``metrics.json`` beside every ``checkpoint.pt`` is what the best checkpoint is chosen from, and
it is trusted only while it belongs to that checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from shapetune.experiment.checkpoints import (METRICS_FILE, CheckpointError, best_checkpoint, load_state,
                                              read_metrics, save_state)


def _save(folder, epoch: int, dice: float, acc: float = 1.0, history: int = 0):
    return save_state(folder, {"epoch": epoch, "metrics": {"epoch": epoch, "val_dice": dice, "val_acc": acc},
                               "history": [{"epoch": e} for e in range(history)], "model": {"w": torch.ones(3)}})


def test_metrics_are_read_from_the_json_not_the_checkpoint(tmp_path):
    pt = _save(tmp_path / "ck", 3, 0.8)
    assert json.loads((tmp_path / "ck" / METRICS_FILE).read_text())["checkpoint_bytes"] == pt.stat().st_size
    pt.write_bytes(b"x" * pt.stat().st_size)  # same size, unreadable: only the JSON can answer
    assert read_metrics(tmp_path / "ck") == {"epoch": 3, "val_dice": 0.8, "val_acc": 1.0}
    with pytest.raises(CheckpointError, match="unreadable"):
        load_state(tmp_path / "ck")


@pytest.mark.parametrize("damage", ["missing", "stale", "garbled"])
def test_a_json_that_does_not_belong_falls_back_to_the_checkpoint(tmp_path, damage):
    ck = tmp_path / "ck"
    _save(ck, 1, 0.5, history=1)
    stale = (ck / METRICS_FILE).read_text()
    _save(ck, 2, 0.9, history=2)
    if damage == "missing":
        (ck / METRICS_FILE).unlink()
    elif damage == "stale":  # what a crash between the checkpoint's write and the JSON's would leave
        (ck / METRICS_FILE).write_text(stale)
    else:
        (ck / METRICS_FILE).write_text("{not json")
    assert read_metrics(ck)["epoch"] == 2 and read_metrics(ck)["val_dice"] == 0.9


def test_best_checkpoint_ranks_ties_to_the_earlier_epoch_and_honours_a_floor(tmp_path):
    _save(tmp_path / "run" / "a", 1, 0.7, acc=1.0)
    _save(tmp_path / "run" / "b", 2, 0.9, acc=0.5)
    _save(tmp_path / "run" / "c", 3, 0.9, acc=0.5)
    assert best_checkpoint(tmp_path / "run", "val_dice", "max") == tmp_path / "run" / "b"
    assert best_checkpoint(tmp_path / "run", "val_dice", "min") == tmp_path / "run" / "a"
    assert best_checkpoint(tmp_path / "run", "val_dice", "max", floor=("val_acc", 0.95)) == tmp_path / "run" / "a"
    assert best_checkpoint(tmp_path / "run", "val_loss", "min") is None
    assert best_checkpoint(tmp_path / "empty", "val_dice", "max") is None
