"""Publish an output folder in one step, and never write into (or replace) a folder ShapeTune did not make.

A prepared dataset or a synthetic cohort is first written into a fresh hidden sibling folder
(``.NAME.staging-PID-TOKEN``) and then renamed into place. Replacing an older output of ours is two renames
(old aside to ``.NAME.old-PID-TOKEN``, new in) followed by moving back whatever the old folder held that we
did not write (a user's notes, ``figures/``) and removing the rest of the old one. A run killed at any point
leaves either the old output, the new one, or no output plus siblings that the next run cleans up (an
interrupted swap is rolled back to the old output first), never a half-written folder under ``NAME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shapetune.data.errors import DataError

# What each kind of output holds at its top level when its marker does not list it (outputs written before
# the marker recorded "contents"); used to tell our files from a user's when an old output is replaced.
DATASET_FILES = ("dataset.json", "masks.npy", "planes.npy", "manifest.parquet")
COHORT_FILES = ("cohort.json", "subjects.csv", "folds.csv", "ground_truth.parquet", "shapetune_ground_truth.parquet",
                "subjects")
KINDS = {"dataset": ("dataset.json", DATASET_FILES), "cohort": ("cohort.json", COHORT_FILES)}


@dataclass
class Publication:
    """Where one run writes (``staging``) and what it found at ``out`` before it started."""

    out: Path
    kind: str
    staging: Path
    notes: list[str] = field(default_factory=list)  # what recovery or publishing did besides the swap


def marker_of(path: Path, kind: str) -> dict | None:
    """Our marker file's content (``dataset.json`` / ``cohort.json``), or None when ``path`` holds no such marker."""
    marker = path / KINDS[kind][0]
    if not marker.is_file():
        return None
    try:
        meta = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    # Other tools write a dataset.json too (nnU-Net does): ours always carries these keys.
    needed = ("format_version", "grid", "cohort") if kind == "dataset" else ("cohort", "generator")
    return meta if all(k in meta for k in needed) else None


def owned_entries(path: Path, kind: str) -> set[str]:
    """Top-level names inside our output ``path`` that ShapeTune wrote (so it may remove them)."""
    meta = marker_of(path, kind) or {}
    listed = meta.get("contents")
    if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
        return set(listed) | {KINDS[kind][0]}
    names = set(KINDS[kind][1])
    if kind == "cohort":  # ACDC-layout cohorts written before "contents" existed: their patient folders
        names |= {p.name for p in path.iterdir() if re.fullmatch(r"patient\d+", p.name)}
    return names


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out(out: Path, kind: str) -> None:
    """Refuse an ``--out`` that is a file, is not writable, or is a non-empty folder ShapeTune did not write."""
    if out.is_symlink():  # replacing it would swap the link, not the folder it points to
        raise DataError(out, f"is a symbolic link (to {os.readlink(out)}); give the folder it points to")
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is a file, not a folder; choose another --out")
    anchor = _nearest_existing(out.parent if not out.exists() else out)
    if not anchor.is_dir():
        raise DataError(out, f"cannot create a folder here: {anchor} is a file")
    for p in {anchor, _nearest_existing(out.parent)}:
        if not os.access(p, os.W_OK | os.X_OK):
            raise DataError(out, f"not writable (no write permission on {p})")
    if out.is_dir() and any(out.iterdir()) and marker_of(out, kind) is None:
        what = "prepared dataset (no ShapeTune dataset.json)" if kind == "dataset" else \
            "ShapeTune cohort (no ShapeTune cohort.json)"
        raise DataError(out, f"is a non-empty folder that is not a {what}; refusing to write into or replace it; "
                             "choose a new or empty --out")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _siblings(out: Path) -> list[tuple[str, int, Path]]:
    """Leftover ``.NAME.staging-PID-*`` / ``.NAME.old-PID-*`` siblings of ``out``: (kind, pid, path)."""
    pat = re.compile(rf"\.{re.escape(out.name)}\.(staging|old)-(\d+)-[0-9a-f]+")
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.iterdir():
        if m := pat.fullmatch(p.name):
            found.append((m.group(1), int(m.group(2)), p))
    return sorted(found, key=lambda t: t[2].name)


def _finish_swap(old: Path, out: Path, kind: str, notes: list[str]) -> None:
    """After ``out`` holds the new output: move back the old folder's foreign entries, remove our old files."""
    ours = owned_entries(old, kind)
    for entry in sorted(old.iterdir()):
        if entry.name in ours:
            continue
        dest = out / entry.name
        if dest.exists() or dest.is_symlink():
            notes.append(f"kept {entry} (the new output has its own {entry.name})")
            continue
        os.rename(entry, dest)
    for name in ours:
        p = old / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    try:
        old.rmdir()
    except OSError:
        notes.append(f"left {old}: it still holds files ShapeTune did not write")


def recover(out: Path, kind: str) -> list[str]:
    """Clean up what an interrupted earlier run left next to ``out``; returns what was done."""
    notes: list[str] = []
    for state, pid, path in _siblings(out):
        if pid != os.getpid() and _pid_alive(pid):
            raise DataError(out, f"another ShapeTune run (pid {pid}) is writing here ({path.name}); wait for "
                                 f"it to finish (if no such run exists, remove {path})")
        if state == "staging":  # holds only files this tool wrote for an output never published
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path.name}, left by an interrupted run")
        elif not out.exists():  # killed between "old aside" and "new in": put the old output back
            os.rename(path, out)
            notes.append(f"restored {out} from {path.name} (an interrupted run had moved it aside)")
        else:  # killed after the swap: finish it
            _finish_swap(path, out, kind, notes)
            notes.append(f"finished replacing {out} (an interrupted run had left {path.name})")
    return notes


def open_out(out: str | Path, kind: str) -> tuple[Path, list[str]]:
    """Check ``out`` (see ``check_out``) and clean up after interrupted runs; returns (out, notes)."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    check_out(out, kind)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, recover(out, kind)
    except OSError as exc:
        raise DataError(out, f"cannot write here ({exc.strerror or exc})") from exc


def begin(out: Path, kind: str, notes: list[str] | None = None) -> Publication:
    """Create the staging folder for ``out`` (already checked by ``open_out``)."""
    try:
        staging = out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise DataError(out, f"cannot write here ({exc.strerror or exc})") from exc
    return Publication(out, kind, staging, list(notes or []))


def commit(pub: Publication) -> list[str]:
    """Move the staged output into place in one step (see the module docstring); returns notes."""
    out, staging = pub.out, pub.staging
    try:
        if out.is_dir() and not any(out.iterdir()):
            os.rmdir(out)  # an empty folder the user made for us: nothing of theirs to keep
        if not out.exists():
            os.rename(staging, out)
            return pub.notes
        if marker_of(out, pub.kind) is None:  # appeared or changed while we were working
            raise DataError(out, "is no longer a ShapeTune output; not replacing it "
                                 f"(the new one is in {staging})")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(staging, out)
        _finish_swap(old, out, pub.kind, pub.notes)
    except OSError as exc:
        raise DataError(out, f"cannot publish ({exc.strerror or exc})") from exc
    return pub.notes


def abandon(pub: Publication) -> None:
    """Remove the staging folder of a run that failed before publishing."""
    shutil.rmtree(pub.staging, ignore_errors=True)


@contextlib.contextmanager
def publishing(out: Path, kind: str, notes: list[str] | None = None,
               what: str = "output") -> Iterator[Publication]:
    """``begin`` a publication, let the body write into ``pub.staging``, then ``commit`` it (its notes land in
    ``pub.notes``); on any error the staging folder is removed, and an ``OSError`` becomes a ``DataError``
    naming ``out``."""
    pub = begin(out, kind, notes)
    try:
        yield pub
        pub.notes = commit(pub)
    except OSError as exc:
        abandon(pub)
        raise DataError(out, f"cannot write the {what} ({exc.strerror or exc})") from exc
    except BaseException:
        abandon(pub)
        raise
