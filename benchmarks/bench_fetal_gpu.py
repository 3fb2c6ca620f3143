"""Fetal-skull study on one GPU within a fixed wall-clock budget: every model x fold x variant at once.

    python benchmarks/bench_fetal_gpu.py --data PREPARED --out DIR --budget-min 6 \
        [--variants base,wide --models cvae,hcvae,tlnet --max-epochs 2000 --device cuda]

A GPU lease is short and a GPU machine may have no Ray, so this runs the study's runs as concurrent
in-process trainings (``train_local``, one process each, all sharing the GPU) that share one deadline:
each run times its first epochs and fits its length, and so its cosine schedule, to the time left. The runs
are laid out like ``shapetune study``'s (``OUT/runs/MODEL/foldK``), scored in parallel with the same code
(``score_runs``, network on the GPU), and ``run_study`` then writes the table by view subset, per-case
parquet and figures from them (``gpu_runs.json`` keeps each run's epochs, speed and memory). Before
training, every model is scored once untrained on two subjects so a broken device path fails in seconds,
not after the budget. Writes ``benchmarks/results/bench_fetal_gpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from _results import RESULTS, publish

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
# "wide": twice the channels and full-resolution ends, which a GPU affords and a 2-core CPU does not.
VARIANTS = {"base": [], "wide": ["model.width=16", "model.light_ends=false"]}


def _config(model: str, variant: str, fold: int, overrides: list[str]):
    from shapetune.config import load_config

    return load_config(CONFIGS / f"{model}.yaml", [*VARIANTS[variant], *overrides, f"data.fold={fold}"])


def _train(job: dict) -> dict:
    """One run in its own process (spawned: CUDA cannot be forked)."""
    import torch

    from shapetune.training.local import train_local
    from shapetune.training.tasks import load_task_data

    torch.set_num_threads(1)  # the GPU does the work; 16 runs must not fight over the CPU cores
    cfg = _config(job["model"], job["variant"], job["fold"], job["overrides"])
    data = load_task_data(job["data"], cfg)
    o = train_local(cfg, data, job["run"], device=job["device"], verbose=False, deadline=job["deadline"])
    h = o.history
    return {"name": job["name"], "fold": job["fold"], "epochs": len(h), "wall_s": o.wall_s,
            "epoch_s": float(h["epoch_time_s"].iloc[1:].median()) if len(h) > 1 else float("nan"),
            "samples_per_s": float(h["samples_per_s"].iloc[1:].median()) if len(h) > 1 else float("nan"),
            "peak_mem_mb": float(h["peak_mem_mb"].max()), "best_val_dice": o.best_metrics.get("val_dice")}


def _score(job: dict) -> str:
    from shapetune.evaluation.fetal.study import score_runs

    score_runs({(job["name"], job["fold"]): Path(job["run"])}, job["data"], Path(job["out"]),
               samples=job["samples"], device=job["device"])
    return f"{job['name']}/fold{job['fold']}"


def smoke(models: list[str], variants: list[str], data: str, device: str, overrides: list[str], tmp: Path) -> None:
    """Every model's untrained checkpoint through the device's training step and scoring, on two subjects."""
    import numpy as np
    import torch

    from shapetune.evaluation.fetal.scoring import score_fold
    from shapetune.data.fetal.folds import fold_data
    from shapetune.models.registry import build_model
    from shapetune.experiment.checkpoints import save_state
    from shapetune.training.engine import Engine
    from shapetune.training.tasks import load_task_data

    planes, truth, subjects, spacing = fold_data(data, 0)
    for m in models:
        for v in variants:
            cfg = _config(m, v, 0, overrides)
            dev = torch.device(device)
            engine = Engine(cfg, build_model(cfg.model).to(dev), dev)
            td = load_task_data(data, cfg)
            loss, _ = engine.task.batch_loss(engine, td, np.arange(cfg.optim.batch_size), 0, 0, 0.0)
            loss.backward()
            save_state(tmp / f"{m}_{v}", engine.state(0, {}, []))
            df, _ = score_fold(tmp / f"{m}_{v}", planes[:2], truth[:2], subjects[:2], spacing, samples=2, device=device)
            print(f"smoke {m}/{v}: loss {float(loss):.3f}, {len(df)} scored rows", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a prepared fetal dataset (shapetune data prepare --format fetal)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-min", type=float, default=6.0, help="wall-clock minutes for all the training")
    ap.add_argument("--variants", default="base,wide")
    ap.add_argument("--models", default="cvae,hcvae,tlnet")
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--max-epochs", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--score-workers", type=int, default=6)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every run")
    args = ap.parse_args()
    import torch

    from shapetune.evaluation.fetal.study import SIZE_ERRORS, SUBSET_LABELS, mean_sd, run_study, slug

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, inherited by the runs
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    models, variants = args.models.split(","), args.variants.split(",")
    folds = [int(k) for k in args.folds.split(",")]
    overrides = [f"optim.epochs={args.max_epochs}", "val_every=10", *args.overrides]
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    t0 = time.time()
    smoke(models, variants, args.data, args.device, overrides, out / "smoke")
    deadline = t0 + 60 * args.budget_min
    jobs = []
    for v in variants:
        for m in models:
            name = m if v == "base" else f"{m}_{v}"
            for k in folds:
                jobs.append({"name": name, "model": m, "variant": v, "fold": k, "overrides": overrides,
                             "data": str(Path(args.data).resolve()), "run": str(out / "runs" / slug(name) / f"fold{k}"),
                             "device": args.device, "deadline": deadline, "out": str(out), "samples": args.samples})
    print(f"{len(jobs)} runs on {gpu}, budget {args.budget_min} min", flush=True)
    spawn = get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=spawn) as pool:
        futures = [pool.submit(_train, j) for j in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                for p in pending:
                    p.cancel()
                traceback.print_exception(f.exception())
                print("a training run failed; the others are abandoned", flush=True)
                os._exit(1)  # leaving the pool's block would wait for every other run to finish
        stats = [f.result() for f in futures]
    train_wall = time.time() - t0
    for s in stats:
        print(f"trained {s['name']}/fold{s['fold']}: {s['epochs']} epochs, {s['epoch_s']:.2f} s/epoch, "
              f"best val dice {s['best_val_dice']}", flush=True)
    with ProcessPoolExecutor(args.score_workers, mp_context=spawn) as pool:
        for name in pool.map(_score, jobs):
            print(f"scored {name}", flush=True)
    # The study's own tail (runs.json, per-case parquet, table, figures): every run is given and every score
    # is cached by now, so it neither trains nor scores.
    runs = {(j["name"], j["fold"]): Path(j["run"]) for j in jobs}
    configs = {j["name"]: _config(j["model"], j["variant"], folds[0], overrides) for j in jobs}
    table = run_study(configs, args.data, out, folds, args.samples, runs=runs).table
    (out / "gpu_runs.json").write_text(json.dumps({"gpu": gpu, "runs": stats}, indent=2))
    epochs = {}
    for s in stats:
        epochs.setdefault(s["name"], []).append(s)
    cells, rows = [], []
    for _, r in table.iterrows():
        st = epochs[r.model]
        cells.append([r.model, SUBSET_LABELS[r.views], mean_sd(r, "dice", ".3f"), mean_sd(r, "hd", ".2f"),
                      mean_sd(r, "rvd", ".3f"), "/".join(str(s["epochs"]) for s in st),
                      f"{sum(s['epoch_s'] for s in st) / len(st):.2f}", f"{max(s['peak_mem_mb'] for s in st):.0f}",
                      " / ".join(f"{r.get(f'abs_{c}_mean', float('nan')):.3f}" for c in SIZE_ERRORS)])
        rows.append({**r.to_dict(), "runs": st})
    drop = table.pivot(index="model", columns="views", values="dice_mean")
    drops = ", ".join(f"{m} {drop.loc[m, '3v'] - drop.loc[m, '1v']:.3f}" for m in drop.index)
    note = (f"{gpu}, {len(jobs)} runs trained at once within {args.budget_min} min (each fits its epochs to the "
            f"deadline), scored with {args.samples} prior samples; Dice lost from 3 views to 1 view: {drops}; "
            f"training {train_wall / 60:.1f} min, total {(time.time() - t0) / 60:.1f} min")
    publish("bench_fetal_gpu", "fetal skull reconstruction on one GPU (mean ± sd over 3 folds)", note,
            ["model", "views", "DC", "HD mm", "RVD", "epochs per fold", "s/epoch (concurrent)", "peak GPU MB",
             "|size error| OFD / BPD / height"],
            cells, rows)
    print(f"results in {RESULTS} and {out}")


if __name__ == "__main__":
    main()
