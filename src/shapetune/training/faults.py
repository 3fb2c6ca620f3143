"""Fault injection for chaos tests of the recovery paths (worker crash, failing trial)."""

from __future__ import annotations

import os
from pathlib import Path

from shapetune import storage
from shapetune.config import TrainConfig


def marker_dir(location: str | Path) -> Path:
    """A local folder for the fault markers of a run at ``location``; a run at a storage URI keeps them in the
    cache (markers are test bookkeeping, not results)."""
    if storage.is_uri(location):
        return storage.cache_root() / "faults" / storage.name_of(location)
    return Path(location)


def inject_fault(cfg: TrainConfig, epoch: int, rank: int, marker_dir: str | Path) -> None:
    """Fail as ``cfg.fault_injection`` says; each injected failure appends a line to a marker file."""
    fi = cfg.fault_injection
    if fi is None or fi.epoch != epoch or fi.rank != rank:
        return
    marker = Path(marker_dir) / f".fault_injected_epoch{epoch}_rank{rank}"
    if fi.once and marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    with marker.open("a") as f:
        f.write(f"{fi.mode}\n")
    if fi.mode == "raise":
        raise RuntimeError(f"injected fault at epoch {epoch}, rank {rank} (fault_injection in the config)")
    os._exit(17)  # a hard crash, as a killed worker process would look
