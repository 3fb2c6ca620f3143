"""Sweep benchmark: TPE+ASHA vs random search at equal compute, and Tune's overhead between trials.

    python benchmarks/bench_sweep.py --data demo_out/prepared/imperial [--budget-s 600 --epochs 6 --concurrency 2]

Arms (each a real ``shapetune`` sweep of the ``lvae_hcm`` space on a local Ray, same time budget, same
seed, same trial length):
  * ``tpe+asha``: TPE (multivariate, conditional) with ASHA early stopping;
  * ``random``:   random sampling, every trial runs to the end.
Overhead arms run short trials one at a time and measure the seconds from one trial's last report to the
next trial's first training step: in-process trials (1 worker) and nested Ray Train trials (2 workers).
Prints a table and writes ``benchmarks/results/bench_sweep.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from _results import RESULTS, publish

from shapetune.tuning.sweep import SweepSettings, run_sweep



def gaps(exp: Path) -> list[float]:
    """Seconds between a trial's end and the start of the next trial's first step (trials in start order)."""
    from ray.tune import ExperimentAnalysis

    spans = []
    for df in ExperimentAnalysis(str(exp)).trial_dataframes.values():
        if len(df) and "first_step_time" in df:
            spans.append((float(df["first_step_time"].min()), float(df["report_time"].max())))
    spans.sort()
    out = []
    for k in range(1, len(spans)):
        ended_before = [end for _, end in spans[:k] if end <= spans[k][0]]
        if ended_before:
            out.append(spans[k][0] - max(ended_before))
    return out


FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def anytime(exp: Path, start: float, budget_s: float | None) -> dict[str, float]:
    """Best validation Dice reported (any trial, any epoch) by each fraction of the budget: the search's
    anytime curve, which says whether a sampler finds good settings sooner, not only by the end."""
    from ray.tune import ExperimentAnalysis

    if not budget_s:
        return {}
    reports = [(float(t), float(d)) for df in ExperimentAnalysis(str(exp)).trial_dataframes.values()
               if "val_dice" in df and "report_time" in df
               for t, d in zip(df["report_time"], df["val_dice"], strict=True) if np.isfinite(d)]
    out = {}
    for f in FRACTIONS:
        seen = [d for t, d in reports if t - start <= f * budget_s]
        out[f"best_at_{int(f * 100)}pct"] = max(seen) if seen else float("nan")
    return out


def arm(name: str, root: Path, **kw) -> dict:
    exp_root = root / "experiments"
    t0, start = time.perf_counter(), time.time()
    df = run_sweep(SweepSettings(name=name, storage_path=str(exp_root), **kw))
    wall = time.perf_counter() - t0
    g = gaps(exp_root / name)
    curve = anytime(exp_root / name, start, kw.get("time_budget_s"))
    best_col = "best_val_dice"
    return {"arm": name, "trials_started": int(len(df)), "trials_full_length": int((df.status == "completed").sum()),
            "stopped_early": int((df.status == "stopped early").sum()), "epochs_trained": int(df.epochs.sum()),
            "best_val_dice": (float(df[best_col].max()) if best_col in df and df[best_col].notna().any()
                              else float("nan")),
            "wall_s": wall, "gap_median_s": float(np.median(g)) if g else float("nan"),
            "gap_max_s": float(np.max(g)) if g else float("nan"), **curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--space", default="lvae_hcm")
    ap.add_argument("--budget-s", type=float, default=600)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--grace", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="tpe+asha,random,overhead1,overhead2")
    ap.add_argument("--work", default=str(RESULTS / "tmp" / "bench_sweep"))
    args = ap.parse_args()
    import ray

    root = Path(args.work)
    shutil.rmtree(root, ignore_errors=True)
    ray.init(num_cpus=os.cpu_count(), configure_logging=False, log_to_driver=False)
    root.mkdir(parents=True)
    common = dict(space=args.space, data=str(Path(args.data).resolve()), seed=args.seed,
                  overrides=[f"optim.epochs={args.epochs}"])
    rows = []
    for a in args.arms.split(","):
        if a == "tpe+asha":
            r = arm("tpe_asha", root, trials=200, concurrency=args.concurrency, time_budget_s=args.budget_s,
                    sampler="tpe", scheduler="asha", grace_period=args.grace, **common)
        elif a == "random":
            r = arm("random", root, trials=200, concurrency=args.concurrency, time_budget_s=args.budget_s,
                    sampler="random", scheduler="none", **common)
        elif a in ("overhead1", "overhead2"):
            w = 1 if a == "overhead1" else 2
            c = {**common, "overrides": ["optim.epochs=1"]}
            r = arm(f"overhead_{w}worker", root, trials=4, concurrency=1, sampler="random", scheduler="none",
                    workers_per_trial=w, cpus_per_worker=(os.cpu_count() - 0.02) / w,
                    **c)  # 0.01 CPU: the trial function
        else:
            raise SystemExit(f"unknown arm {a}")
        rows.append(r)
        print(r, flush=True)
    cols = ["arm", "trials_started", "trials_full_length", "stopped_early", "epochs_trained", "best_val_dice",
            *[f"best_at_{int(f * 100)}pct" for f in FRACTIONS[:-1]], "wall_s", "gap_median_s", "gap_max_s"]
    rows = [{c: r.get(c, float("nan")) for c in cols} | r for r in rows]
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) and c.startswith("best") else
              f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    publish("bench_sweep",
            f"bench_sweep ({args.space}, {args.epochs} epochs/trial, budget {args.budget_s:.0f} s per search arm)",
            f"{os.cpu_count()} CPUs, space {args.space}, data {args.data}, {args.epochs} epochs per trial, ASHA grace "
            f"{args.grace}, concurrency {args.concurrency}, time budget {args.budget_s:.0f} s per search arm",
            cols, cells, rows)


if __name__ == "__main__":
    main()
