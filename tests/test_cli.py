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
    bad.write_text("base: lvae\nobjectives:\n  - {metric: val_dice}\n"
                   "params:\n  optim.lr: {type: float, low: 2, high: 1}\n")
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


def test_evaluation_table_reads_in_80_columns(monkeypatch):
    """The table `shapetune evaluate` (and so `make demo`) ends with: no line wider than 80 columns, and every
    row's Dice, HD and accuracy whole on one line (the nine-column table wrapped into fragments)."""
    import types

    import pandas as pd
    from rich.console import Console

    import shapetune.cli as cli

    rows = []
    for model in ("demo:best(1b5b3d96)", "vae", "clinical_indices+LR", "PCA(50)+LR"):
        for split in ("imperial_test", "acdc_test"):
            for metric, ph, mean in (("dice", "ED", 0.8701), ("dice", "ES", 0.9043), ("hd", "ED", 6.44),
                                     ("hd", "ES", 5.81), ("rvd", "ED", 0.01)):
                rows.append({"model": model, "split": split, "metric": metric, "phase": ph,
                             "mean": float("nan") if model.startswith("clinical") else mean, "lo": 0, "hi": 1})
            rows.append({"model": model, "split": split, "metric": "accuracy", "phase": "", "mean": 0.995,
                         "lo": 0.985, "hi": 1.0})
    res = types.SimpleNamespace(summary=pd.DataFrame(rows), evaluated=8, cached=0, out_dir=cli.Path("/tmp/e"))
    con = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(cli, "console", con)
    cli._print_eval(res)
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    body = [line for line in text.splitlines() if "imperial_test" in line or "acdc_test" in line]
    assert len(body) == 8
    for line in body:
        assert "0.995 (0.98-1.00)" in line and ("0.870/0.904" in line or "-/-" in line)
        assert "6.4/5.8" in line or "-/-" in line


@pytest.mark.parametrize(("fmt", "option", "value"), [
    ("acdc", "--structure-label", "3"), ("imperial", "--positive", "AD"), ("table", "--groups", "NOR"),
    ("table", "--in-plane", "keep")])
def test_an_option_of_another_format_is_an_error_not_ignored(tmp_path, fmt, option, value):
    res = runner.invoke(app, ["data", "prepare", str(tmp_path), "--format", fmt, "--out", str(tmp_path / "o"),
                              option, value])
    assert res.exit_code == 2 and f"{option}: not an option of --format {fmt}" in " ".join(res.output.split())
