"""Where a training epoch's time goes: batching, augmentation, forward, loss, backward, optimiser step, validation,
checkpoint save; per 3D conv block of the shipped LVAE (forward + backward), for the old and the new path.

    python benchmarks/profile_epoch.py [--grids 32,64 --steps 12 --threads 2]

Synthetic masks of the grid's size, batch 8, the shipped ``lvae`` config (``--old``-path rows: fp32, channels-first,
deterministic kernels, the pre-issue-17 backbone: width 8, full-resolution ends, no residual blocks). Time per
training step (ms) averaged over ``--steps`` after 3 warm-up steps; validation and checkpoint time per epoch of
the 537/150-subject cohort, extrapolated from the timed batches. Writes ``benchmarks/results/profile_epoch.{md,json}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _results import RESULTS, publish

from shapetune.models.losses import shape_loss
from shapetune.models.registry import build_model
from shapetune.training.augment import augment_batch
from shapetune.experiment.checkpoints import save_state
from shapetune.config import load_config
from shapetune.training.engine import Engine, seed_everything

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"
OLD = ["amp=off", "channels_last=false", "deterministic=true", "model.width=8", "model.light_ends=false",
       "model.residual=false"]
N_TRAIN, N_VAL, BATCH = 537, 150, 8


def _block_times(eng: Engine, x: torch.Tensor) -> dict[str, float]:
    """Forward + backward ms of each top-level block of the encoder and decoder nets (hooks time each module)."""
    model = eng.model
    times: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for part in ("encoder", "decoder"):
        for i, m in enumerate(getattr(model, part).net):
            if not isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and type(m).__name__ != "Residual":
                continue
            key = (f"{part}[{i}] {type(m).__name__} "
                   f"{getattr(m, 'in_channels', getattr(getattr(m, 'conv', m), 'in_channels', '?'))}")
            handles.append(m.register_forward_pre_hook(
                lambda mod, inp, k=key: starts.__setitem__(k, time.perf_counter())))
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, k=key: times.__setitem__(k, times.get(k, 0.0) + time.perf_counter() - starts[k])))
            handles.append(m.register_full_backward_pre_hook(
                lambda mod, g, k=key: starts.__setitem__(k + "/b", time.perf_counter())))
            handles.append(m.register_full_backward_hook(
                lambda mod, gi, go, k=key: times.__setitem__(
                    k, times.get(k, 0.0) + time.perf_counter() - starts[k + "/b"])))
    y = torch.zeros(len(x), dtype=torch.long)
    with eng.autocast():
        out = model(x.requires_grad_(False))
    shape_loss(out, x, y, eng.weights, 10.0, True)[0].backward()
    for h in handles:
        h.remove()
    return {k: v * 1000 for k, v in times.items()}


def profile(grid: int, path: str, steps: int) -> dict:
    over = [f"model.grid={grid}"] + (OLD if path == "old" else [])
    cfg = load_config(CONFIGS / "lvae.yaml", over)
    seed_everything(0, torch.device("cpu"), cfg.deterministic)
    eng = Engine(cfg, build_model(cfg.model), torch.device("cpu"))
    eng.gen = torch.Generator().manual_seed(0)
    masks = (np.random.default_rng(0).random((64, 2, grid, grid, grid)) > 0.85).astype(np.uint8)
    labels = np.arange(64) % 2
    t = dict.fromkeys(("batch", "augment", "forward", "loss", "backward", "optim"), 0.0)
    eng.model.train()
    for b in range(steps + 3):
        if b == 3:
            t = dict.fromkeys(t, 0.0)
        sel = np.arange(b * BATCH, (b + 1) * BATCH) % len(masks)
        t0 = time.perf_counter()
        x = eng.tensor(masks[sel])
        y = torch.from_numpy(labels[sel])
        t1 = time.perf_counter()
        x = augment_batch(x, cfg.augment, eng.gen)
        t2 = time.perf_counter()
        with eng.autocast():
            out = eng.model(x)
        t3 = time.perf_counter()
        loss, _ = shape_loss(out, x, y, eng.weights, 10.0, True)
        t4 = time.perf_counter()
        eng.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t5 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(eng.model.parameters(), 5.0)
        eng.optimizer.step()
        t6 = time.perf_counter()
        for k, a, z in (("batch", t0, t1), ("augment", t1, t2), ("forward", t2, t3), ("loss", t3, t4),
                        ("backward", t4, t5), ("optim", t5, t6)):
            t[k] += (z - a) * 1000 / steps
    total_ms = sum(t.values())
    t0 = time.perf_counter()
    eng.predict(masks[:32])
    val_s = (time.perf_counter() - t0) * N_VAL / 32
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_state(Path(tmp) / "ck", eng.state(0, {}, []))
        save_s = time.perf_counter() - t0
    blocks = _block_times(eng, eng.tensor(masks[:BATCH]))
    epoch_train_s = total_ms / 1000 * (N_TRAIN // BATCH)
    return {"grid": grid, "path": path, **{f"{k}_ms": v for k, v in t.items()}, "total_ms": total_ms,
            "samples_per_s": BATCH / total_ms * 1000, "epoch_train_s": epoch_train_s, "epoch_val_s": val_s,
            "checkpoint_s": save_s, "blocks_ms": blocks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", default="32,64")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for grid in map(int, args.grids.split(",")):
        for path in ("old", "new"):
            rows.append(profile(grid, path, args.steps if grid <= 32 else max(3, args.steps // 3)))
            print({k: v for k, v in rows[-1].items() if k != "blocks_ms"}, flush=True)
    cells = [[f"{r['grid']}³", r["path"], f"{r['augment_ms']:.0f}", f"{r['forward_ms']:.0f}",
              f"{r['backward_ms']:.0f}", f"{r['batch_ms'] + r['loss_ms'] + r['optim_ms']:.0f}",
              f"{r['samples_per_s']:.1f}", f"{r['epoch_train_s']:.1f}", f"{r['epoch_val_s']:.1f}",
              f"{r['checkpoint_s']:.2f}"] for r in rows]
    publish("profile_epoch", "profile_epoch (LVAE, batch 8, CPU)",
            f"{args.threads} threads; ms per training step (other = batching + loss + optimiser step with gradient "
            "clipping); seconds per "
            f"epoch of {N_TRAIN} training / {N_VAL} validation subjects",
            ["grid", "path", "aug", "fwd", "bwd", "other", "smp/s", "train s", "val s", "ckpt s"],
            cells, rows)
    lines = ["", "Forward + backward ms per backbone block (costliest first):", ""]
    for r in rows:
        blocks = sorted(r["blocks_ms"].items(), key=lambda kv: -kv[1])
        lines.append(f"- {r['grid']}³ {r['path']}: " + "; ".join(f"{k} {v:.0f}" for k, v in blocks))
    print("\n".join(lines))
    with open(RESULTS / "profile_epoch.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
