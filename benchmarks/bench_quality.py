"""Quality run: LVAE vs VAE (equal latent budget) on the 32^3 Imperial-style cohort, CPU.

    python benchmarks/bench_quality.py --data demo_out/prepared/imperial [--models lvae,vae --threads 2 ...overrides]

Trains each shipped config in-process (the same engine as the Ray Train workers), keeps the best
checkpoint by validation Dice, and evaluates it on the test split: Dice ED/ES and diagnosis accuracy with
a subject-level bootstrap 95 % CI. A finished run of the same config in ``--runs`` is reused. Prints a table and writes ``benchmarks/results/bench_quality.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _results import RESULTS, publish

from shapetune.evaluation.splits import load_split
from shapetune.evaluation.stats import mean_ci
from shapetune.platform.checkpoints import load_model
from shapetune.platform.config import load_config
from shapetune.platform.engine import Engine, load_training_data
from shapetune.platform.local import train_local

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="lvae,vae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=str(RESULTS / "quality_runs"))
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = load_split(args.data, "test", "test")
    x_test, y_test = test.masks, test.labels
    rows = []
    for name in args.models.split(","):
        cfg = load_config(CONFIGS / f"{name}.yaml", args.overrides)
        data = load_training_data(args.data, cfg.model.grid)
        run_dir = Path(args.runs) / name
        summary = run_dir / "summary.json"
        if summary.exists() and json.loads(summary.read_text())["config"] == cfg.model_dump(mode="json"):
            # A finished run of the identical config is reused: training is the expensive part.
            print(f"reusing the finished run in {run_dir}", flush=True)
            wall = json.loads(summary.read_text())["wall_s"]
            best = run_dir / "checkpoint_best"
        else:
            t0 = time.perf_counter()
            best = train_local(cfg, data, run_dir).best_checkpoint
            wall = time.perf_counter() - t0
        model, cfg2, state = load_model(best)
        dice, prob = Engine(cfg2, model, torch.device("cpu")).predict(x_test)
        correct = ((prob > 0.5) == y_test).astype(float)
        _, _, lo, hi = mean_ci(correct)
        rows.append({"model": name, "latent_dims": cfg.model.latent_dims, "best_epoch": state["epoch"] + 1,
                     "epochs": cfg.optim.epochs, "wall_s": wall, "val_dice_ed": state["metrics"]["val_dice_ed"],
                     "val_dice_es": state["metrics"]["val_dice_es"], "test_dice_ed": float(dice[:, 0].mean()),
                     "test_dice_es": float(dice[:, 1].mean()), "test_acc": float(correct.mean()),
                     "test_acc_ci": [lo, hi]})
        print(rows[-1], flush=True)
    cells = [[r["model"], str(r["latent_dims"]), f"{r['best_epoch']}/{r['epochs']}",
              f"{r['val_dice_ed']:.3f} / {r['val_dice_es']:.3f}", f"{r['test_dice_ed']:.3f} / {r['test_dice_es']:.3f}",
              f"{r['test_acc']:.3f} [{r['test_acc_ci'][0]:.3f}, {r['test_acc_ci'][1]:.3f}]", f"{r['wall_s'] / 60:.1f} min"]
             for r in rows]
    publish("bench_quality", "bench_quality (32³ Imperial-style, CPU)",
            f"{args.threads} CPU threads, overrides {args.overrides}",
            ["model", "latents", "best epoch / epochs", "val Dice ED / ES", "test Dice ED / ES",
             "test accuracy [95 % CI]", "wall"], cells, rows)


if __name__ == "__main__":
    main()
