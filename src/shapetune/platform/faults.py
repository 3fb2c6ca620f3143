"""Fault injection for chaos tests of the recovery paths (worker crash, failing trial)."""

from __future__ import annotations

import os
from pathlib import Path

from shapetune.platform.config import TrainConfig


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
