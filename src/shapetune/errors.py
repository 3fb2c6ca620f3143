"""The base of ShapeTune's own errors: each says ``<file or folder>: <problem>``, and the CLI prints it as
``error: <file>: <problem>`` with exit code 2."""

from __future__ import annotations

from pathlib import Path


class ShapeTuneError(ValueError):
    """Bad input or a refused action, worded for the person who gave it (no traceback)."""


class OutputError(ShapeTuneError):
    """An output location that ShapeTune will not write to (not ours, not empty, a file, not writable)."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")
