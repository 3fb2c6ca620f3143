"""The `shapetune` command: help for every command, and the data commands end to end on real files."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shapetune.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["data"], ["data", "synth"], ["data", "prepare"], ["data", "show"], ["train"],
                                  ["tune"], ["export"], ["predict"], ["evaluate"],
                                  ["dashboard"]])
def test_help_for_every_command(args):
    res = runner.invoke(app, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "shapetune.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "shapetune" in out.stdout


def test_data_commands_end_to_end(tmp_path):
    raw, prep, figs = tmp_path / "raw", tmp_path / "prep", tmp_path / "figs"
    res = runner.invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(raw), "--n-per-group", "2",
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert (raw / "patient021" / "Info.cfg").exists() and (raw / "patient062" / "Info.cfg").exists()
    args = ["data", "prepare", str(raw), "--format", "acdc", "--out", str(prep), "--grid", "32", "--spacing", "4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "prepared 4 subjects" in res.output, res.output
    res = runner.invoke(app, args)
    assert "up to date" in res.output
    res = runner.invoke(app, ["data", "show", str(prep), "--figures", str(figs)])
    assert res.exit_code == 0, res.output
    assert "Subjects per split and class" in res.output and "MWT (mm)" in res.output
    assert (figs / "mosaic.png").stat().st_size > 5000 and (figs / "indices.png").exists()


def test_bad_input_exit_code_and_message(tmp_path):
    raw = tmp_path / "raw"
    runner.invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(raw), "--n-per-group", "1", "--workers", "1"])
    bad = raw / "patient061" / "patient061_frame01_gt.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    args = ["data", "prepare", str(raw), "--format", "acdc", "--out", str(tmp_path / "p"), "--grid", "32",
            "--spacing", "4", "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "patient061_frame01_gt.nii.gz" in res.output and "cannot read NIfTI" in res.output
    res = runner.invoke(app, [*args, "--skip-bad"])
    assert res.exit_code == 0 and "1 subject(s) skipped" in res.output and "patient061" in res.output
    res = runner.invoke(app, ["data", "show", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "dataset.json missing" in res.output


def test_tune_errors_are_clear(tmp_path):
    res = runner.invoke(app, ["tune", "--storage-path", str(tmp_path)])
    assert res.exit_code == 2 and "--space, --data and --name are required" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: lvae\nobjectives:\n  - {metric: val_dice}\nparams:\n  optim.lr: {type: float, low: 2, high: 1}\n")
    res = runner.invoke(app, ["tune", "--space", str(bad), "--data", str(tmp_path), "--name", "x",
                              "--storage-path", str(tmp_path / "exp")])
    assert res.exit_code == 2 and f"{bad}:5:" in res.output and "low 2.0 > high 1.0" in res.output
    res = runner.invoke(app, ["tune", "--resume", "nothing", "--storage-path", str(tmp_path)])
    assert res.exit_code == 2 and "no sweep named 'nothing'" in res.output
    res = runner.invoke(app, ["tune", "--space", "lvae_hcm", "--data", str(tmp_path), "--name", "x",
                              "--storage-path", "s3://"])
    assert res.exit_code == 2 and "a URI needs a bucket and a path" in res.output
    missing = f"file://{tmp_path}/bucket/no-data"
    res = runner.invoke(app, ["tune", "--space", "lvae_hcm", "--data", missing, "--name", "x",
                              "--storage-path", f"file://{tmp_path}/bucket/exp"])
    assert res.exit_code == 2 and f"{missing}: not found" in res.output
    assert not (tmp_path / "s3:").exists() and not list(tmp_path.glob("file:*"))  # no URI taken for a folder


def test_dashboard_refuses_paths_without_experiments(tmp_path):
    res = runner.invoke(app, ["dashboard", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "nowhere" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["dashboard", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not an experiment" in res.output
