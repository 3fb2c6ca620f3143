"""Import time of the entry points a person waits on: a fresh interpreter per sample, median of ``--repeat``.

    python benchmarks/bench_imports.py [--repeat 7]

Issue 18's target: ``shapetune.dashboard.experiments`` (what every dashboard page reads an experiment with) in
under 1 s and without torch or Ray. The heavy packages each module loads are listed beside its time. Prints a
table and writes ``benchmarks/results/bench_imports.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _results import publish

MODULES = ["shapetune.catalog", "shapetune.config", "shapetune.experiment.table", "shapetune.dashboard.experiments",
           "shapetune.cli", "shapetune.evaluation.service", "shapetune.tuning.sweep", "shapetune.training.engine"]
HEAVY = ("torch", "ray", "ray.tune", "optuna", "streamlit", "matplotlib", "sklearn")
PROBE = ("import json, sys, time; t = time.perf_counter(); import {m}; dt = time.perf_counter() - t; "
         "print(json.dumps([dt, [h for h in {heavy!r} if h in sys.modules]]))")


def measure(module: str, repeat: int) -> tuple[float, list[str]]:
    """Median seconds to import ``module`` in a fresh interpreter (after ``import json, sys, time``)."""
    times, loads = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE.format(m=module, heavy=HEAVY)], capture_output=True,
                             text=True, check=True).stdout
        dt, loads = json.loads(out)
        times.append(dt)
    return statistics.median(times), loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for m in MODULES:
        dt, loads = measure(m, args.repeat)
        rows.append({"module": m, "import_s": dt, "loads": loads})
        print(rows[-1], flush=True)
    cells = [[r["module"], f"{r['import_s']:.2f}", ", ".join(r["loads"]) or "-"] for r in rows]
    publish("bench_imports", "bench_imports (fresh interpreter, median)",
            f"{os.cpu_count()} CPUs, median of {args.repeat} fresh interpreters, page cache warm; target: "
            "shapetune.dashboard.experiments < 1 s without torch or Ray",
            ["module", "import s", "heavy packages loaded"], cells, rows)


if __name__ == "__main__":
    main()
