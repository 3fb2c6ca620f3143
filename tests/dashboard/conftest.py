"""A small real experiment folder for the dashboard: a 3-trial 16^3 sweep (2D top latent) evaluated on the
Imperial-style test split and an ACDC-style split, a two-objective sweep (Pareto front), a sweep whose only
trial failed, and a sweep that has just started (settings written, no trial yet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_space

SPACE_2D = """\
base: lvae
fixed:
  model.grid: 16
  model.width: 4
  model.ladder_hidden: 32
  optim.epochs: 3
  optim.batch_size: 4
  # The shipped lvae's head at 0.1 of the lr (2026-12-03) left this 3-epoch, width-4 model's ED reconstruction of
  # the page's first subject at 32 mesh vertices (340 at ES): the Shapes page's tests need a real surface.
  optim.head_lr_scale: 1.0
  augment.enabled: false
objectives:
  - {metric: val_dice, mode: max}
sampler: {name: tpe, n_startup_trials: 2}
scheduler: {name: none}
hierarchy:
  depth: {low: 2, high: 3}
  top: {low: 2, high: 2}
  level: {low: 4, high: 8}
params:
  loss.lambda_kl: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  optim.lr: {type: float, low: 5.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="session")
def dash_storage(tiny_prepared, acdc_raw, ray_local, tmp_path_factory) -> Path:
    """A storage folder holding the experiments ``lv2d`` (evaluated), ``pareto``, ``broken`` and ``starting``."""
    from shapetune.evaluation.service import evaluate
    from shapetune.tuning.sweep import SweepSettings, run_sweep

    root = tmp_path_factory.mktemp("dash")
    storage = root / "experiments"
    (root / "lv2d.yaml").write_text(SPACE_2D)
    run_sweep(SweepSettings(name="lv2d", space=str(root / "lv2d.yaml"), data=str(tiny_prepared), trials=3,
                            concurrency=2, storage_path=str(storage), seed=1))
    evaluate(storage / "lv2d", trials="all", acdc=acdc_raw, n_boot=200, use_ray=False)  # Ray's path: test_service
    broken = write_space(root / "broken.yaml", epochs=1)
    broken.write_text(broken.read_text().replace("  augment.enabled: false\n", "  augment.enabled: false\n"
                                                 "  fault_injection.epoch: 0\n  fault_injection.mode: raise\n"
                                                 "  fault_injection.once: false\n"))
    run_sweep(SweepSettings(name="broken", space=str(broken), data=str(tiny_prepared), trials=1,
                            storage_path=str(storage), max_failures=0))
    pareto = write_space(root / "pareto.yaml", epochs=1)
    pareto.write_text(pareto.read_text().replace("  - {metric: val_dice, mode: max}\n",
                                                 "  - {metric: val_dice, mode: max}\n"
                                                 "  - {metric: val_acc, mode: max}\n"))
    run_sweep(SweepSettings(name="pareto", space=str(pareto), data=str(tiny_prepared), trials=2, concurrency=2,
                            storage_path=str(storage)))
    settings = json.loads((storage / "lv2d" / "sweep.json").read_text())
    (storage / "starting").mkdir()
    (storage / "starting" / "sweep.json").write_text(json.dumps({**settings, "name": "starting"}))
    return storage


@pytest.fixture()
def app_for(monkeypatch):
    """An AppTest of the dashboard opened on the given experiment paths."""
    from streamlit.testing.v1 import AppTest

    from shapetune.dashboard.common import ENV_VAR
    from shapetune.dashboard.launch import APP

    def make(*paths: Path) -> AppTest:
        monkeypatch.setenv(ENV_VAR, "\n".join(map(str, paths)))
        return AppTest.from_file(str(APP), default_timeout=180)

    return make


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (to prove the dashboard wrote nothing)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}
