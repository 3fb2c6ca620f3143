"""``shapetune dashboard EXP --optuna``: optuna-dashboard on a consistent snapshot of the sweep's SQLite study (never
the live file), with the evaluation's figures attached to the evaluated trials; in headless Chromium."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta

from shapetune.dashboard.optuna_server import attach_evaluation, optuna_dashboard_storage
from shapetune.dashboard.screenshots import running_dashboard
from shapetune.evaluation.service import evaluate
from shapetune.experiment.table import TUNE_TRIAL_ATTR

from .test_browser import ARTIFACTS, _browser

pytest.importorskip("optuna_dashboard")  # the optuna-dashboard extra, installed by `make test`


@pytest.fixture(scope="module")
def evaluated_sweep(finished_sweep, tmp_path_factory):
    """A copy of the finished sweep (the session's fixture stays as it is), evaluated on its test split."""
    exp = tmp_path_factory.mktemp("optuna") / finished_sweep.name
    shutil.copytree(finished_sweep, exp, ignore=shutil.ignore_patterns("evaluation"))
    evaluate(exp, splits=("imperial_test",), trials="all", baselines=(), use_ray=False, n_boot=50)
    return exp


def test_the_snapshot_is_consistent_while_the_sweep_writes(evaluated_sweep):
    live = sqlite3.connect(evaluated_sweep / "optuna.db")
    live.execute("BEGIN IMMEDIATE")  # a writer mid-transaction, as a running sweep is at every tell
    live.execute("UPDATE studies SET study_name = 'renamed-mid-write'")
    try:
        with optuna_dashboard_storage(evaluated_sweep) as (url, artifacts, name):
            snap = optuna.load_study(study_name=name, storage=url)  # the committed state, not the open write
            assert len(snap.trials) == 2 and artifacts is not None
            folder = Path(url.removeprefix("sqlite:///")).parent
    finally:
        live.rollback()
        live.close()
    assert not folder.exists()  # the snapshot is removed with the server


def test_evaluation_figures_are_attached_to_the_evaluated_trials(evaluated_sweep):
    with optuna_dashboard_storage(evaluated_sweep) as (url, artifacts, name):
        assert attach_evaluation(url, name, evaluated_sweep, artifacts) == 2
        storage = optuna.storages.RDBStorage(url)
        for trial in optuna.load_study(study_name=name, storage=storage).trials:
            names = {m.filename for m in get_all_artifact_meta(trial, storage=storage)}
            assert "report.md" in names and any(n.endswith(".png") for n in names), trial.user_attrs
    live = optuna.load_study(study_name=name, storage=f"sqlite:///{evaluated_sweep / 'optuna.db'}")
    assert all(not get_all_artifact_meta(t, storage=live._storage) for t in live.trials)  # the sweep's own study


def test_optuna_dashboard_shows_the_trials_in_chromium(evaluated_sweep):
    executable = _browser()
    from playwright.sync_api import sync_playwright

    with running_dashboard([str(evaluated_sweep)], extra=("--optuna",), health="/api/meta") as url:
        studies = json.loads(urllib.request.urlopen(f"{url}/api/studies", timeout=10).read())["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == evaluated_sweep.name]
        detail = json.loads(urllib.request.urlopen(f"{url}/api/studies/{study['study_id']}", timeout=30).read())
        tune_ids = [a["value"] for t in detail["trials"] for a in t["user_attrs"] if a["key"] == TUNE_TRIAL_ATTR]
        assert len(detail["trials"]) == 2 and len(set(tune_ids)) == 2
        for t in detail["trials"]:  # optuna-dashboard lists the attached evaluation on every evaluated trial
            assert {"report.md", "dice.png"} <= {a["filename"] for a in t["artifacts"]}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/dashboard/studies/{study['study_id']}/trials")
            for text in ("Trial 0", "Trial 1", tune_ids[0], "report.md"):  # the list, then trial 0's page
                page.get_by_text(text).first.wait_for(timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "optuna_dashboard_trials.png"))
            browser.close()
