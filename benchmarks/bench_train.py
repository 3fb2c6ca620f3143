"""Training throughput: plain PyTorch loop vs Ray Train (1 and 2 workers), VAE and LVAE, 32^3 and 64^3.

    python benchmarks/bench_train.py [--grids 32,64 --models vae,lvae --epochs 3 --n-train 48 --device cpu]

Equal work: the same model, data, batch size and total CPU threads (plain loop: ``--threads`` threads;
Ray: 1 worker with all of them, or 2 workers with half each). Samples/s excludes validation and the first
epoch (warm-up). Peak memory is the worker's max RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU.
Prints a table and writes ``benchmarks/results/bench_train.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid
from shapetune.platform.config import load_config
from shapetune.platform.engine import load_training_data
from shapetune.platform.local import train_local
from shapetune.platform.ray_train import run_training

RESULTS = Path(__file__).parent / "results"
LATENTS = {"vae": "[50]", "lvae": "[32,16,2]"}


def steady(history) -> tuple[float, float]:
    h = history.iloc[1:] if len(history) > 1 else history
    return float(h["samples_per_s"].mean()), float(history["peak_mem_mb"].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", default="32,64")
    ap.add_argument("--models", default="vae,lvae")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="plain,ray1,ray2")
    ap.add_argument("--out", default=str(RESULTS / "bench_train"))
    args = ap.parse_args()
    import ray

    gpu = args.device == "cuda"
    os.environ.setdefault("RAY_worker_niceness", "0")  # as shapetune.platform.ray_train.ensure_ray does
    ray.init(num_cpus=args.threads, num_gpus=torch.cuda.device_count() if gpu else 0, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for grid in map(int, args.grids.split(",")):
            spacing = 128.0 / grid
            half = args.n_train // 2
            raw, prep = Path(tmp) / f"raw{grid}", Path(tmp) / f"prep{grid}"
            synth_imperial(raw, SynthConfig(seed=0, grid=grid, spacing=spacing),
                           split=(("train", half, half), ("val", 4, 4)), quiet=True)
            prepare(raw, "imperial", prep, TemplateGrid.cube(grid, spacing), quiet=True)
            data = load_training_data(str(prep), grid)
            for model in args.models.split(","):
                over = [f"model.name={model}", f"model.grid={grid}", "model.width=8",
                        f"model.latent_dims={LATENTS[model]}", f"optim.epochs={args.epochs}",
                        f"optim.batch_size={args.batch_size}", f"val_every={args.epochs}"]
                cfg = load_config(None, over)
                for mode in args.modes.split(","):
                    t0 = time.perf_counter()
                    if mode == "plain":
                        torch.set_num_threads(args.threads)
                        out = train_local(cfg, data, device=args.device, verbose=False)
                    else:
                        w = 1 if mode == "ray1" else 2
                        out = run_training(cfg, prep, Path(tmp) / f"run-{grid}-{model}-{mode}", workers=w,
                                           cpus_per_worker=args.threads / w, gpus_per_worker=(1.0 / w if gpu else 0.0))
                    sps, mem = steady(out.history)
                    rows.append({"grid": grid, "model": model, "mode": mode, "samples_per_s": sps,
                                 "peak_mem_mb": mem, "wall_s": time.perf_counter() - t0, "device": args.device})
                    print(rows[-1], flush=True)
    for r in rows:
        base = next(b for b in rows if b["grid"] == r["grid"] and b["model"] == r["model"] and b["mode"] == "plain")
        r["overhead_pct"] = 100.0 * (1 - r["samples_per_s"] / base["samples_per_s"])
    device_name = torch.cuda.get_device_name(0) if gpu else f"CPU ({os.cpu_count()} cores)"
    t = Table(title=f"bench_train on {device_name}, batch {args.batch_size}")
    for c in ("grid", "model", "mode", "samples/s", "vs plain", "peak MB", "wall s"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(f"{r['grid']}³", r["model"], r["mode"], f"{r['samples_per_s']:.1f}", f"{-r['overhead_pct']:+.1f} %",
                  f"{r['peak_mem_mb']:.0f}", f"{r['wall_s']:.0f}")
    Console().print(t)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = [f"# bench_train\n\n{time.strftime('%Y-%m-%d')}, {device_name}, Python {platform.python_version()}, "
          f"torch {torch.__version__}, batch {args.batch_size}, {args.threads} threads in total\n",
          "| grid | model | mode | samples/s | vs plain | peak MB |", "|---|---|---|---|---|---|"]
    md += [f"| {r['grid']}³ | {r['model']} | {r['mode']} | {r['samples_per_s']:.1f} | {-r['overhead_pct']:+.1f} % | "
           f"{r['peak_mem_mb']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out.with_suffix('.md')}")
    ray.shutdown()


if __name__ == "__main__":
    main()
