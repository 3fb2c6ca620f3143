"""The cardiac GPU check (issue 17 §4): one script, about 8 minutes on one GPU.

    bash benchmarks/gpu_check.sh                    # on the GPU machine
    python benchmarks/gpu_check.py --smoke          # the same, tiny, on any CPU (tests/test_gpu_benchmarks.py)

1. Training throughput and peak memory of ``lvae`` at 32^3, 64^3 and 96^3: fp32 vs bf16 autocast, channels-last
   on and off (synthetic masks; 3 warm-up steps, then timed steps), with cuDNN's default kernel choice; then the
   fastest of the four again with ``cudnn.benchmark`` and with deterministic kernels (training's CUDA default).
2. The evaluation service's scoring (``score_checkpoint``: reconstruction, classification, latents) on the GPU.
3. A 64^3 / 2 mm quality run of the best configuration for the minutes left: the Imperial-style cohort is
   generated, prepared and PCA(50)+LR fitted on its training split in a CPU process that runs beside part 1,
   the run's length (and cosine schedule) is fitted to its deadline, and its test Dice is set beside PCA's.

Each finished part is written at once to ``benchmarks/results/gpu_check.{md,json}`` (and to ``$OUT`` when set,
as on the device machine), with the device's name beside the figures: a part that fails, or a run stopped at its
time limit, keeps what was measured before it. A failed part is a row with its error, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from _results import publish
from bench_quality import pca_scores, row

from shapetune.config import load_config
from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid
from shapetune.evaluation.scoring import score_checkpoint
from shapetune.evaluation.splits import load_split
from shapetune.models.losses import shape_loss
from shapetune.models.registry import build_model
from shapetune.training.checkpoints import load_model
from shapetune.training.engine import Engine
from shapetune.training.local import train_local
from shapetune.training.tasks.cardiac import load_training_data

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
PHASES = ("ed", "es")
SMOKE_SPLIT = (("train", 12, 12), ("val", 4, 4), ("test", 4, 4))
# The quality run: the shipped lvae at 64^3 (its other settings as shipped), on the fast kernels (not bit-exact).
QUALITY_64 = ["model.grid=64", "model.bottleneck=4", "deterministic=false"]
SCORING_RESERVE_S = 60  # kept after the quality run for scoring, prediction and writing


def bottleneck_for(grid: int) -> int:
    """Where the conv features are flattened: 4^3 as shipped where grid/4 is a power of two, else 6^3 (96^3: the
    same four stages as 64^3 -> 4^3; the config refuses 4 at 96)."""
    return 4 if grid % 4 == 0 and (grid // 4) & (grid // 4 - 1) == 0 else 6


def kernels(mode: str) -> None:
    """cuDNN's kernel choice: ``default`` (its heuristics), ``benchmark`` (timed per shape) or ``deterministic``."""
    torch.backends.cudnn.benchmark = mode == "benchmark"
    torch.use_deterministic_algorithms(mode == "deterministic", warn_only=True)


def throughput(grid: int, amp: str, channels_last: bool, device: torch.device, batch: int, steps: int,
               mode: str = "default", compile_mode: str | None = None) -> dict:
    """Training samples/s and peak memory of the shipped ``lvae`` at ``grid``^3 on random masks (with
    ``compile_mode``: the config's ``compile``, its first step's wall reported as ``compile_s``)."""
    kernels(mode)
    cfg = load_config(CONFIGS / "lvae.yaml", [f"model.grid={grid}", f"model.bottleneck={bottleneck_for(grid)}",
                                              f"amp={amp}", f"channels_last={channels_last}",
                                              f"optim.batch_size={batch}", f"compile={compile_mode or 'off'}"])
    torch.manual_seed(0)
    eng = Engine(cfg, build_model(cfg.model).to(device), device)
    x = eng.tensor((np.random.default_rng(0).random((batch, 2, grid, grid, grid)) > 0.8).astype(np.float32))
    y = torch.randint(0, 2, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0, first = time.perf_counter(), 0.0
    for i in range(steps + 3):
        if i in (1, 3) and device.type == "cuda":
            torch.cuda.synchronize(device)
        if i == 1:
            first = time.perf_counter() - t0
        if i == 3:
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
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"part": "throughput", "grid": grid, "amp": "bf16" if eng.amp else "fp32", "channels_last": channels_last,
            "kernels": mode, "batch": batch, "samples_per_s": steps * batch / dt, "peak_mem_mb": mem,
            "compile_s": first if compile_mode else None}


def prepare_cohort(work: Path, grid: int, spacing: float, workers: int, smoke: bool) -> None:
    """Generate and prepare the Imperial-style cohort under ``work`` and fit PCA(50)+LR on its training split; PCA's
    per-subject test Dice and probabilities go to ``work/pca_test.npz`` (CPU only: it runs beside part 1)."""
    t0 = time.time()
    kw = {"split": SMOKE_SPLIT} if smoke else {}
    synth_imperial(work / "raw", SynthConfig(seed=0, grid=grid, spacing=spacing), workers=workers, quiet=True, **kw)
    prepare(work / "raw", "imperial", work / "prep", TemplateGrid.cube(grid, spacing), workers=workers, quiet=True)
    t1 = time.time()
    dice, prob = pca_scores(str(work / "prep"), {"test": load_split(work / "prep", "test", "test")})["test"]
    np.savez(work / "pca_test.npz", dice=dice, prob=prob, prepare_s=t1 - t0, pca_s=time.time() - t1)


def cells_of(rows: list[dict], q_grid: int) -> list[list[str]]:
    """The printed table: one line per measurement (failed parts show their error)."""
    cells = []
    for r in rows:
        if r["part"] == "throughput":
            what = f"train {r['grid']}³"
            how = (f"{r['amp']}, channels-last {'on' if r['channels_last'] else 'off'}, kernels {r['kernels']}, "
                   f"batch {r['batch']}")
            mem = f", peak {r['peak_mem_mb']:.0f} MB" if r["peak_mem_mb"] is not None else ""
            res = r.get("error") or f"{r['samples_per_s']:.1f} samples/s{mem}"
        elif r["part"] == "scoring":
            what, how = "evaluation scoring", f"{r.get('subjects', '?')} subjects at {q_grid}³"
            res = r.get("error") or f"{r['subjects_per_s']:.1f} subjects/s"
        elif "error" in r:
            what, how, res = f"{r['part']} {q_grid}³", r.get("model", ""), r["error"]
        else:
            extra = f", {r['epochs']} epochs in {r['wall_s'] / 60:.1f} min (best {r['best_epoch']})" \
                if "epochs" in r else ""
            vs = (f", vs PCA median {r['vs_pca_ed_median']:+.3f} (p={r['vs_pca_ed_p']:.0e}) / "
                  f"{r['vs_pca_es_median']:+.3f} (p={r['vs_pca_es_p']:.0e})") if "vs_pca_ed_p" in r else ""
            what, how = f"quality {q_grid}³", r["model"]
            res = f"test Dice {r['dice_ed']:.3f} / {r['dice_es']:.3f}, acc {r['acc']:.3f}{extra}{vs}"
        cells.append([what, how, res])
    return cells


def failed(rows: list[dict], base: dict, exc: BaseException) -> None:
    """Record a part's failure as a row (and its traceback on the console)."""
    traceback.print_exc()
    rows.append({**base, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=8.0, help="the whole script's wall-clock budget")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 4),
                    help="CPU processes that generate and prepare the cohort (beside part 1)")
    ap.add_argument("--prepare-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    q_grid, spacing = (16, 8.0) if args.smoke else (64, 2.0)
    if args.prepare_only is not None:
        prepare_cohort(args.prepare_only, q_grid, spacing, args.workers, args.smoke)
        return
    start = time.time()
    deadline = start + args.budget_min * 60
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    file = "gpu_check" + ("_smoke" if args.smoke else "")
    rows: list[dict] = []

    def report() -> None:
        publish(file, f"gpu_check on {name}",
                f"{name}, torch {torch.__version__}, {(time.time() - start) / 60:.1f} min so far; the cohort was "
                f"generated on {args.workers} CPU processes during the throughput part",
                ["what", "setting", "result"], cells_of(rows, q_grid), rows)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = open(work / "prepare.log", "w")  # noqa: SIM115 (open for the child's lifetime)
        child = subprocess.Popen([sys.executable, __file__, "--prepare-only", str(work), "--workers",
                                  str(args.workers)] + (["--smoke"] if args.smoke else []), stdout=log,
                                 stderr=subprocess.STDOUT)
        for grid in (16,) if args.smoke else (32, 64, 96):
            batch, steps = (2, 2) if args.smoke else (16 if grid < 96 else 8, 10)
            first = len(rows)
            for amp in ("off", "bf16"):
                for cl in (False, True):
                    base = {"part": "throughput", "grid": grid, "amp": amp, "channels_last": cl, "kernels": "default",
                            "batch": batch}
                    try:
                        rows.append(throughput(grid, amp, cl, device, batch, steps))
                    except Exception as exc:  # noqa: BLE001 (recorded as the row; the other settings still run)
                        failed(rows, base, exc)
                    print(rows[-1], flush=True)
            done = [r for r in rows[first:] if "error" not in r]
            if done:
                best = max(done, key=lambda r: r["samples_per_s"])
                for mode in ("benchmark", "deterministic"):
                    try:
                        rows.append(throughput(grid, "bf16" if best["amp"] == "bf16" else "off",
                                               best["channels_last"], device, batch, steps, mode))
                    except Exception as exc:  # noqa: BLE001
                        failed(rows, {**best, "kernels": mode}, exc)
                    print(rows[-1], flush=True)
            report()
        child.wait()
        log.close()
        if child.returncode != 0:
            tail = (work / "prepare.log").read_text().strip().splitlines()[-1:]
            rows.append({"part": "quality", "model": "cohort", "error": f"preparation failed: {tail}"})
            report()
            sys.exit(1)
        prep = work / "prep"
        pca = np.load(work / "pca_test.npz")
        test = load_split(prep, "test", "test")
        rows.append({"part": "quality", **row("PCA(50)+LR", test, pca["dice"], pca["prob"], None, PHASES),
                     "prepare_s": float(pca["prepare_s"]), "pca_s": float(pca["pca_s"])})
        report()
        try:
            over = ["model.grid=16", "model.bottleneck=4", "optim.epochs=2"] if args.smoke else \
                QUALITY_64 + ["optim.epochs=100000"]
            cfg = load_config(CONFIGS / "lvae.yaml", over)
            kernels("benchmark")
            t0 = time.time()
            out = train_local(cfg, load_training_data(str(prep), q_grid), work / "run", device=device.type,
                              verbose=True, deadline=None if args.smoke else deadline - SCORING_RESERVE_S)
            wall = time.time() - t0
            try:
                t1 = time.perf_counter()
                score_checkpoint(out.best_checkpoint, "lvae", test, device=device.type)
                score_s = time.perf_counter() - t1
                rows.append({"part": "scoring", "subjects": len(test.labels), "seconds": score_s,
                             "subjects_per_s": len(test.labels) / score_s})
            except Exception as exc:  # noqa: BLE001
                failed(rows, {"part": "scoring"}, exc)
            model, best_cfg, state = load_model(out.best_checkpoint, map_location=device.type)
            dice, prob = Engine(best_cfg, model.to(device), device).predict(test.masks)
            rows.append({"part": "quality", **row("lvae (best checkpoint)", test, dice, prob, pca["dice"], PHASES),
                         "epochs": int(len(out.history)), "best_epoch": int(state["epoch"]) + 1, "wall_s": wall})
        except Exception as exc:  # noqa: BLE001
            failed(rows, {"part": "quality", "model": "lvae"}, exc)
        report()
    print(json.dumps({"device": name, "minutes": (time.time() - start) / 60}))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
