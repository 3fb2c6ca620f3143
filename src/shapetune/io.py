"""Writing files and output folders safely: atomic writes, and folders that ShapeTune owns.

Atomic writes go through a temporary file with a unique name in the target's folder (two writers never share
one), flushed to disk before it is renamed over the target, so a reader sees the old file or the new one.

Output folders (``--out`` of export, predict, train, study, ...) carry a small marker, ``.shapetune-output.json``,
naming the command that wrote them and, for folders that are replaced as a whole, every file in them. A
command writes only into a folder that is new, empty, or its own: it refuses a non-empty folder it did not
write, replaces its own previous output only with ``--force``, and never removes a file it did not list.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shapetune import __version__
from shapetune.errors import OutputError

MARKER = ".shapetune-output.json"


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A unique temporary path beside ``path`` for a writer that needs a file name (``torch.save``,
    ``nib.save``, ``to_parquet``, ``np.savez``); once the block ends it is fsynced and renamed over ``path``,
    and if the block raises it is removed. ``suffix`` keeps the extension a writer may dispatch on."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the data on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_parquet(df: Any, path: str | Path) -> None:
    """Write a pandas frame to ``path`` as Parquet (no index) through :func:`atomic_path`."""
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsynced, then renamed into place."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: object) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def files_in(folder: Path) -> set[str]:
    """Relative POSIX names of every non-folder entry below ``folder`` (links are listed, not followed)."""
    out = set()
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel = Path(root).relative_to(folder)
        out.update((rel / f).as_posix() for f in files)
        out.update((rel / d).as_posix() for d in dirs if (Path(root) / d).is_symlink())
    return out


def read_marker(folder: Path) -> dict | None:
    """The folder's ownership marker, or None when it has none (or an unreadable one)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _describe(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output(out: str | Path, kind: str, force: bool = False, replace: bool = True,
                 legacy: Callable[[Path], bool] | None = None) -> None:
    """Refuse an output folder that ``shapetune KIND`` may not write.

    Args:
        out: the folder a command is about to write.
        kind: the command (``export``, ``predict``, ``train``, ...), recorded in the folder's marker.
        force: replace a previous output of the same command.
        replace: the command replaces the folder as a whole (export, predict); False for folders a command
            continues (a training run, a study), which it may add to without ``--force``.
        legacy: recognises this command's output written before markers existed.

    Raises:
        OutputError: ``out`` is a file or a link, its parent cannot be written, it holds files the command did
            not write, or (``replace`` without ``force``) it holds the command's previous output.
    """
    out = Path(out)
    if out.is_symlink():
        raise OutputError(out, "is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a folder")
    parent = next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not out.exists() and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise OutputError(out, f"cannot be created: {parent} is not a writable folder")
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(out, "is not writable")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = read_marker(out)
    ours = (marker is not None and marker.get("kind") == kind) or (legacy is not None and legacy(out))
    present = sorted(files_in(out) - {MARKER})
    if not ours:
        raise OutputError(out, f"is not empty and was not written by `shapetune {kind}` (it holds "
                               f"{_describe(present or [p.name for p in out.iterdir()])}); choose a new or empty "
                               "folder")
    if not replace:
        return
    listed = set(marker.get("files", [])) if marker else set(present)
    foreign = [f for f in present if f not in listed]
    if foreign:
        raise OutputError(out, f"holds files that `shapetune {kind}` did not write ({_describe(foreign)}); "
                               "move them away first")
    if not force:
        raise OutputError(out, f"holds a previous `shapetune {kind}` output; --force replaces it")


def write_marker(folder: Path, kind: str, files: set[str] | None = None) -> None:
    """Mark ``folder`` as written by ``shapetune KIND`` (with its files when it is replaced as a whole)."""
    marker: dict = {"kind": kind, "shapetune_version": __version__}
    if files is not None:
        marker["files"] = sorted(files)
    atomic_write_json(folder / MARKER, marker)


def claim_folder(out: str | Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> Path:
    """Create (or continue) a folder that ``shapetune KIND`` adds to over time; refuse anyone else's."""
    out = Path(out)
    check_output(out, kind, replace=False, legacy=legacy)
    out.mkdir(parents=True, exist_ok=True)
    if read_marker(out) is None:
        write_marker(out, kind)
    return out


@contextlib.contextmanager
def staged_folder(out: str | Path, kind: str, force: bool = False,
                  legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build an output folder in a fresh sibling and publish it as ``out`` in one rename.

    The checks of :func:`check_output` run before the body (so a refused ``--out`` costs no work) and again
    before publishing. A previous output of the same command is moved aside, the new one renamed in, and only
    then the old one removed: a crash at any point leaves either the old output or the new one under ``out``.
    On error the staging folder is removed and ``out`` is untouched.
    """
    out = Path(out).absolute()
    check_output(out, kind, force, legacy=legacy)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        write_marker(tmp, kind, files_in(tmp))
        check_output(out, kind, force, legacy=legacy)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)  # checked above: it holds only what this command wrote
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
