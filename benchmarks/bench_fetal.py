"""Fetal-skull study at 64^3: CVAE, HCVAE and TL-Net x 3 folds, the table by view subset (3, 2, 1 views).

    python benchmarks/bench_fetal.py [--grid 64 --epochs 60 --models cvae,hcvae,tlnet,cgan --out DIR ...overrides]

Synthesizes and prepares the 72-subject cohort (reused when present), then runs ``run_study`` -- the same
code as ``shapetune study``: one Ray Train run per model and fold (a finished run is reused, so an
interrupted benchmark continues), scoring on each fold's 14 test subjects with every view subset, 8 prior
samples per case for the uncertainty maps. Prints the table (mean +- sd over folds) and writes
``benchmarks/results/bench_fetal.{md,json}``; the study folder keeps ``table.md`` and the figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _results import RESULTS, publish

from shapetune.data.fetal.cohort import FetalConfig, synth_fetal
from shapetune.data.fetal.prepare import prepare_fetal
from shapetune.evaluation.fetal.study import SIZE_ERRORS, SUBSET_LABELS, run_study
from shapetune.config import load_config

CONFIGS = Path(__file__).parents[1] / "src" / "shapetune" / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--models", default="cvae,hcvae,tlnet,cgan")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "tmp" / "fetal"))
    ap.add_argument("--rescore", action="store_true", help="score the (reused) runs again, e.g. after new metrics")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every model")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    synth_fetal(out / "raw", FetalConfig(grid=args.grid), workers=2)
    prepare_fetal(out / "raw", out / "prepared", args.grid, workers=2)
    # CPU budget: learning rate 2e-3 (the reference study's 1e-3 needs about twice the epochs to get as far).
    overrides = [f"model.grid={args.grid}", f"optim.epochs={args.epochs}", "optim.lr=0.002", *args.overrides]
    configs = {m: load_config(CONFIGS / f"{m}.yaml", overrides) for m in args.models.split(",")}
    res = run_study(configs, out / "prepared", out / "study", samples=args.samples, cpus_per_worker=2,
                    force=args.rescore)
    wall = time.perf_counter() - t0
    t = res.table
    cells, rows = [], []
    for _, r in t.iterrows():
        cells.append([r.model, SUBSET_LABELS[r.views], f"{r.dice_mean:.3f} ± {r.dice_sd:.3f}",
                      f"{r.hd_mean:.2f} ± {r.hd_sd:.2f}", f"{r.rvd_mean:+.3f} ± {r.rvd_sd:.3f}",
                      f"{r.uncertainty_mean:.4f}" if r.uncertainty_mean == r.uncertainty_mean else "-",
                      f"{r.uncertainty_auc_mean:.2f}" if r.uncertainty_auc_mean == r.uncertainty_auc_mean else "-",
                      " / ".join(f"{r.get(f'abs_{c}_mean', float('nan')):.3f}" for c in SIZE_ERRORS)])
        rows.append(r.to_dict())
    drop = t.pivot(index="model", columns="views", values="dice_mean")
    drops = ", ".join(f"{m} {drop.loc[m, '3v'] - drop.loc[m, '1v']:.3f}" for m in drop.index)
    note = (f"{args.grid}^3, 72 subjects, 3 folds x 14 test, {args.epochs} epochs per run, models "
            f"{args.models}; Dice lost from 3 views to 1 view: {drops}; study folder {res.out}; "
            f"{len(res.trained)} run(s) trained and {len(res.scored)} scored in {wall / 60:.0f} min on this machine")
    publish("bench_fetal", f"fetal skull reconstruction, {args.grid}^3 (mean ± sd over 3 folds)", note,
            ["model", "views", "DC", "HD mm", "RVD", "uncertainty", "unc. AUROC", "|size error| OFD / BPD / height"],
            cells, rows)


if __name__ == "__main__":
    main()
