"""Shared fixtures: small synthetic cohorts made once per test session (real files on disk)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shapetune.data.cohorts import SynthConfig, synth_acdc, synth_imperial
from shapetune.data.template import TemplateGrid

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
