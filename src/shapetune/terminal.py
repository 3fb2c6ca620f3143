"""Tables that fit the terminal: the columns that fit whole, in priority order, and a note naming the others.

Rich folds a cell that does not fit its column, so a ten-column trial table in an 80-column terminal became a
column of word fragments ("statu/s", "COMPLE/TE"). Here a column is either shown whole or left out, and the
file that holds every column is named instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

GAP = 3  # columns between two table columns: padding 1 on each side and the (blank) rule of box.SIMPLE_HEAD


def fitted_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], width: int,
                 priority: Sequence[int] | None = None, right: Sequence[int] = ()) -> tuple[Table, list[str]]:
    """A table of the columns that fit in ``width`` terminal columns.

    Args:
        title: the table's title.
        headers: the column names.
        rows: the cells, already formatted, one list per row.
        width: the terminal's width.
        priority: column indices, most wanted first (default: left to right); the first always shows.
        right: indices of right-aligned (numeric) columns.

    Returns:
        The table (its columns in their original order) and the headers of the columns left out.
    """
    order = list(priority) if priority is not None else list(range(len(headers)))
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    shown, used = [], 0
    for i in order:
        need = widths[i] + (GAP if shown else 0)
        if not shown or used + need <= width:
            shown.append(i)
            used += need
    shown.sort()
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                  title_justify="left")
    for i in shown:
        table.add_column(headers[i], justify="right" if i in right else "left", no_wrap=True)
    for r in rows:
        table.add_row(*(r[i] for i in shown))
    return table, [h for i, h in enumerate(headers) if i not in shown]
