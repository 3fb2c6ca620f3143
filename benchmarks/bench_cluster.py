"""Cluster benchmark: trials per hour of the same small sweep on 1, 2 and 3 simulated Ray nodes of this machine.

    python benchmarks/bench_cluster.py [--nodes 1,2,3 --trials 12 --epochs 8 --subjects 240]

Each arm is a ``ray.cluster_utils.Cluster``: a head with no CPU (the driver: Tune, Optuna) and N worker nodes
with 1 logical CPU each (one torch thread per trial), concurrency N, random search (every arm trains the same
configurations), data and results in a ``file://`` bucket (the cluster code path: data mirrored by the
driver, checkpoints uploaded by the node that trains). Measured per arm: wall time, trials per hour, the mean
training time inside a trial, the scheduling gap between one trial's last report and the next trial's first
step, and the node efficiency = busy trial seconds / (wall x N). Prints a table and writes
``benchmarks/results/bench_cluster.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from _results import RESULTS, publish
from bench_sweep import gaps

from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid
from shapetune import storage
from shapetune.tuning.sweep import SweepSettings, run_sweep

SPACE = """\
base: lvae
fixed:
  model.grid: 16
  model.width: 8
  model.ladder_hidden: 64
  optim.epochs: {epochs}
  optim.batch_size: 8
  augment.enabled: false
objectives:
  - {{metric: val_dice, mode: max}}
sampler: {{name: random}}
scheduler: {{name: none}}
hierarchy:
  depth: {{low: 2, high: 3}}
  top: {{low: 2, high: 4}}
  level: {{low: 8, high: 16}}
params:
  loss.lambda_kl: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}
  optim.lr: {{type: float, low: 1.0e-3, high: 5.0e-3, log: true}}
"""


def dataset(root: Path, subjects: int) -> Path:
    """A 16^3 Imperial-style dataset (train/val/test = 60/20/20 % of ``subjects``), made once."""
    n = subjects // 2
    split = (("train", int(n * 0.6), int(n * 0.6)), ("val", int(n * 0.2), int(n * 0.2)),
             ("test", int(n * 0.2), int(n * 0.2)))
    synth_imperial(root / "raw", SynthConfig(seed=3, grid=16, spacing=8.0), split=split, workers=2, quiet=True)
    prepare(root / "raw", "imperial", root / "prep", TemplateGrid.cube(16, 8.0), workers=2, quiet=True)
    return root / "prep"


def arm(nodes: int, root: Path, data_uri: str, space: Path, trials: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    t_start = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, configure_logging=False, log_to_driver=False)
    start_s = time.perf_counter() - t_start
    try:
        bucket = storage.join(f"file://{root / 'bucket'}", "experiments")
        t0 = time.perf_counter()
        df = run_sweep(SweepSettings(name=f"nodes{nodes}", space=str(space), data=data_uri, trials=trials,
                                     concurrency=nodes, storage_path=bucket, seed=0))
        wall = time.perf_counter() - t0
        g = gaps(_tune_dir(bucket, nodes))
    finally:
        ray.shutdown()
        c.shutdown()
    busy = float(df.wall_s.sum())
    return {"nodes": nodes, "cpus_per_node": 1, "trials": int(len(df)),
            "completed": int((df.status == "completed").sum()),
            "nodes_used": int(df.node_id.nunique()), "cluster_start_s": start_s, "wall_s": wall,
            "trials_per_hour": len(df) / wall * 3600, "trial_s_mean": busy / len(df),
            "gap_median_s": float(np.median(g)) if g else float("nan"), "efficiency": busy / (wall * nodes)}


def _tune_dir(bucket: str, nodes: int) -> Path:
    """Tune's experiment folder in the file:// bucket (what ``gaps`` reads)."""
    return Path(storage.resolve(storage.join(bucket, f"nodes{nodes}"))[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--subjects", type=int, default=240)
    args = ap.parse_args()
    root = RESULTS / "tmp" / "bench_cluster"
    shutil.rmtree(root / "bucket", ignore_errors=True)
    os.environ["SHAPETUNE_CACHE"] = str(root / "cache")
    shutil.rmtree(root / "cache", ignore_errors=True)
    data_uri = f"file://{root / 'bucket' / 'data'}"
    storage.upload(dataset(root, args.subjects), data_uri)
    space = root / "space.yaml"
    space.write_text(SPACE.format(epochs=args.epochs))
    rows = []
    for n in map(int, args.nodes.split(",")):
        r = arm(n, root, data_uri, space, args.trials)
        rows.append(r)
        print(r, flush=True)
    base = rows[0]["trials_per_hour"]
    cells = [[str(r["nodes"]), f"{r['nodes_used']}", f"{r['trials']}", f"{r['wall_s']:.1f}",
              f"{r['trials_per_hour']:.0f}", f"{r['trials_per_hour'] / base:.2f}x", f"{r['trial_s_mean']:.1f}",
              f"{r['gap_median_s']:.2f}", f"{r['efficiency']:.2f}", f"{r['cluster_start_s']:.1f}"] for r in rows]
    publish("bench_cluster", "Sweep throughput on simulated nodes",
            f"{os.cpu_count()} physical cores; each node 1 logical CPU (1 torch thread per trial), head 0 CPUs; "
            f"{args.trials} random-search trials of a 16^3 Ladder VAE, {args.epochs} epochs, {args.subjects} subjects; "
            "data and results in a file:// bucket",
            ["nodes", "nodes used", "trials", "wall s", "trials/hour", "speed-up", "s per trial", "gap s (median)",
             "efficiency", "cluster start s"], cells, rows)


if __name__ == "__main__":
    main()
