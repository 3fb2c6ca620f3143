"""Grids are checked before any work: the field of view must hold the LV, the arrays must fit in memory and on disk."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.cardiac_synth import HCM, HEALTHY, render, sample_subject
from shapetune.data.errors import DataError
from shapetune.data.limits import LV_HALF_EXTENT_MM, check_disk, check_field_of_view, check_memory
from shapetune.data.template import TemplateGrid

runner = CliRunner()


def _one_line(text: str) -> str:
    return " ".join(text.split())


# (grid, spacing) -> the suggestion the refusal makes, or None when the grid holds the LV
FIELDS = {
    (16, 2.0): "use --spacing 7.7 with --grid 16, or --grid 61 at 2 mm",
    (24, 5.0): "use --spacing 5.1 with --grid 24, or --grid 25 at 5 mm",
    (64, 1.0): "use --spacing 2 with --grid 64, or --grid 122 at 1 mm",
    (8, 2.0): "use --grid 13 or more, or --grid 61 at 2 mm",  # 15.25 mm voxels would exceed the 10 mm bound
    (64, 2.0): None, (32, 4.0): None, (16, 8.0): None, (128, 1.0): None,
}


@pytest.mark.parametrize("size, spacing", sorted(FIELDS))
def test_field_of_view_must_hold_the_lv(size, spacing):
    grid = TemplateGrid.cube(size, spacing)
    hint = FIELDS[(size, spacing)]
    if hint is None:
        check_field_of_view(grid, "--grid")
        return
    with pytest.raises(DataError) as err:
        check_field_of_view(grid, "--grid")
    assert "needs at least 122 mm along the long axis" in str(err.value) and hint in str(err.value)


def test_the_lv_extent_bound_holds_for_rendered_subjects():
    """Render subjects on a large grid: their myocardium stays inside the recorded half-extent."""
    grid = TemplateGrid.cube(80, 2.0)  # 160 mm: room beyond the bound
    pts = grid.coords()
    for i, label in enumerate([HEALTHY, HCM] * 3):
        s = sample_subject(f"s{i}", label, 20_000 + i)
        for phase in ("ED", "ES"):
            lv = np.argwhere(np.isin(render(s, phase, pts), (2, 3)))
            mm = (lv - (np.array(grid.shape) - 1) / 2) * grid.spacing
            assert (np.abs(mm).max(axis=0) <= np.array(LV_HALF_EXTENT_MM)).all()


def test_synth_refuses_a_field_of_view_too_small_for_the_anatomy(tmp_path):
    res = runner.invoke(app, ["data", "synth", "--cohort", "imperial", "--grid", "16", "--out", str(tmp_path / "x")])
    out = _one_line(res.output)
    assert res.exit_code == 2 and out.startswith("error: --grid 16 --spacing 2:") and "covers 32 x 32 x 32 mm" in out
    assert "--spacing 7.7 with --grid 16" in out and not (tmp_path / "x").exists()


def test_prepare_refuses_a_field_of_view_too_small_for_the_anatomy(acdc_raw, tmp_path):
    res = runner.invoke(app, ["data", "prepare", str(acdc_raw), "--format", "acdc", "--grid", "16", "--spacing", "2",
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "too small for the left ventricle" in _one_line(res.output)
    assert not (tmp_path / "x").exists()


def test_a_grid_that_does_not_fit_in_memory_is_refused_up_front():
    with pytest.raises(DataError) as err:
        check_memory((1024,) * 3, 8, "prepare", "--grid 1024", available=64 * 2**30)
    msg = str(err.value)
    assert msg.startswith("--grid 1024: a 1024x1024x1024 grid needs about 150.0 GiB of memory per worker")
    assert "(1200.0 GiB for 8 worker(s)), but only 64.0 GiB is available; use a smaller --grid" in msg
    with pytest.raises(DataError, match="use --workers 2 or a smaller --grid"):
        check_memory((256,) * 3, 8, "synth", "--grid 256", available=12 * 2**30)
    check_memory((64,) * 3, 8, "synth", "--grid 64", available=4 * 2**30)


@pytest.mark.parametrize("args", [
    ["data", "synth", "--cohort", "imperial", "--grid", "4096"],
    ["data", "synth", "--cohort", "fetal", "--grid", "4096"],
    ["data", "prepare", "SRC", "--format", "acdc", "--grid", "4096"],
    ["data", "prepare", "SRC", "--format", "fetal", "--grid", "4096"],
])
def test_cli_refuses_grids_beyond_this_machines_memory(acdc_raw, tmp_path, args):
    args = [str(acdc_raw) if a == "SRC" else a for a in args]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--workers", "1"])
    out = _one_line(res.output)
    assert res.exit_code == 2 and "error: --grid 4096" in out and "GiB of memory per worker" in out, res.output
    assert "is available" in out and not (tmp_path / "x").exists()


def test_arrays_larger_than_the_free_disk_space_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"masks.npy would take 1073741824.0 GiB but the file system has"):
        check_disk(tmp_path / "new" / "out", 2**60, "masks.npy")
    check_disk(tmp_path / "out", 1024, "masks.npy")
