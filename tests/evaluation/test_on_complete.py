"""``tune --evaluate`` as the CLI builds it: the callbacks handed to the sweep, and the settings it refuses before
anything starts (the sweep itself is run with them in ``tests/tuning/test_sweep.py``)."""

from __future__ import annotations

import pytest

from shapetune.config import ConfigError
from shapetune.evaluation.on_complete import EvaluateOnComplete, on_complete_callbacks
from shapetune.tuning.sweep import SweepSettings


def _settings(tmp_path, space: str, storage_path: str | None = None, evaluate: bool = True) -> SweepSettings:
    return SweepSettings(name="s", space=space, data=str(tmp_path / "data"), evaluate=evaluate,
                         storage_path=storage_path or str(tmp_path / "exp"))


@pytest.mark.parametrize("space, storage_path, problem", [
    ("lvae_hcm", "file:///tmp/bucket/experiments", "with a URI --storage-path"),
    ("hcvae_fetal", None, "which a fetal sweep has none of"),
])
def test_refused_before_the_sweep_starts(tmp_path, space, storage_path, problem):
    with pytest.raises(ConfigError, match=problem):
        on_complete_callbacks(_settings(tmp_path, space, storage_path))


def test_one_callback_on_the_sweeps_first_objective(tmp_path):
    assert on_complete_callbacks(_settings(tmp_path, "lvae_hcm", evaluate=False)) == []
    [cb] = on_complete_callbacks(_settings(tmp_path, "lvae_hcm_pareto"))
    assert isinstance(cb, EvaluateOnComplete) and (cb.objective, cb.mode) == ("val_dice", "max")
    assert cb.exp_dir == str(tmp_path / "exp" / "s")
