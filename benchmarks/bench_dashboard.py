"""Dashboard benchmark: an experiment of 1000 trials, first visit vs later visits of the trial-heavy pages.

    python benchmarks/bench_dashboard.py [--trials 1000 --repeats 5 --no-browser]

The experiment is built the way a long sweep leaves it, without training 1000 models: a real Optuna study in
SQLite whose trials are sampled from the shipped ``lvae_hcm`` space by ShapeTune's own define-by-run function
(conditional hierarchy included), told a smooth synthetic objective; ``trials.parquet`` with the columns a
sweep writes; one Tune-style folder per trial (``error.txt`` in the failed ones, 5 %). Measured:
  * AppTest (in process, no browser): the first visit of a page in a fresh process (cold caches) and later
    visits from new sessions (what the 2 s target is about), median of ``--repeats``;
  * Chromium (Playwright on /usr/bin/chromium, when present): from navigation to the page's script finished
    and its plots drawn, first and second visit, through the real ``shapetune dashboard`` server.
Prints a table and writes ``benchmarks/results/bench_dashboard.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _results import RESULTS, publish

from shapetune.dashboard.common import ENV_VAR
from shapetune.dashboard.launch import APP
from shapetune.dashboard.screenshots import CHROMIUM, running_dashboard
from shapetune.experiment.study_storage import sqlite_url
from shapetune.tuning.search import TUNE_TRIAL_ATTR
from shapetune.tuning.sweep import SETTINGS_FILE, SUMMARY_FILE, SweepSettings
from shapetune.search_spaces import load_space
from shapetune.search_spaces.sampling import define_by_run

PAGES = {"runs": "Runs", "export": "Export"}


def build_experiment(root: Path, n: int, seed: int = 0) -> Path:
    """A finished ``n``-trial sweep folder named ``big`` under ``root`` (see the module docstring)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exp = root / "big"
    shutil.rmtree(exp, ignore_errors=True)
    exp.mkdir(parents=True)
    settings = SweepSettings(name="big", space="lvae_hcm", data=str(root / "data"), trials=n, concurrency=8,
                             storage_path=str(root), seed=seed)
    (exp / SETTINGS_FILE).write_text(settings.model_dump_json(indent=2))
    space = load_space("lvae_hcm")
    study = optuna.create_study(study_name="big", storage=sqlite_url(exp), direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = np.random.default_rng(seed)
    sample = define_by_run(space)
    rows = []
    for i in range(n):
        trial = study.ask()
        sample(trial)
        tid = f"{rng.integers(16**8):08x}"
        trial.set_user_attr(TUNE_TRIAL_ATTR, tid)
        p = trial.params
        # a smooth landscape: best near lambda_kl 1e-4, lr 2e-3, deeper hierarchies slightly better
        score = (0.86 - 0.03 * (np.log10(p["loss.lambda_kl"]) + 4) ** 2 - 0.05 * (np.log10(p["optim.lr"]) + 2.7) ** 2
                 + 0.01 * p["hierarchy.depth"] + rng.normal(0, 0.01))
        fate = rng.random()
        status = "failed" if fate < 0.05 else ("stopped early" if fate < 0.45 else "completed")
        epochs = 0 if status == "failed" else (30 if status == "completed" else int(rng.choice([4, 8, 16])))
        folder = exp / f"sweep_trial_{tid}_{i:05d}_depth={p['hierarchy.depth']}"
        folder.mkdir()
        if status == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            (folder / "error.txt").write_text(f"Traceback ...\nRuntimeError: CUDA out of memory (trial {tid})\n")
            val = {}
        else:
            value = float(score - 0.1 * (30 - epochs) / 30)
            study.tell(trial, value)
            val = {"val_dice": value, "val_dice_ed": value + 0.01, "val_dice_es": value - 0.01,
                   "val_acc": float(np.clip(0.75 + rng.normal(0, 0.05), 0, 1)),
                   "val_auc": float(np.clip(0.85 + rng.normal(0, 0.04), 0, 1)), "train_loss": float(rng.gamma(2, 0.1)),
                   "best_val_dice": value}
        rows.append({"trial_id": tid, "status": status, "epochs": epochs, "optuna_number": trial.number,
                     "optuna_state": "FAIL" if status == "failed" else "COMPLETE",
                     "path": str(exp / "trials" / tid), **{f"param:{k}": v for k, v in p.items()}, **val,
                     "wall_s": float(epochs * rng.uniform(20, 40))})
    pd.DataFrame(rows).to_parquet(exp / SUMMARY_FILE, index=False)
    return exp


def apptest_visits(root: Path, page: str, repeats: int) -> tuple[float, list[float]]:
    """Seconds of a page's first visit (fresh process, cold caches) and of ``repeats`` later visits."""
    code = f"""
import json, os, sys, time
from streamlit.testing.v1 import AppTest
os.environ[{ENV_VAR!r}] = {str(root)!r}
out = []
for k in range({repeats} + 1):
    at = AppTest.from_file({str(APP)!r}, default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    if {page!r} != "runs":
        at.switch_page("views/{page}.py").run()
    out.append(time.perf_counter() - t0)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    times = json.loads(res.stdout.strip().splitlines()[-1])
    return times[0], times[1:]


def browser_visits(root: Path) -> dict[str, dict[str, float]] | None:
    """Per page, first and second visit in Chromium: seconds from navigation to the page's script finished
    (data loaded and sent) and to the page drawn (table and first plot on screen). None without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    out = {}
    with running_dashboard([str(root)], timeout_s=120) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for page_name, title in PAGES.items():
            for visit in ("first", "second"):
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                t0 = time.perf_counter()
                page.goto(f"{url}/{'' if page_name == 'runs' else page_name}")
                page.wait_for_function("t => document.querySelector('h1')?.innerText.trim() === t", arg=title,
                                       timeout=600_000)
                page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=600_000)
                done = time.perf_counter() - t0
                if page_name == "runs":
                    page.wait_for_selector("[data-testid=stDataFrame] [role=gridcell]", state="attached",
                                           timeout=600_000)
                    page.locator(".js-plotly-plot").first.wait_for(timeout=600_000)
                out[f"{page_name}_{visit}_done_s"] = done
                out[f"{page_name}_{visit}_drawn_s"] = time.perf_counter() - t0
                page.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="50,1000", help="experiment sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    rows, cells = [], []
    for n in map(int, args.trials.split(",")):
        root = RESULTS / "tmp" / "dashboard" / f"n{n}"
        t0 = time.perf_counter()
        exp = build_experiment(root, n)
        print(f"built {exp} ({n} trials) in {time.perf_counter() - t0:.1f} s")
        browser = None if args.no_browser else browser_visits(root)
        for page in PAGES:
            first, later = apptest_visits(root, page, args.repeats)
            med = statistics.median(later)
            row = {"page": page, "trials": n, "apptest_first_s": first, "apptest_later_median_s": med,
                   "apptest_later_max_s": max(later), "target_s": 2.0, "meets_target": med < 2.0,
                   **{k.removeprefix(f"{page}_"): v for k, v in (browser or {}).items() if k.startswith(page)}}
            rows.append(row)

            def b(k, row=row):
                return f"{row[k]:.2f}" if k in row else "-"

            cells.append([page, str(n), f"{first:.2f}", f"{med:.2f} (max {max(later):.2f})",
                          f"{b('first_done_s')} / {b('first_drawn_s')}",
                          f"{b('second_done_s')} / {b('second_drawn_s')}",
                          "yes" if med < 2.0 else "NO"])
    publish("bench_dashboard", "Dashboard: first visit vs later visits",
            f"{os.cpu_count()} CPU cores, no GPU; AppTest = the page's script in process, median of {args.repeats} "
            "later visits from new sessions; browser = headless Chromium (software rendering) through "
            "`shapetune dashboard`, seconds from navigation to script finished / page drawn (runs: data grid and "
            "first plot on screen)",
            ["page", "trials", "first visit s (AppTest)", "later visits s (AppTest)",
             "browser 1st visit s: done / drawn", "browser 2nd visit s: done / drawn", "< 2 s after first"],
            cells, rows)


if __name__ == "__main__":
    main()
