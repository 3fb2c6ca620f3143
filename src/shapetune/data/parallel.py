"""Process-parallel map with a progress bar, used by synthesis and preparation."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def progress_bar(disable: bool = False) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=disable, transient=False)


def pmap(fn: Callable[[Any], Any], items: Iterable[Any], workers: int | None = None, desc: str = "working",
         quiet: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(item))`` as items finish; exceptions propagate, after pending work is cancelled.

    Keeps at most ``2 * workers`` tasks in flight so memory stays bounded on large cohorts.
    """
    items = list(items)
    workers = workers or default_workers()
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task(desc, total=len(items))
        if workers <= 1:
            for i, it in enumerate(items):
                yield i, fn(it)
                bar.advance(task)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending: dict[Any, int] = {}
            nxt = 0
            try:
                while nxt < len(items) or pending:
                    while nxt < len(items) and len(pending) < 2 * workers:
                        pending[pool.submit(fn, items[nxt])] = nxt
                        nxt += 1
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        yield i, fut.result()
                        bar.advance(task)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
