"""Data benchmark: subjects/s for synthesis and preparation of each cohort, volumes/s for reading.

    python benchmarks/bench_data.py [--grid 64 --spacing 2 --n-imperial 40 --n-acdc 10 --workers 2]

Prints a table and writes ``benchmarks/results/bench_data.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.console import Console
from rich.table import Table

from shapetune.data.cohorts import SynthConfig, synth_acdc, synth_imperial
from shapetune.data.dataset import PreparedDataset
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid

RESULTS = Path(__file__).parent / "results"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--n-imperial", type=int, default=40)
    ap.add_argument("--n-acdc", type=int, default=10, help="patients per group")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reads", type=int, default=200)
    args = ap.parse_args()
    grid = TemplateGrid.cube(args.grid, args.spacing)
    cfg = SynthConfig(seed=1, grid=args.grid, spacing=args.spacing)
    half = args.n_imperial // 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for workers in sorted({1, args.workers}):
            _, dt = timed(lambda workers=workers: synth_imperial(tmp / f"imp{workers}", cfg, workers,
                                                                 (("train", half, half),), True))
            rows.append(("synth imperial", f"{args.grid}³", workers, 2 * half, 2 * half / dt, "subjects/s"))
            _, dt = timed(lambda workers=workers: synth_acdc(tmp / f"acdc{workers}", cfg, args.n_acdc, workers,
                                                             quiet=True))
            rows.append(("synth acdc", "scanner", workers, 2 * args.n_acdc, 2 * args.n_acdc / dt, "subjects/s"))
            _, dt = timed(lambda workers=workers: prepare(tmp / f"imp{workers}", "imperial", tmp / f"pimp{workers}",
                                                          grid, workers=workers, quiet=True))
            rows.append(("prepare imperial", f"{args.grid}³", workers, 2 * half, 2 * half / dt, "subjects/s"))
            _, dt = timed(lambda workers=workers: prepare(tmp / f"acdc{workers}", "acdc", tmp / f"pacdc{workers}",
                                                          grid, workers=workers, quiet=True))
            rows.append(("prepare acdc", f"{args.grid}³", workers, 2 * args.n_acdc, 2 * args.n_acdc / dt, "subjects/s"))
        ds = PreparedDataset(tmp / f"pimp{args.workers}")
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(ds), size=args.reads)
        _, dt = timed(lambda: [np.array(ds.masks[i]) for i in picks])
        rows.append(("read prepared array (mmap)", f"{args.grid}³ x2", 1, args.reads, args.reads / dt, "subjects/s"))
        m = ds.manifest
        _, dt = timed(lambda: [(np.asanyarray(nib.load(m.src_ed[i]).dataobj),
                                np.asanyarray(nib.load(m.src_es[i]).dataobj)) for i in picks])
        rows.append(("decode NIfTI pair (.nii.gz)", f"{args.grid}³ x2", 1, args.reads, args.reads / dt, "subjects/s"))
    table = Table(title=f"bench_data ({platform.node()}, {os.cpu_count()} cores)")
    for c in ("operation", "grid", "workers", "n", "rate", "unit"):
        table.add_column(c, justify="right" if c in ("workers", "n", "rate") else "left")
    for r in rows:
        table.add_row(r[0], r[1], str(r[2]), str(r[3]), f"{r[4]:.1f}", r[5])
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    md = ["| operation | grid | workers | n | rate | unit |", "|---|---|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]} |" for r in rows]
    header = (f"# bench_data\n\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}\n\n")
    (RESULTS / "bench_data.md").write_text(header + "\n".join(md) + "\n")
    (RESULTS / "bench_data.json").write_text(json.dumps([dict(zip(("operation", "grid", "workers", "n", "rate", "unit"),
                                                                  r, strict=True))
                                                        for r in rows], indent=2))
    print(f"wrote {RESULTS / 'bench_data.md'}")


if __name__ == "__main__":
    main()
