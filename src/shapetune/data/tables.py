"""Rich tables shared by the dataset summaries of every task."""

from __future__ import annotations

import pandas as pd
from rich.table import Table


def count_table(counts: pd.DataFrame, title: str) -> Table:
    """A rich table of integer counts, one row per split."""
    t = Table(title=title)
    t.add_column("split")
    for c in counts.columns:
        t.add_column(str(c), justify="right")
    for split, r in counts.iterrows():
        t.add_row(str(split), *[str(int(v)) for v in r])
    return t
