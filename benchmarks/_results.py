"""Shared output of the benchmark scripts: a rich table in the terminal, ``results/<name>.{md,json}`` on disk."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

# SHAPETUNE_BENCH_RESULTS: another folder (the tests run scripts with it, keeping the recorded results as they are).
RESULTS = Path(os.environ.get("SHAPETUNE_BENCH_RESULTS") or Path(__file__).parent / "results")


def publish(name: str, title: str, note: str, columns: list[str], cells: list[list[str]], rows: list[dict]) -> None:
    """Print ``cells`` under ``columns`` and write the Markdown table (with the date and ``note``) and ``rows``
    (copied to ``$OUT`` too when it is set, as on the device machine)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in cells:
        t.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
    Console().print(t)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{time.strftime('%Y-%m-%d')}, {note}\n\n" + "\n".join(md) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    if os.environ.get("OUT"):  # a GPU machine sends back what is under $OUT, also after a command's time limit
        for ext in ("md", "json"):
            shutil.copy(RESULTS / f"{name}.{ext}", Path(os.environ["OUT"]) / f"{name}.{ext}")


def host_reference(seconds: float = 3.0) -> float:
    """Steps/s of one fixed workload (a 16-map 3×3×3 conv at 32³, batch 8, forward + backward, fp32) at the
    current torch thread count.

    Walls of runs made on different days compare only through it: this machine's speed varies (bench_train's
    unchanged old path ran 29.3 samples/s on 2026-12-02 and 15.2 on 2026-12-03).
    """
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = torch.randn(8, 16, 32, 32, 32, generator=g)

    def step() -> None:
        conv.zero_grad()
        conv(x).square().mean().backward()

    step()  # warm-up: kernel selection and allocation
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)
