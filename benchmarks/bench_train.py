"""Training throughput: the old path vs the new, and the plain loop vs Ray Train (1 and 2 workers).

    python benchmarks/bench_train.py [--grids 32,64 --models vae,lvae --epochs 3 --n-train 48 --device cpu]
    python benchmarks/bench_train.py --data demo_out/prepared/imperial --grids 32 --models lvae --epochs 6 \
        --modes old,plain          # the 32^3 cohort: speed ratio and validation Dice of both paths

Modes: ``old`` is the plain loop as it was before issue 17 (fp32, channels-first, deterministic kernels);
``plain`` the plain loop with the defaults (bf16 autocast where the CPU has it, channels-last, no
deterministic mode on CPU); ``ray1``/``ray2`` Ray Train with 1 or 2 workers on the defaults; these four train
the same backbone (width 8, full-resolution ends). ``shipped`` is the plain loop on the shipped ``lvae``/``vae``
config's backbone (``lvae``: width 16, light ends, residual blocks). Equal work: the
same model, data, batch size and total CPU threads. Samples/s excludes validation and the first epoch
(warm-up); epoch wall includes validation. Peak memory is the worker's max RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU. Prints a table and writes ``benchmarks/results/bench_train.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _results import host_reference

from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid
from shapetune.config import load_config
from shapetune.training.tasks.cardiac import load_training_data
from shapetune.training.local import train_local
from shapetune.training.ray_train import run_training

RESULTS = Path(__file__).parent / "results"
LATENTS = {"vae": "[50]", "lvae": "[32,16,2]"}
CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
OLD_PATH = ["amp=off", "channels_last=false", "deterministic=true"]  # the training path before issue 17


def steady(history) -> tuple[float, float]:
    h = history.iloc[1:] if len(history) > 1 else history
    return float(h["samples_per_s"].mean()), float(history["peak_mem_mb"].max())


def dataset(grid: int, n_train: int, tmp: str, data: str | None) -> tuple[Path, int]:
    """A prepared dataset at ``grid``: ``data`` if given, else a small synthetic one; (path, training subjects)."""
    if data:
        return Path(data), len(load_training_data(data, grid).train_x)
    spacing = 128.0 / grid
    half = n_train // 2
    raw, prep = Path(tmp) / f"raw{grid}", Path(tmp) / f"prep{grid}"
    synth_imperial(raw, SynthConfig(seed=0, grid=grid, spacing=spacing),
                   split=(("train", half, half), ("val", 4, 4)), quiet=True)
    prepare(raw, "imperial", prep, TemplateGrid.cube(grid, spacing), quiet=True)
    return prep, 2 * half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", default="32,64")
    ap.add_argument("--models", default="vae,lvae")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="old,plain,ray1,ray2")
    ap.add_argument("--data", default=None, help="a prepared dataset to train on (default: a small synthetic one)")
    ap.add_argument("--val-every", type=int, default=None, help="validate every k epochs (default: only the last)")
    ap.add_argument("--out", default=str(RESULTS / "bench_train"))
    args = ap.parse_args()
    import ray

    gpu = args.device == "cuda"
    torch.set_num_threads(args.threads)
    host = None if gpu else host_reference()  # walls of other days compare through it (CPU)
    os.environ.setdefault("RAY_worker_niceness", "0")  # as shapetune.training.ray_train.ensure_ray does
    use_ray = any(m.startswith("ray") for m in args.modes.split(","))
    if use_ray:
        ray.init(num_cpus=args.threads, num_gpus=torch.cuda.device_count() if gpu else 0, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for grid in map(int, args.grids.split(",")):
            prep, n_train = dataset(grid, args.n_train, tmp, args.data)
            data = load_training_data(str(prep), grid)
            for model in args.models.split(","):
                over = [f"model.name={model}", f"model.grid={grid}", "model.width=8",
                        f"model.latent_dims={LATENTS[model]}", f"optim.epochs={args.epochs}",
                        f"optim.batch_size={args.batch_size}", f"val_every={args.val_every or args.epochs}"]
                for mode in args.modes.split(","):
                    if mode == "shipped":
                        cfg = load_config(CONFIGS / f"{model}.yaml", over[:2] + over[3:])
                    else:
                        cfg = load_config(None, over + (OLD_PATH if mode == "old" else []))
                    t0 = time.perf_counter()
                    if mode in ("old", "plain", "shipped"):
                        torch.set_num_threads(args.threads)
                        out = train_local(cfg, data, device=args.device, verbose=False)
                    else:
                        w = 1 if mode == "ray1" else 2
                        out = run_training(cfg, prep, Path(tmp) / f"run-{grid}-{model}-{mode}", workers=w,
                                           cpus_per_worker=args.threads / w, gpus_per_worker=(1.0 / w if gpu else 0.0))
                    sps, mem = steady(out.history)
                    last = out.history.iloc[-1]
                    rows.append({"grid": grid, "model": model, "mode": mode, "samples_per_s": sps,
                                 "peak_mem_mb": mem, "wall_s": time.perf_counter() - t0, "device": args.device,
                                 "n_train": n_train, "epochs": args.epochs, "host_reference_steps_per_s": host,
                                 "val_dice_ed": float(last["val_dice_ed"]), "val_dice_es": float(last["val_dice_es"])})
                    print(rows[-1], flush=True)
    modes = args.modes.split(",")
    ref_mode = "old" if "old" in modes else modes[0]
    for r in rows:
        base = next(b for b in rows if b["grid"] == r["grid"] and b["model"] == r["model"] and b["mode"] == ref_mode)
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["wall_speedup"] = base["wall_s"] / r["wall_s"]
    device_name = torch.cuda.get_device_name(0) if gpu else f"CPU ({os.cpu_count()} cores)"
    t = Table(title=f"bench_train on {device_name}, batch {args.batch_size}, {args.epochs} epochs")
    for c in ("grid", "model", "mode", "samples/s", f"× {ref_mode}", f"wall × {ref_mode}", "val Dice ED/ES", "peak MB"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(f"{r['grid']}³", r["model"], r["mode"], f"{r['samples_per_s']:.1f}", f"{r['speedup']:.2f}",
                  f"{r['wall_speedup']:.2f}", f"{r['val_dice_ed']:.3f}/{r['val_dice_es']:.3f}",
                  f"{r['peak_mem_mb']:.0f}")
    Console().print(t)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = [f"# bench_train\n\n{time.strftime('%Y-%m-%d')}, {device_name}, Python {platform.python_version()}, "
          f"torch {torch.__version__}, batch {args.batch_size}, {args.threads} threads in total, {args.epochs} epochs, "
          f"{rows[0]['n_train'] if rows else 0} training subjects ({args.data or 'synthetic'})"
          + (f", host reference {host:.2f} steps/s" if host else "") + "\n",
          f"| grid | model | mode | samples/s | × {ref_mode} | wall × {ref_mode} | val Dice ED / ES | peak MB |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['grid']}³ | {r['model']} | {r['mode']} | {r['samples_per_s']:.1f} | {r['speedup']:.2f} | "
           f"{r['wall_speedup']:.2f} | {r['val_dice_ed']:.3f} / {r['val_dice_es']:.3f} | {r['peak_mem_mb']:.0f} |"
           for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out.with_suffix('.md')}")
    if use_ray:
        ray.shutdown()


if __name__ == "__main__":
    main()
