"""Trust and safety: reading an experiment never runs code from it, outputs never replace what ShapeTune did
not write, exports verify only their own plain files, and bad output locations get a one-line error."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.nifti import sha256_file
from shapetune.experiment.records import RECORDS_DIR
from shapetune.experiment.table import load_summary
from shapetune.io import MARKER
from shapetune.serving.export import CHECKSUMS, ExportError, export_model, verify_export
from shapetune.tuning.sweep import SUMMARY_FILE

runner = CliRunner()


class Boom:
    """Unpickling this creates ``marker``: stands for any code a poisoned pickle would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poison_tune_state(exp: Path, marker: Path) -> None:
    """Put the payload everywhere Ray Tune keeps pickles: the objects embedded in ``experiment_state-*.json``
    (Tune's CLOUDPICKLE_FALLBACK entries), ``tuner.pkl`` and the searcher state."""
    blob = pickle.dumps(Boom(marker)).hex()
    for f in exp.glob("experiment_state-*.json"):
        state = json.loads(f.read_text())
        poisoned = []
        for trial_json, runtime in state["trial_data"]:
            t = json.loads(trial_json)
            for key, value in t.items():
                if isinstance(value, dict) and value.get("_type") == "CLOUDPICKLE_FALLBACK":
                    t[key] = {"_type": "CLOUDPICKLE_FALLBACK", "value": blob}
            poisoned.append([json.dumps(t), runtime])
        state["trial_data"] = poisoned
        f.write_text(json.dumps(state))
    for f in [*exp.glob("*.pkl")]:
        f.write_bytes(pickle.dumps(Boom(marker)))


@pytest.fixture()
def poisoned(finished_sweep, tmp_path) -> tuple[Path, Path]:
    """A copy of a finished sweep whose driver 'died before writing trials.parquet', with poisoned Tune state."""
    exp = tmp_path / "experiments" / "exp"
    shutil.copytree(finished_sweep, exp)
    (exp / SUMMARY_FILE).unlink()
    marker = tmp_path / "PWNED"
    poison_tune_state(exp, marker)
    return exp, marker


def test_the_payload_is_live(poisoned):
    """Control: Ray's ExperimentAnalysis (what reading an experiment used to call) runs the payload, so the
    tests below would fail if any reader still unpickled Tune's state."""
    from ray.tune import ExperimentAnalysis

    exp, marker = poisoned
    with pytest.raises(TypeError):  # the payload returns a file object where Tune expects its own objects
        ExperimentAnalysis(str(exp))
    assert marker.exists()


def test_reading_a_poisoned_experiment_runs_no_code(poisoned, finished_sweep, tmp_path):
    from shapetune.dashboard.experiments import failed_trials, learning_curve, load_trials, open_experiment
    from shapetune.evaluation.service import evaluate

    exp, marker = poisoned
    r = runner.invoke(app, ["export", str(exp), "--out", str(tmp_path / "model")])
    assert r.exit_code == 0, r.output
    assert not marker.exists()

    res = evaluate(exp, splits=("imperial_test",), trials="all", baselines=(), use_ray=False, n_boot=50)
    assert set(res.summary.model) == {f"exp:{t}" for t in pd.read_parquet(finished_sweep / SUMMARY_FILE).trial_id}
    assert not marker.exists()

    e = open_experiment(exp)
    trials = load_trials(e)
    assert len(trials) == 2 and set(trials.status) == {"completed"}
    assert failed_trials(e, trials) == {}
    curve = learning_curve(e, trials.trial_id.iloc[0], None)
    assert list(curve.epoch) == [1, 2] and curve.val_dice.notna().all()
    assert not marker.exists()
    assert not (exp / SUMMARY_FILE).exists()  # read-only: the table was rebuilt in memory, not written


def test_the_table_rebuilt_from_records_equals_the_drivers_summary(finished_sweep, poisoned):
    exp, _ = poisoned
    rebuilt = load_summary(exp).drop(columns="path")
    written = pd.read_parquet(finished_sweep / SUMMARY_FILE).drop(columns="path")
    pd.testing.assert_frame_equal(rebuilt, written)
    (exp / RECORDS_DIR / "notes.json").write_text("{}")  # not a record: named, never silently used
    with pytest.warns(UserWarning, match="notes.json"):
        assert len(load_summary(exp)) == 2


def test_an_experiment_without_records_or_summary_is_refused(poisoned):
    exp, marker = poisoned
    shutil.rmtree(exp / RECORDS_DIR)
    r = runner.invoke(app, ["export", str(exp), "--out", str(exp.parent / "m")])
    assert r.exit_code == 2 and "no trial records" in r.output and "storage you trust" in r.output
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_with_one_line(finished_sweep, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(finished_sweep, exp)
    marker = tmp_path / "PWNED"
    for ck in exp.rglob("checkpoint.pt"):
        torch.save({"model": {}, "metrics": Boom(marker)}, ck)
    r = runner.invoke(app, ["export", str(exp), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2, r.output
    assert "refused: not a weights-only checkpoint" in r.output and "Traceback" not in r.output
    assert not marker.exists() and not (tmp_path / "m").exists()


# --- outputs: nothing ShapeTune did not write is replaced ------------------------------------------------

def _user_folder(p: Path) -> Path:
    p.mkdir(parents=True)
    (p / "notes.txt").write_text("my notes")
    return p


@pytest.mark.parametrize(("setup", "message"), [
    (lambda t, exp: _user_folder(t / "mine"), "is not empty and was not written by `shapetune export`"),
    (lambda t, exp: exp.parent, "is not empty and was not written by `shapetune export`"),  # the storage path
    (lambda t, exp: exp, "is not empty and was not written by `shapetune export`"),  # the experiment itself
    (lambda t, exp: (t / "file.txt").write_text("x") and t / "file.txt", "exists and is not a folder"),
    (lambda t, exp: (t / "f").write_text("x") and t / "f" / "model", "is not a writable folder"),
])
def test_export_refuses_an_output_it_did_not_write(finished_sweep, tmp_path, setup, message):
    exp = tmp_path / "experiments" / "exp"
    shutil.copytree(finished_sweep, exp)
    out = setup(tmp_path, exp)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    for force in ([], ["--force"]):
        r = runner.invoke(app, ["export", str(exp), "--out", str(out), *force])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing removed


def test_a_previous_export_is_replaced_only_with_force(finished_sweep, tmp_path):
    out = export_model(finished_sweep, tmp_path / "model")
    first = sha256_file(out / "metrics.json")
    r = runner.invoke(app, ["export", str(finished_sweep), "--out", str(out)])
    assert r.exit_code == 2 and "holds a previous `shapetune export` output; --force replaces it" in r.output
    r = runner.invoke(app, ["export", str(finished_sweep), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    verify_export(out)
    assert sha256_file(out / "metrics.json") == first  # same choice, same content
    assert not list(tmp_path.glob(".model.*"))  # no staging or old copy left behind
    (out / "my_analysis.csv").write_text("kept")  # a user file inside a previous export
    r = runner.invoke(app, ["export", str(finished_sweep), "--out", str(out), "--force"])
    assert r.exit_code == 2 and "did not write (my_analysis.csv)" in r.output
    assert (out / "my_analysis.csv").read_text() == "kept"


def test_an_export_written_before_markers_is_still_recognised(finished_sweep, tmp_path):
    out = export_model(finished_sweep, tmp_path / "model")
    (out / MARKER).unlink()
    r = runner.invoke(app, ["export", str(finished_sweep), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output


# --- verification reads only the export's own plain files -------------------------------------------------

@pytest.mark.timeout(60)  # /dev/zero would hang a reader that followed the list
@pytest.mark.parametrize(("line", "message"), [
    ("{d}  ../../etc/passwd", "line 6: expected"),
    ("{d}  /dev/zero", "line 6: expected"),
    ("{d}  sub/model.safetensors", "line 6: expected"),
    ("{d}  .hidden", "line 6: expected"),
    ("{d}  ..", "line 6: expected"),
    ("not a checksum line", "line 6: expected"),
    ("{d}  config.yaml", "line 6: config.yaml is listed twice"),
    ("{d}  zero", "zero: not a regular file"),
    ("{d}  loop", "loop: not a regular file"),
])
def test_checksums_may_name_only_plain_files_inside_the_export(finished_sweep, tmp_path, line, message):
    out = export_model(finished_sweep, tmp_path / "model")
    (out / "zero").symlink_to("/dev/zero")
    (out / "loop").mkdir()
    sums = out / CHECKSUMS
    sums.write_text(sums.read_text() + line.format(d="0" * 64) + "\n")
    with pytest.raises(ExportError, match=message):
        verify_export(out)


def _resign(out: Path) -> None:
    names = [ln.partition("  ")[2] for ln in (out / CHECKSUMS).read_text().splitlines()]
    (out / CHECKSUMS).write_text("".join(f"{sha256_file(out / n)}  {n}\n" for n in names))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: {**t, "grid": {**t["grid"], "shape": [24, 24, 24]}}, "template.json: grid"),
    (lambda t: {**t, "grid": {**t["grid"], "spacing": 0}}, "template.json: grid"),
    (lambda t: "not json {", "template.json: not valid JSON"),
    (lambda t: [1, 2], "template.json: expected a JSON object"),
])
def test_an_edited_and_resigned_template_is_refused(finished_sweep, tmp_path, edit, message):
    out = export_model(finished_sweep, tmp_path / "model")
    new = edit(json.loads((out / "template.json").read_text()))
    (out / "template.json").write_text(new if isinstance(new, str) else json.dumps(new))
    _resign(out)
    with pytest.raises(ExportError, match=message):
        verify_export(out)
    r = runner.invoke(app, ["predict", str(out), str(tmp_path), "--out", str(tmp_path / "pred")])
    assert r.exit_code == 2 and "template.json" in r.output and "Traceback" not in r.output


# --- predict ------------------------------------------------------------------------------------------------

def test_predict_outputs_follow_the_same_rules(finished_sweep, tiny_prepared, tmp_path):
    model = export_model(finished_sweep, tmp_path / "model")
    r = runner.invoke(app, ["predict", str(model), str(tiny_prepared), "--split", "tset", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "no split 'tset'" in r.output and "test, train, val" in r.output
    assert not (tmp_path / "p").exists()  # nothing written for a refused run
    mine = _user_folder(tmp_path / "mine")
    r = runner.invoke(app, ["predict", str(model), str(tiny_prepared), "--split", "val", "--out", str(mine)])
    assert r.exit_code == 2 and "was not written by `shapetune predict`" in r.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    args = ["predict", str(model), str(tiny_prepared), "--split", "val", "--out", str(tmp_path / "p")]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--force replaces it" in r.output
    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 8
    r = runner.invoke(app, ["predict", str(model), str(tiny_prepared), "--out",
                            str(tmp_path / "p" / "predictions.csv")])
    assert r.exit_code == 2 and "exists and is not a folder" in r.output


def test_train_and_study_refuse_a_folder_they_did_not_write(tiny_prepared, fetal_prepared, tmp_path):
    from shapetune.errors import OutputError
    from shapetune.evaluation.fetal.study import run_study

    from ..conftest import fetal_config

    mine = _user_folder(tmp_path / "mine")
    r = runner.invoke(app, ["train", "--config", "lvae", "--data", str(tiny_prepared), "--out", str(mine),
                            "model.grid=16"])
    assert r.exit_code == 2 and "was not written by `shapetune train`" in r.output
    with pytest.raises(OutputError, match="was not written by `shapetune study`"):
        run_study({"cvae": fetal_config("cvae")}, fetal_prepared, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# --- sweeps ---------------------------------------------------------------------------------------------------

def test_asha_grace_period_is_clamped_to_the_epochs_and_said(tmp_path, capsys):
    from shapetune.experiment.settings import SweepSettings
    from shapetune.tuning.sweep import grace_period
    from shapetune.search_spaces import load_space

    space = load_space("lvae_hcm")  # ASHA grace period 4
    s = SweepSettings(name="g", space="lvae_hcm", data=str(tmp_path), storage_path=str(tmp_path))
    two = space.model_copy(update={"fixed": {**space.fixed, "optim.epochs": 2}})
    assert grace_period(s, two) == 2
    assert "grace period 4 is more than the 2 epoch(s)" in capsys.readouterr().out
    assert grace_period(s.model_copy(update={"grace_period": 1}), two) == 1
    assert capsys.readouterr().out == ""


def test_resume_help_says_to_trust_the_storage():
    r = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "250"})
    text = " ".join(r.output.replace("│", " ").split())
    assert "resume sweeps from storage that only you and people you trust can write" in text
    assert "resume only experiments from storage you trust" in text  # the --resume option's own help


def test_the_driver_reconciles_records_it_could_not_finish(finished_sweep, tmp_path):
    """A driver killed between a trial's last report and its end leaves a record 'running' that Tune restores
    as finished; a record can also be missing (a sweep started before records). The driver's end-of-fit
    reconciliation (from its own ResultGrid) restores both."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    from shapetune.experiment.records import read_record, record_path
    from shapetune.tuning.sweep import reconcile_records

    exp = tmp_path / "exp"
    shutil.copytree(finished_sweep, exp)
    first, second = sorted(pd.read_parquet(exp / SUMMARY_FILE).trial_id)
    rec = read_record(record_path(exp, first))
    rec.update(status="running", history=rec["history"][:1])
    record_path(exp, first).write_text(json.dumps(rec))
    record_path(exp, second).unlink()
    assert reconcile_records(exp, ResultGrid(ExperimentAnalysis(str(exp)))) == 2
    (exp / SUMMARY_FILE).unlink()
    table = load_summary(exp).drop(columns="path").sort_values("trial_id", ignore_index=True)
    written = pd.read_parquet(finished_sweep / SUMMARY_FILE).drop(columns="path").sort_values("trial_id",
                                                                                          ignore_index=True)
    pd.testing.assert_frame_equal(table, written, check_like=True)  # a new record lists its parameters in Tune's order


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=inf", "optim.lr"),
    ("optim.lrr=0.1", "did you mean 'optim.lr'"),
    ("checkpoint.metric=val_dcie", "val_dcie"),
])
def test_tune_overrides_are_checked_before_anything_starts(tiny_prepared, tmp_path, override, message):
    r = runner.invoke(app, ["tune", "--space", "lvae_hcm", "--data", str(tiny_prepared), "--name", "x",
                            "--storage-path", str(tmp_path / "exp"), override])
    assert r.exit_code == 2 and r.output.startswith("error:") and message in r.output, r.output
    assert not (tmp_path / "exp" / "x").exists()
