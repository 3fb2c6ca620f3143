"""Best-checkpoint choice on a 100-trial experiment: reading every full checkpoint (before) vs the small
``metrics.json`` beside each (after), in one run on the same folders.

    python benchmarks/bench_export.py [--trials 100 --config lvae]

Each trial folder gets ``checkpoint_best`` and ``checkpoint_latest`` holding a real checkpoint of the shipped
config (weights, Adam state, config, a 200-epoch history) and its ``metrics.json``, as ``save_state`` writes them;
the 2 x trials checkpoints are hard links to one file, so the page cache holds it and "before" is a lower bound
(on a cold disk or a bucket mirror it reads every byte too). What export's ``choose`` and ``evaluate --trials
all`` do per checkpoint is timed: ``load_state(ck)["metrics"]`` before, ``read_metrics(ck)`` after.
Prints a table and writes ``benchmarks/results/bench_export.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from _results import RESULTS, publish

from shapetune.config import load_config
from shapetune.experiment.checkpoints import (CHECKPOINT_FILE, METRICS_FILE, checkpoint_dirs, load_state,
                                              read_metrics, save_state)
from shapetune.models.registry import build_model
from shapetune.training.engine import Engine

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"


def build(root: Path, trials: int, config: str) -> int:
    """The experiment's trial folders; returns the checkpoint's size in bytes."""
    cfg = load_config(CONFIGS / f"{config}.yaml")
    engine = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    for p in engine.model.parameters():  # Adam's moments exist after a step: give every parameter its state
        p.grad = torch.zeros_like(p)
    engine.optimizer.step()
    history = [{"epoch": e, "val_dice": 0.8 + e / 1000, "val_acc": 1.0, "train_loss": 1.0 / (e + 1)}
               for e in range(200)]
    source = save_state(root / "source", engine.state(199, history[-1], history))
    for t in range(trials):
        for name in ("checkpoint_best", "checkpoint_latest"):
            ck = root / "trials" / f"trial_{t:03d}" / name
            ck.mkdir(parents=True)
            os.link(source, ck / CHECKPOINT_FILE)
            shutil.copy(source.parent / METRICS_FILE, ck / METRICS_FILE)
    return source.stat().st_size


def timed(fn, cks: list[Path]) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [fn(ck) for ck in cks]
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--config", default="lvae")
    ap.add_argument("--work", default=str(RESULTS / "tmp" / "bench_export"))
    args = ap.parse_args()
    root = Path(args.work)
    shutil.rmtree(root, ignore_errors=True)
    size = build(root, args.trials, args.config)
    cks = checkpoint_dirs(root / "trials")
    load_state(cks[0])  # warm: the file in the page cache, torch's loader imported
    before, a = timed(lambda ck: load_state(ck)["metrics"], cks)
    after, b = timed(read_metrics, cks)
    assert [m["val_dice"] for m in a] == [m["val_dice"] for m in b]  # the same answer both ways
    shutil.rmtree(root, ignore_errors=True)
    rows = [{"trials": args.trials, "checkpoints": len(cks), "checkpoint_mb": size / 2**20,
             "before_s": before, "after_s": after, "speedup": before / after}]
    publish("bench_export", f"best-checkpoint choice, {args.trials} trials ({args.config})",
            f"{os.cpu_count()} CPUs; {len(cks)} checkpoints of {size / 2**20:.1f} MB (page cache warm)",
            ["checkpoints", "load every checkpoint", "read metrics.json", "speed-up"],
            [[str(len(cks)), f"{before:.2f} s", f"{after:.3f} s", f"{before / after:.0f}x"]], rows)


if __name__ == "__main__":
    main()
