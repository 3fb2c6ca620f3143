"""Shared fixtures: small synthetic cohorts made once per test session (real files on disk)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from shapetune.data.cohorts import SynthConfig, synth_acdc, synth_imperial
from shapetune.data.template import TemplateGrid

# Dummy credentials for the local S3 server of tests/tuning/test_s3.py, set before any Ray of the session starts:
# Ray's worker processes take their environment from the process that starts Ray.
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}
os.environ.update(S3_TEST_CREDENTIALS)

_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process with pytest's status once the summary is printed, without the interpreter's own
    teardown: in CI at 24904eb the process crashed with a segmentation fault after "850 passed" (a native
    library's finaliser at exit: Ray, gRPC and torch threads are still loaded), and make reported the run failed."""
    status = config.stash.get(_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


SMALL_SPLIT = (("train", 4, 4), ("val", 2, 2), ("test", 2, 2))
QUICK_GRID = TemplateGrid.cube(32, 4.0)


@pytest.fixture(scope="session")
def imperial_raw(tmp_path_factory) -> Path:
    """A 16-subject Imperial-style cohort at 32^3 / 4 mm (raw NIfTI layout)."""
    out = tmp_path_factory.mktemp("imperial_raw")
    synth_imperial(out, SynthConfig(seed=3, grid=32, spacing=4.0), split=SMALL_SPLIT, workers=2, quiet=True)
    return out


@pytest.fixture(scope="session")
def acdc_raw(tmp_path_factory) -> Path:
    """An ACDC-layout cohort of 5 NOR + 5 HCM patients."""
    out = tmp_path_factory.mktemp("acdc_raw")
    synth_acdc(out, SynthConfig(seed=5), n_per_group=5, workers=2, quiet=True)
    return out


@pytest.fixture(scope="session")
def acdc_prepared(acdc_raw, tmp_path_factory) -> Path:
    from shapetune.data.prepare import prepare

    out = tmp_path_factory.mktemp("acdc_prep")
    prepare(acdc_raw, "acdc", out, TemplateGrid.cube(64, 2.0), workers=2, quiet=True)
    return out


@pytest.fixture()
def acdc_copy(acdc_raw, tmp_path) -> Path:
    """A private, writable copy of the ACDC cohort for tests that break files."""
    dst = tmp_path / "acdc"
    shutil.copytree(acdc_raw, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """A 40-subject Imperial-style dataset at 16^3 / 8 mm for training tests."""
    from shapetune.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny")
    synth_imperial(root / "raw", SynthConfig(seed=2, grid=16, spacing=8.0),
                   split=(("train", 12, 12), ("val", 4, 4), ("test", 4, 4)), workers=2, quiet=True)
    prepare(root / "raw", "imperial", root / "prep", TemplateGrid.cube(16, 8.0), workers=2, quiet=True)
    return root / "prep"


@pytest.fixture(scope="session")
def fetal_raw(tmp_path_factory) -> Path:
    """A 15-subject fetal-skull cohort at 32^3 (3 folds of 3 test subjects), raw NIfTI layout."""
    from shapetune.data.fetal.cohort import FetalConfig, synth_fetal

    out = tmp_path_factory.mktemp("fetal_raw")
    synth_fetal(out, FetalConfig(seed=1, n_subjects=15, grid=32, n_test=3, n_val=2), workers=2, quiet=True)
    return out


@pytest.fixture(scope="session")
def fetal_prepared(fetal_raw, tmp_path_factory) -> Path:
    from shapetune.data.fetal.prepare import prepare_fetal

    out = tmp_path_factory.mktemp("fetal_prep")
    prepare_fetal(fetal_raw, out, 32, workers=2, quiet=True)
    return out


FETAL_TINY = ["model.width=4", "model.ladder_hidden=32", "optim.batch_size=4", "model.norm=group"]


def fetal_config(name: str, epochs: int = 2, *extra: str):
    """A shipped fetal config shrunk for tests (32^3 grid, width 4)."""
    from shapetune.config import load_config

    path = Path(__file__).parents[1] / "src" / "shapetune" / "configs" / f"{name}.yaml"
    return load_config(path, ["model.grid=32", f"optim.epochs={epochs}", *FETAL_TINY, *extra])


@pytest.fixture(scope="session")
def fetal_study(fetal_prepared, ray_local, tmp_path_factory):
    """A finished fetal-skull study: CVAE and HCVAE x folds 0 and 1 of 3, 2 epochs each, scored. Trained in this
    process (``workers=0``): through Ray Train each run cost ~25 s, almost all its start-up (91 s for the fixture);
    the study's Ray path is what the sweep test's cross-validation trains through."""
    from shapetune.evaluation.fetal.study import run_study

    out = tmp_path_factory.mktemp("study")
    configs = {"cvae": fetal_config("cvae"), "hcvae": fetal_config("hcvae", 2, "model.latent_dims=[8,8,4]")}
    return run_study(configs, fetal_prepared, out, folds=[0, 1], samples=3, workers=0), configs


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the session (2 CPUs); shut down at the end, never `ray stop`."""
    import ray

    if not ray.is_initialized():
        # The dashboard stays on: Tune frees an early-stopped trial's placement group through the State API.
        ray.init(address="local", num_cpus=2, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


TINY_SPACE = """\
base: lvae
fixed:
  model.grid: 16
  model.width: 4
  model.ladder_hidden: 32
  optim.epochs: {epochs}
  augment.enabled: false
objectives:
  - {{metric: val_dice, mode: max}}
sampler: {{name: tpe, n_startup_trials: 2}}
scheduler: {{name: none}}
hierarchy:
  depth: {{low: 1, high: 3}}
  top: {{low: 2, high: 4}}
  level: {{low: 4, high: 8}}
params:
  loss.lambda_kl: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}
  optim.lr: {{type: float, low: 1.0e-3, high: 5.0e-3, log: true}}
  optim.batch_size: {{type: categorical, choices: [4, 8]}}
{extra}"""


def write_space(path: Path, epochs: int = 2, extra: str = "") -> Path:
    """A tiny 16^3 Ladder VAE search space for sweep tests."""
    path.write_text(TINY_SPACE.format(epochs=epochs, extra=extra))
    return path


@pytest.fixture(scope="session")
def finished_sweep(tiny_prepared, ray_local, tmp_path_factory) -> Path:
    """A finished 2-trial sweep at 16^3 (its experiment folder)."""
    from shapetune.tuning.sweep import SweepSettings, run_sweep

    root = tmp_path_factory.mktemp("sweep")
    space = write_space(root / "tiny.yaml", epochs=2)
    run_sweep(SweepSettings(name="exp", space=str(space), data=str(tiny_prepared), trials=2, concurrency=2,
                            storage_path=str(root / "experiments")))
    return root / "experiments" / "exp"
