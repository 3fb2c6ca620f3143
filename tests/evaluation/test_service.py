"""The evaluation service end to end: trials + baselines on the Imperial-style test split and an ACDC split."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shapetune.evaluation.service import EvaluationError, evaluate

from ..training.test_ray_driver import RAY_LINES


@pytest.fixture(scope="module")
def evaluated(finished_sweep, acdc_raw):
    return evaluate(finished_sweep, trials="all", acdc=acdc_raw, n_boot=300)


def test_tables_cover_every_model_split_and_metric(evaluated, finished_sweep):
    ps, summary, lat = evaluated.per_subject, evaluated.summary, evaluated.latents
    models = set(ps.model)
    assert len(models) == 4 and {"clinical_indices+LR", "PCA(50)+LR"} <= models  # 2 trials + 2 baselines
    assert set(ps.split) == {"imperial_test", "acdc_test"}
    counts = ps.groupby(["model", "split"]).size()
    assert ((counts.xs("imperial_test", level="split") == 8).all()
            and (counts.xs("acdc_test", level="split") == 10).all())
    trial_rows = ps[ps.model.str.startswith("exp:")]
    for col in ("dice_ed", "hd_es", "hd95_ed", "assd_es", "rvd_ed", "abs_rvd_es"):
        assert trial_rows[col].notna().all(), col
    assert ps[ps.model == "clinical_indices+LR"].dice_ed.isna().all()  # it reconstructs nothing
    acc = summary[(summary.metric == "accuracy")]
    assert len(acc) == 8 and ((acc.lo <= acc["mean"]) & (acc["mean"] <= acc.hi)).all()
    for view in ("top", "pca", "laplacian", "tsne"):
        assert {f"{view}_x", f"{view}_y"} <= set(lat.columns)
    out = finished_sweep / "evaluation"
    for f in ("per_subject.parquet", "summary.parquet", "latents.parquet", "report.md", "figures/roc.png",
              "figures/dice.png", "figures/latents.png"):
        assert (out / f).exists(), f
    report = (out / "report.md").read_text()
    assert "| model | DC ED | DC ES | HD ED (mm)" in report and "McNemar" in report
    manifest = json.loads((out / "manifest.json").read_text())  # what the dashboard reads back
    rows = {c["name"]: c for c in manifest["candidates"]}
    assert set(rows) == models
    assert all(Path(c["checkpoint"]).is_dir() and c["trial_id"] in c["name"]
               for c in rows.values() if not c["baseline"])
    assert manifest["splits"]["imperial_test"]["split"] == "test" and manifest["splits"]["acdc_test"]["split"] is None


def test_rerun_changes_nothing_and_a_broken_checkpoint_is_reported(evaluated, finished_sweep, acdc_raw, tmp_path):
    before = pd.read_parquet(finished_sweep / "evaluation" / "per_subject.parquet")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    again = evaluate(finished_sweep, trials="all", acdc=acdc_raw, extra=[f"broken={broken}"], n_boot=300)
    assert again.cached == 8 and [e["candidate"] for e in again.errors] == ["broken", "broken"]
    assert "unreadable checkpoint" in again.errors[0]["problem"]
    pd.testing.assert_frame_equal(again.per_subject, before)  # nothing recomputed differently, nothing lost
    assert "broken" in (finished_sweep / "evaluation" / "report.md").read_text()


def test_bad_requests_are_clear(finished_sweep):
    with pytest.raises(EvaluationError, match="needs --acdc "):
        evaluate(finished_sweep, splits=("acdc_test",))
    with pytest.raises(EvaluationError, match="acdc_hard needs --acdc-hard"):
        evaluate(finished_sweep, splits=("acdc_hard",))
    with pytest.raises(EvaluationError, match="unknown split"):
        evaluate(finished_sweep, splits=("mars",))
    with pytest.raises(EvaluationError, match="no trial"):
        evaluate(finished_sweep, splits=("imperial_test",), trials="nope")


def test_a_second_external_split_is_scored_and_reported(evaluated, finished_sweep, acdc_raw):
    """``acdc_hard`` is a split of its own, in the tables and the report's accuracy. Given the same folder as
    ``acdc_test``, its scores come from the content-keyed cache under its own name."""
    res = evaluate(finished_sweep, splits=("imperial_test",), trials="all", acdc_hard=acdc_raw, n_boot=300,
                   use_ray=False)
    ps = res.per_subject
    assert set(ps.split) == {"imperial_test", "acdc_hard"}
    assert res.cached == 8 and res.evaluated == 0  # both splits' scores were cached by content
    same = evaluated.per_subject[evaluated.per_subject.split == "acdc_test"].drop(columns="split")
    hard = ps[ps.split == "acdc_hard"].drop(columns="split")
    cols = ["model", "subject", "prob_hcm", "dice_ed", "dice_es"]
    pd.testing.assert_frame_equal(hard[cols].sort_values(cols[:2]).reset_index(drop=True),
                                  same[cols].sort_values(cols[:2]).reset_index(drop=True))  # same data, same scores
    assert "acc ACDC hard" in (finished_sweep / "evaluation" / "report.md").read_text()


def test_extra_candidates_resolve_run_folders(finished_sweep, tmp_path):
    import json
    import shutil

    from shapetune.evaluation.service import checkpoint_dir

    trial_ckpt = next((finished_sweep / "trials").glob("*/checkpoint_best"))
    assert checkpoint_dir(trial_ckpt.parent) == trial_ckpt
    run = tmp_path / "train_run"  # the layout `shapetune train` leaves: Ray-named checkpoints + summary.json
    shutil.copytree(trial_ckpt, run / "checkpoint_2026-01-01_00-00-00.000000")
    (run / "summary.json").write_text(
        json.dumps({"best_checkpoint": "/elsewhere/checkpoint_2026-01-01_00-00-00.000000"}))
    assert checkpoint_dir(run) == run / "checkpoint_2026-01-01_00-00-00.000000"
    with pytest.raises(EvaluationError, match="summary.json"):
        checkpoint_dir(tmp_path)


def test_the_command_keeps_rays_lines_in_the_evaluation_log(finished_sweep, tmp_path):
    """`shapetune evaluate` in its own process and its own local Ray, as a person runs it: the table on the console,
    none of Ray's lines (`make demo` showed its token-authentication warning there), and Ray's driver log lines in
    evaluation/ray.log."""
    exp = tmp_path / "experiments" / "exp"
    shutil.copytree(finished_sweep, exp, ignore=shutil.ignore_patterns("evaluation"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "shapetune.cli", "evaluate", "exp", "--storage-path",
                          str(exp.parent), "--splits", "imperial_test", "--baselines", ""],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = (res.stdout + res.stderr).splitlines()
    assert "evaluation: means over subjects" in res.stdout and "exp:best" in res.stdout
    assert [ln for ln in lines if any(s in ln for s in RAY_LINES)] == []
    assert "Started a local Ray instance" in (exp / "evaluation" / "ray.log").read_text()  # nothing lost
