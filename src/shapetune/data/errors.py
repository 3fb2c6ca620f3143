"""Errors raised for bad input data; each names the offending file."""

from __future__ import annotations

from pathlib import Path

from shapetune.errors import ShapeTuneError


class DataError(ShapeTuneError):
    """A problem with one input file (or subject), reported as ``<path>: <problem>``."""

    def __init__(self, path: str | Path, problem: str, subject: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.subject = subject
        super().__init__(f"{self.path}: {problem}")
