"""Shared output of the benchmark scripts: a rich table in the terminal, ``results/<name>.{md,json}`` on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def publish(name: str, title: str, note: str, columns: list[str], cells: list[list[str]], rows: list[dict]) -> None:
    """Print ``cells`` under ``columns`` and write the Markdown table (with the date and ``note``) and ``rows``."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in cells:
        t.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
    Console().print(t)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{time.strftime('%Y-%m-%d')}, {note}\n\n" + "\n".join(md) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
