"""Where a GPU training step of ``lvae`` goes (follows gpu_check: one call, about 4 minutes on one GPU).

    python benchmarks/gpu_step.py --budget-min 4     # on the GPU machine (PYTHONPATH as gpu_check.sh sets it)
    python benchmarks/gpu_step.py --smoke            # tiny, on any CPU (tests/test_gpu_benchmarks.py)

gpu_check measured the bare fp32 step at about the same samples/s at 32^3 and 64^3 (8x the voxels), and the
64^3 training loop at about 200 samples/s against 470-750 for the bare step: the step looks bound by kernel
launches, not by arithmetic. This measures, fp32 (gpu_check's fastest):

1. the bare step's samples/s and peak memory over batch sizes 8-64 at 32^3 and 64^3;
2. the whole epoch loop (``Engine.train_epoch``: batch indexing, host-to-device copy, augmentation, the lr
   schedule) at 64^3, batch 8 and 16, with augmentation on and off, against the bare step;
3. ``torch.compile`` of the model (default mode, then ``reduce-overhead``: CUDA graphs) at 64^3, batch 8, with its
   compile time, while the budget lasts.

Writes ``benchmarks/results/gpu_step.{md,json}`` after each row (and to ``$OUT`` when set).
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from _results import publish
from gpu_check import CONFIGS, bottleneck_for, failed, kernels, throughput

from shapetune.config import load_config
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine


def loop(grid: int, batch: int, augment: bool, device: torch.device, n: int, compile_mode: str = "off") -> dict:
    """Samples/s of ``Engine.train_epoch`` (epoch 1: no PCA start) over ``n`` random masks, fp32; then whether the
    checkpoint state holds the plain model's keys (``compile``)."""
    kernels("default")
    cfg = load_config(CONFIGS / "lvae.yaml", [f"model.grid={grid}", f"model.bottleneck={bottleneck_for(grid)}",
                                              "amp=off", f"channels_last={grid >= 64}", f"optim.batch_size={batch}",
                                              f"augment.enabled={augment}", "optim.epochs=10",
                                              f"compile={compile_mode}"])
    torch.manual_seed(0)
    eng = Engine(cfg, build_model(cfg.model).to(device), device)
    rng = np.random.default_rng(0)
    data = SimpleNamespace(train_x=(rng.random((n, 2, grid, grid, grid)) > 0.8).astype(np.uint8),
                           train_y=rng.integers(0, 2, n).astype(np.int64))
    eng.train_epoch(data, 1)  # warm-up: kernel choice, allocator
    m = eng.train_epoch(data, 2)
    plain = not any(k.startswith("_orig_mod") for k in eng.state(2, m, [])["model"])
    return {"part": "loop", "grid": grid, "batch": batch, "augment": augment, "samples_per_s": m["samples_per_s"],
            "peak_mem_mb": m["peak_mem_mb"] if device.type == "cuda" else None, "compile": compile_mode,
            "plain_checkpoint_keys": plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=4.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--parts", default="step,loop,compile", help="which parts, comma-separated")
    ap.add_argument("--name", default="gpu_step", help="the results' file name under benchmarks/results")
    args = ap.parse_args()
    start = time.time()
    deadline = start + args.budget_min * 60
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    file = args.name + ("_smoke" if args.smoke else "")
    rows: list[dict] = []

    def report() -> None:
        cells = []
        for r in rows:
            setting = (f"{r['grid']}³, batch {r['batch']}" + (f", augment {'on' if r['augment'] else 'off'}"
                                                               if "augment" in r else "")
                       + (f", compile {r['compile']}" if r.get("compile", "off") != "off" else ""))
            mem = f", peak {r['peak_mem_mb']:.0f} MB" if r.get("peak_mem_mb") is not None else ""
            extra = f", compiled in {r['compile_s']:.0f} s" if r.get("compile_s") is not None else ""
            cells.append([r["part"], setting, r.get("error") or f"{r['samples_per_s']:.1f} samples/s{mem}{extra}"])
        publish(file, f"gpu_step on {name}", f"{name}, torch {torch.__version__}, fp32, "
                f"{(time.time() - start) / 60:.1f} min so far", ["what", "setting", "result"], cells, rows)

    def attempt(base: dict, fn) -> None:
        if time.time() > deadline:
            return
        try:
            rows.append({**base, **fn()})
        except Exception as exc:  # noqa: BLE001 (recorded as the row; the next ones still run)
            failed(rows, base, exc)
        print(rows[-1], flush=True)
        report()

    steps = 2 if args.smoke else 10
    grids, batches = ((16,), (2, 4)) if args.smoke else ((32, 64), (8, 16, 32, 64))
    parts = set(args.parts.split(","))
    for grid in grids if "step" in parts else ():
        for batch in batches:
            attempt({"part": "step", "grid": grid, "batch": batch},
                    lambda g=grid, b=batch: throughput(g, "off", g >= 64, device, b, steps) | {"part": "step"})
    g = grids[-1]
    for batch in batches[:2] if "loop" in parts else ():
        for aug in (True, False):
            attempt({"part": "loop", "grid": g, "batch": batch, "augment": aug},
                    lambda b=batch, a=aug: loop(g, b, a, device, 8 * b if args.smoke else 256))
    for mode in ("default", "reduce-overhead") if "compile" in parts else ():
        attempt({"part": "step", "grid": g, "batch": batches[0], "compile": mode},
                lambda m=mode: throughput(g, "off", g >= 64, device, batches[0], steps, compile_mode=m)
                | {"part": "step", "compile": m})
    if "compile" in parts:  # the product's whole loop with CUDA graphs, against the eager loop rows above
        attempt({"part": "loop", "grid": g, "batch": batches[0], "augment": True, "compile": "reduce-overhead"},
                lambda: loop(g, batches[0], True, device, 8 * batches[0] if args.smoke else 256, "reduce-overhead"))


if __name__ == "__main__":
    main()
