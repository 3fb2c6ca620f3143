"""The cardiac GPU check (issue 17 §4): one script, about 8 minutes on one GPU.

    bash benchmarks/gpu_check.sh                    # on the GPU machine
    python benchmarks/gpu_check.py --smoke          # the same steps, tiny, on any CPU (tests the script)

1. Training throughput and peak memory of ``lvae`` at 32^3, 64^3 and 96^3: fp32 vs bf16 autocast, channels-last
   on and off (synthetic masks; 3 warm-up steps, then timed steps).
2. The evaluation service's scoring (``score_checkpoint``: reconstruction, classification, latents) on the GPU.
3. A 64^3 / 2 mm quality run of the best configuration for the minutes left: the Imperial-style cohort is
   generated and prepared here, the run's length (and cosine schedule) fitted to its deadline, and its test Dice
   set beside PCA(50)+LR fitted on the same training split.

Writes ``benchmarks/results/gpu_check.{md,json}`` with the device's name beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _results import publish

from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid
from shapetune.evaluation.scoring import score_checkpoint
from shapetune.evaluation.splits import load_split
from shapetune.models.losses import shape_loss
from shapetune.models.registry import build_model
from shapetune.config import load_config
from shapetune.training.engine import Engine
from shapetune.training.tasks.cardiac import load_training_data
from shapetune.training.local import train_local

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
# The quality run's configuration: the shipped lvae at 64^3 (its other settings as shipped).
QUALITY_64 = ["model.grid=64", "model.bottleneck=4"]


def throughput(grid: int, amp: str, channels_last: bool, device: torch.device, batch: int, steps: int) -> dict:
    cfg = load_config(CONFIGS / "lvae.yaml", [f"model.grid={grid}", f"amp={amp}", f"channels_last={channels_last}",
                                              f"optim.batch_size={batch}"])
    torch.manual_seed(0)
    eng = Engine(cfg, build_model(cfg.model).to(device), device)
    x = eng.tensor((np.random.default_rng(0).random((batch, 2, grid, grid, grid)) > 0.8).astype(np.float32))
    y = torch.randint(0, 2, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        with eng.autocast():
            out = eng.model(x)
        loss, _ = shape_loss(out, x, y, eng.weights, 10.0, True)
        eng.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        eng.optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"part": "throughput", "grid": grid, "amp": eng.amp and "bf16" or "fp32", "channels_last": channels_last,
            "batch": batch, "samples_per_s": steps * batch / dt, "peak_mem_mb": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget-min", type=float, default=8.0, help="the whole script's wall-clock budget")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    start = time.time()
    deadline = start + args.budget_min * 60
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    grids = (16,) if args.smoke else (32, 64, 96)
    rows: list[dict] = []
    for grid in grids:
        for amp in ("off", "bf16"):
            for cl in (False, True):
                batch = 2 if args.smoke else (16 if grid < 96 else 8)
                rows.append(throughput(grid, amp, cl, device, batch, 2 if args.smoke else 10))
                print(rows[-1], flush=True)
    q_grid, spacing = (16, 8.0) if args.smoke else (64, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        raw, prep = Path(tmp) / "raw", Path(tmp) / "prep"
        split = (("train", 12, 12), ("val", 4, 4), ("test", 4, 4)) if args.smoke else None
        kw = {"split": split} if split else {}
        synth_imperial(raw, SynthConfig(seed=0, grid=q_grid, spacing=spacing), workers=args.workers, quiet=True, **kw)
        prepare(raw, "imperial", prep, TemplateGrid.cube(q_grid, spacing), workers=args.workers, quiet=True)
        test = load_split(prep, "test", "test")
        from bench_quality import pca_scores, row

        pca = pca_scores(str(prep), {"test": test})["test"]
        rows.append({"part": "quality", **row("PCA(50)+LR", test, *pca, None)})
        over = ["model.grid=16", "model.bottleneck=4", "optim.epochs=2"] if args.smoke else QUALITY_64
        cfg = load_config(CONFIGS / "lvae.yaml", over + ["optim.epochs=100000" if not args.smoke else "optim.epochs=2"])
        run_dir = Path(tmp) / "run"
        left = deadline - time.time() - 60  # a minute kept for scoring and writing
        t0 = time.time()
        out = train_local(cfg, load_training_data(str(prep), q_grid), run_dir, device=device.type, verbose=True,
                          deadline=None if args.smoke else t0 + left)
        wall = time.time() - t0
        t1 = time.perf_counter()
        subjects, _ = score_checkpoint(out.best_checkpoint, "lvae", test, device=device.type)
        score_s = time.perf_counter() - t1
        rows.append({"part": "scoring", "subjects": len(test.labels), "seconds": score_s,
                     "subjects_per_s": len(test.labels) / score_s})
        dice, prob = Engine(cfg, out.engine.eval_model(), device).predict(test.masks)
        r = row("lvae", test, dice, prob, pca[0])
        rows.append({"part": "quality", **r, "epochs": int(len(out.history)), "wall_s": wall})
    cells = []
    for r in rows:
        if r["part"] == "throughput":
            cells.append([f"train {r['grid']}³", f"{r['amp']}, channels-last {'on' if r['channels_last'] else 'off'}",
                          f"{r['samples_per_s']:.1f} samples/s, peak {r['peak_mem_mb']:.0f} MB"])
        elif r["part"] == "scoring":
            cells.append(["evaluation scoring", f"{r['subjects']} subjects", f"{r['subjects_per_s']:.1f} subjects/s"])
        else:
            extra = f", {r['epochs']} epochs in {r['wall_s'] / 60:.1f} min" if "epochs" in r else ""
            vs = (f", vs PCA median {r['vs_pca_ed_median']:+.3f} (p={r['vs_pca_ed_p']:.0e}) / "
                  f"{r['vs_pca_es_median']:+.3f} (p={r['vs_pca_es_p']:.0e})") if "vs_pca_ed_p" in r else ""
            cells.append([f"quality {q_grid}³", r["model"],
                          f"test Dice {r['dice_ed']:.3f} / {r['dice_es']:.3f}, acc {r['acc']:.3f}{extra}{vs}"])
    publish("gpu_check" + ("_smoke" if args.smoke else ""), f"gpu_check on {name}",
            f"{name}, torch {torch.__version__}, {(time.time() - start) / 60:.1f} min in all",
            ["what", "setting", "result"], cells, rows)
    print(json.dumps({"device": name, "minutes": (time.time() - start) / 60}))


if __name__ == "__main__":
    main()
