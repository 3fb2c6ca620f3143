"""Quality run: the shipped configs against the PCA(50)+LR baseline on a prepared cohort, CPU.

    python benchmarks/bench_quality.py --data demo_out/prepared/imperial --acdc demo_out/prepared/acdc \
        [--models lvae,vae,ae --threads 2 ...overrides]
    python benchmarks/bench_quality.py --data tubes_prepared --name bench_quality_tubes   # any cohort's phases

Trains each shipped config in-process (the same engine as the Ray Train workers) for its own default epochs,
keeps the best checkpoint by validation Dice, and scores it on the test split and on the ACDC-style external
split: Dice per phase (ED/ES, or a manifest-table cohort's own phases), diagnosis accuracy with a subject-level
bootstrap 95 % CI, and a paired Wilcoxon test of the per-subject Dice against PCA(50)+LR fitted on the same
training split. A finished run of the same config
in ``--runs`` is reused. Prints a table and writes ``benchmarks/results/<--name>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _results import RESULTS, host_reference, publish

from shapetune.evaluation.baselines import PCABaseline
from shapetune.evaluation.splits import EvalSplit, load_split
from shapetune.evaluation.stats import mean_ci, wilcoxon_paired
from shapetune.training.checkpoints import load_model
from shapetune.config import load_config
from shapetune.data.dataset import PreparedDataset, cohort_overrides
from shapetune.training.engine import Engine, dice_per_channel
from shapetune.training.tasks.cardiac import load_training_data
from shapetune.training.local import train_local

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"


def pca_scores(train_dir: str, splits: dict[str, EvalSplit], n: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: PCA(n)+LR's per-subject Dice ``[N, P]`` and positive-class probability, fitted on the training
    split."""
    tr = load_split(train_dir, "train", "train")
    pca = PCABaseline(n).fit(tr.masks, tr.labels)
    out = {}
    for name, sp in splits.items():
        o = pca.predict(sp)
        d = dice_per_channel(torch.from_numpy(o.recon).float(), torch.from_numpy(sp.masks).float()).numpy()
        out[name] = (d, o.prob)
    return out


def row(model: str, split: EvalSplit, dice: np.ndarray, prob: np.ndarray, ref: np.ndarray | None,
        phases: tuple[str, ...]) -> dict:
    correct = ((prob > 0.5) == split.labels).astype(float)
    _, _, lo, hi = mean_ci(correct)
    r = {"model": model, "split": split.name, "n": len(split.labels),
         **{f"dice_{ph}": float(dice[:, i].mean()) for i, ph in enumerate(phases)},
         "acc": float(correct.mean()), "acc_ci": [lo, hi]}
    if ref is not None:  # paired against PCA on the same subjects
        for i, ph in enumerate(phases):
            w = wilcoxon_paired(dice[:, i], ref[:, i])
            r[f"vs_pca_{ph}_median"], r[f"vs_pca_{ph}_p"] = w["median_difference"], w["p_value"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--acdc", default=None, help="a prepared ACDC-style dataset on the same grid (external split)")
    ap.add_argument("--models", default="lvae,vae,ae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="bench_quality", help="the results' file name under benchmarks/results")
    ap.add_argument("--runs", default=None, help="finished runs to reuse (default: results/quality_runs, or "
                                                 "results/<name>_runs for another --name: one folder per cohort)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    host = host_reference()  # before training, on an idle machine: walls of other days compare through it
    ds = PreparedDataset(args.data)
    phases = ds.phases
    overrides, _ = cohort_overrides(args.data, list(args.overrides))  # as `shapetune train` does
    splits = {"test": load_split(args.data, "test", "test")}
    if args.acdc:
        splits["acdc"] = load_split(args.acdc, None, "acdc")
    pca = pca_scores(args.data, splits)
    rows = [row("PCA(50)+LR", sp, *pca[k], None, phases) | {"wall_s": float("nan"), "best_epoch": None, "epochs": None}
            for k, sp in splits.items()]
    for name in args.models.split(","):
        cfg = load_config(CONFIGS / f"{name}.yaml", overrides)
        data = load_training_data(args.data, cfg.model.grid, cfg.model.in_channels)
        runs = args.runs or RESULTS / ("quality_runs" if args.name == "bench_quality" else f"{args.name}_runs")
        run_dir = Path(runs) / name
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
        engine = Engine(cfg2, model, torch.device("cpu"))
        for k, sp in splits.items():
            dice, prob = engine.predict(sp.masks)
            rows.append(row(name, sp, dice, prob, pca[k][0], phases)
                        | {"wall_s": wall, "best_epoch": state["epoch"] + 1, "epochs": cfg.optim.epochs,
                           "host_reference_steps_per_s": host})
            print(rows[-1], flush=True)

    def vs(r: dict) -> str:
        if f"vs_pca_{phases[0]}_p" not in r:  # PCA's own rows
            return "-"
        return " / ".join(f"{r[f'vs_pca_{ph}_median']:+.3f} p={r[f'vs_pca_{ph}_p']:.0e}" for ph in phases)

    cells = [[r["model"], r["split"], " / ".join(f"{r[f'dice_{ph}']:.3f}" for ph in phases), vs(r),
              f"{r['acc']:.3f} [{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}]",
              "-" if r["best_epoch"] is None else f"{r['best_epoch']}/{r['epochs']}",
              "-" if not np.isfinite(r["wall_s"]) else f"{r['wall_s'] / 60:.1f} min"] for r in rows]
    names = " / ".join(ph.upper() for ph in phases)
    cohort = ds.meta.get("cohort", "imperial")
    publish(args.name, f"{args.name} ({ds.grid.shape[0]}³ {cohort} cohort, CPU)",
            f"{args.threads} CPU threads (host reference {host:.2f} steps/s), overrides {overrides}; vs PCA: "
            f"median paired Dice difference and Wilcoxon p, {names}",
            ["model", "split", f"Dice {names}", f"vs PCA ({names})", "accuracy [95 % CI]", "best epoch", "wall"],
            cells, rows)


if __name__ == "__main__":
    main()
