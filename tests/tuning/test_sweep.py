"""Sweeps: Tune + Optuna with real SQLite storage, retries, SIGKILL of the driver and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from shapetune.evaluation.on_complete import on_complete_callbacks
from shapetune.tuning.search import TUNE_TRIAL_ATTR, tune_trial_ids
from shapetune.tuning.sweep import SUMMARY_FILE, SweepSettings, run_sweep

from ..conftest import write_space
from ..training.test_ray_driver import RAY_LINES

def study_of(exp: Path, name: str) -> optuna.Study:
    """The sweep's study, read without creating tables: a poll must not race the driver creating them."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp / 'optuna.db'}", skip_table_creation=True)
    return optuna.load_study(study_name=name, storage=storage)


def test_four_trial_sweep_completes_in_optuna_and_tune(tiny_prepared, ray_local, tmp_path):
    space = write_space(tmp_path / "tiny.yaml")
    s = SweepSettings(name="four", space=str(space), data=str(tiny_prepared), trials=4, concurrency=2,
                      storage_path=str(tmp_path / "exp"), evaluate=True)
    with pytest.raises(ValueError, match="pass its callbacks"):  # --evaluate is never dropped silently
        run_sweep(s)
    df = run_sweep(s, callbacks=on_complete_callbacks(s))
    exp = tmp_path / "exp" / "four"
    assert len(df) == 4 and set(df.status) == {"completed"} and (df.epochs == 2).all()
    assert (df.best_val_dice >= df.val_dice).all() and df.best_val_dice.notna().all()
    trials = study_of(exp, "four").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {t.user_attrs[TUNE_TRIAL_ATTR] for t in trials} == set(df.trial_id)
    # Optuna was told the objective Tune recorded, for the same parameters.
    for t in trials:
        row = df[df.trial_id == t.user_attrs[TUNE_TRIAL_ATTR]].iloc[0]
        assert t.value == pytest.approx(row.val_dice)
        assert t.params["optim.lr"] == pytest.approx(row["param:optim.lr"])
    assert pd.read_parquet(exp / SUMMARY_FILE).shape[0] == 4
    # No --cpus-per-worker: each trial got the node's 2 CPUs / concurrency 2, fixed in the settings for a resume.
    assert SweepSettings.model_validate_json((exp / "sweep.json").read_text()).cpus_per_worker == 1.0
    # --evaluate scored every finished trial on the test split already: the service only reads the cache.
    assert len(list((exp / "evaluation" / "cache").glob("*.subjects.parquet"))) == 4
    from shapetune.evaluation.service import evaluate

    res = evaluate(exp, splits=("imperial_test",), trials="all", baselines=(), n_boot=200)
    assert (res.evaluated, res.cached) == (0, 4) and len(res.per_subject) == 4 * 8
    with pytest.raises(ValueError, match="already exists"):
        run_sweep(s)


def test_asha_promotes_trials_rung_by_rung(tiny_prepared, ray_local, tmp_path):
    """Multi-fidelity: ASHA (grace 1, reduction 2, 4 epochs) stops trials only at its rungs (1 and 2 epochs) and
    lets the better ones run on; a trial stopped at a rung scored worse than one that went on from it. Ranked by
    the training loss, which differs between any two trials (a 16^3 model's validation Dice can tie at 0)."""
    space = write_space(tmp_path / "asha.yaml", epochs=4).read_text()
    space = space.replace("scheduler: {name: none}", "scheduler: {name: asha, grace_period: 1, reduction_factor: 2}")
    space = space.replace("{metric: val_dice, mode: max}", "{metric: train_loss, mode: min}")
    (tmp_path / "asha.yaml").write_text(space)
    s = SweepSettings(name="asha", space=str(tmp_path / "asha.yaml"), data=str(tiny_prepared), trials=6,
                      concurrency=2, storage_path=str(tmp_path / "exp"))
    df = run_sweep(s)
    assert len(df) == 6 and set(df.epochs) <= {1, 2, 4}, df[["trial_id", "epochs", "status"]]
    assert (df.epochs == 4).any() and (df.epochs < 4).any(), df[["trial_id", "epochs"]]
    from shapetune.experiment.records import read_records

    records, _ = read_records(tmp_path / "exp" / "asha")
    curves = {r["trial_id"]: [m["train_loss"] for m in r["history"]] for r in records}
    for _, row in df[df.epochs < 4].iterrows():
        rung = int(row.epochs)
        went_on = [c[rung - 1] for t, c in curves.items() if len(c) > rung]
        assert went_on and curves[row.trial_id][rung - 1] >= min(went_on), row.trial_id


def test_default_cpus_share_the_node_among_trials(ray_local):
    from shapetune.training.ray_train import default_cpus

    # ray_local has 2 CPUs: one trial at a time gets both (it trained on 1 thread before, the other core idle)
    assert [default_cpus(n) for n in (1, 2, 3)] == [2.0, 1.0, 1.0]


def test_failing_trial_is_retried_then_recorded_failed(tiny_prepared, ray_local, tmp_path):
    # gamma 2.0 makes a trial raise at epoch 0 on every attempt; the others must finish regardless.
    extra = ("  loss.gamma_cls: {type: categorical, choices: [0.5, 2.0]}\n"
             "  fault_injection.epoch: {type: int, low: 0, high: 0, when: {param: loss.gamma_cls, eq: 2.0}}\n")
    space = write_space(tmp_path / "faulty.yaml", epochs=1, extra=extra)
    space.write_text(space.read_text().replace("  augment.enabled: false\n", "  augment.enabled: false\n"
                                               "  fault_injection.mode: raise\n  fault_injection.once: false\n"))
    s = SweepSettings(name="faulty", space=str(space), data=str(tiny_prepared), trials=4, concurrency=2,
                      storage_path=str(tmp_path / "exp"), sampler="random", seed=3, max_failures=1)
    df = run_sweep(s)
    failed = df[df["param:loss.gamma_cls"] == 2.0]
    assert len(failed) >= 1 and len(df) == 4, df
    assert set(failed.status) == {"failed"} and set(failed.optuna_state) == {"FAIL"}
    assert set(df[df["param:loss.gamma_cls"] == 0.5].status) == {"completed"}
    for trial_id in failed.trial_id:  # one try plus one retry, each logged by the injected fault
        marker = tmp_path / "exp" / "faulty" / "faults" / trial_id / ".fault_injected_epoch0_rank0"
        assert marker.read_text().splitlines() == ["raise", "raise"]


def _tune_cli(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "shapetune.cli", "tune", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _forget_saved_trial(exp: Path, trial_id: str) -> None:
    """Take a finished trial out of Tune's saved state (trial list, searcher, counter), as if the driver had
    been killed before the state that holds it reached the storage path."""
    import json
    import pickle

    import ray.cloudpickle

    state_file = max(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    state["trial_data"] = [t for t in state["trial_data"] if json.loads(t[0])["trial_id"] != trial_id]
    state_file.write_text(json.dumps(state))
    gen_file = max(exp.glob("search_gen_state-*.json"))
    gen = ray.cloudpickle.loads(gen_file.read_bytes())
    gen["counter"] = len(state["trial_data"])
    gen_file.write_bytes(ray.cloudpickle.dumps(gen))
    searcher_file = max(exp.glob("searcher-state-*.pkl"))
    searcher = pickle.loads(searcher_file.read_bytes())
    searcher["_ot_trials"].pop(trial_id, None)
    searcher["_completed_trials"].discard(trial_id)
    searcher_file.write_bytes(pickle.dumps(searcher))


def _searcher_one_trial_behind(exp: Path) -> None:
    """Make the saved searcher and trial counter one trial older than Tune's saved trial list, as a kill
    between Ray's state writes (or during their copy to the storage path) leaves them."""
    import pickle

    import ray.cloudpickle

    last = tune_trial_ids(exp)[-1]
    gen_file = max(exp.glob("search_gen_state-*.json"))
    gen = ray.cloudpickle.loads(gen_file.read_bytes())
    gen["counter"] -= 1
    gen["name:ShapeTuneLimiter"]["live_trials"].discard(last)
    gen_file.write_bytes(ray.cloudpickle.dumps(gen))
    searcher_file = max(exp.glob("searcher-state-*.pkl"))
    searcher = pickle.loads(searcher_file.read_bytes())
    del searcher["_ot_trials"][last]
    searcher["_completed_trials"].discard(last)
    searcher_file.write_bytes(pickle.dumps(searcher))


@pytest.mark.slow
def test_sigkilled_driver_resumes_to_exactly_n_trials(tiny_prepared, tmp_path):
    """SIGKILL mid-trial, after a trial finished that Tune's saved state does not hold yet, with the searcher's
    files one save behind Tune's trial list: the resumed sweep still ends with exactly 4 trials, one Optuna
    trial each, and keeps what finished."""
    space = write_space(tmp_path / "tiny.yaml", epochs=3)
    storage = tmp_path / "exp"
    exp = storage / "killed"
    common = ["--storage-path", str(storage)]
    proc = _tune_cli(["--space", str(space), "--data", str(tiny_prepared), "--trials", "4", "--concurrency", "2",
                      "--name", "killed", *common], tmp_path / "first.log")
    # Kill the whole driver session (driver, its local Ray) once some trial finished and others run.
    deadline = time.time() + 300
    while time.time() < deadline:
        states = []
        if (exp / "optuna.db").exists():
            try:
                states = [t.state for t in study_of(exp, "killed").get_trials()]
            except Exception:  # the study may not exist yet
                pass
        if TrialState.COMPLETE in states and TrialState.RUNNING in states:
            break
        if proc.poll() is not None:
            pytest.fail("the sweep ended before it could be killed:\n" + (tmp_path / "first.log").read_text())
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = study_of(exp, "killed").get_trials()
    assert any(t.state == TrialState.RUNNING for t in before)  # really interrupted mid-trial
    # Tune's state reaches the storage path every sync period: a trial that finished since is unknown to it.
    # Make sure one such trial exists, whatever moment the kill fell on.
    saved = tune_trial_ids(exp)
    done = {t.user_attrs[TUNE_TRIAL_ATTR] for t in before if t.state == TrialState.COMPLETE}
    if not done - set(saved):
        _forget_saved_trial(exp, next(tid for tid in saved if tid in done))
    _searcher_one_trial_behind(exp)

    resumed = _tune_cli(["--resume", "killed", *common], tmp_path / "resume.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    said = (tmp_path / "resume.log").read_text().splitlines()  # the console: the sweep's lines, none of Ray's
    assert [ln for ln in said if any(s in ln for s in RAY_LINES)] == [] and any("finished" in ln for ln in said)
    assert "Started a local Ray instance" in (exp / "ray.log").read_text()  # moved, not lost
    df = pd.read_parquet(exp / SUMMARY_FILE)
    trials = study_of(exp, "killed").get_trials()
    assert len(df) == 4 and df.trial_id.is_unique and set(df.status) == {"completed"}, df
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert sorted(t.user_attrs[TUNE_TRIAL_ATTR] for t in trials) == sorted(df.trial_id)
    done_before = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    after = {t.number: t.value for t in trials}
    assert all(after[n] == v for n, v in done_before.items())  # finished work was kept, not redone
