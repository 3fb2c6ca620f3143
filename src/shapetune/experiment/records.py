"""Per-trial records: ``EXP/records/TRIAL_ID.json``, written by the sweep driver as trials start, report and end.

A record is plain JSON (never a pickle) holding what the trial table needs: the sampled parameters (only the
conditional ones a trial actually drew), its status, every epoch's reported metrics, and the last line of its
error. The driver writes each one atomically after every event, so a driver killed at any moment leaves
records that describe every trial up to its last report; ``trials.parquet`` is rebuilt from them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from shapetune.io import atomic_write_json

RECORDS_DIR = "records"
RECORD_FORMAT = 1
STATUSES = ("pending", "running", "terminated", "error", "abandoned")


def record_path(exp_dir: Path, trial_id: str) -> Path:
    """Where the driver keeps one trial's record."""
    return exp_dir / RECORDS_DIR / f"{trial_id}.json"


def _scalar(v: Any) -> Any:
    """A JSON-safe copy of a reported value, or None for what a record does not keep (nested dicts, arrays)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    try:
        f = float(v)  # numpy and torch scalars
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A trial's config as ``{dotted name: value}`` (Tune nests names that contain ``/``)."""
    out: dict[str, Any] = {}
    for k, v in (config or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, f"{name}/"))
        else:
            out[name] = v if isinstance(v, (list, tuple)) else _scalar(v)
    return out


def epoch_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of one Tune result (metrics and Tune's counters; not its config)."""
    out = {}
    for k, v in result.items():
        if k == "config" or isinstance(v, dict):
            continue
        s = _scalar(v)
        if s is not None or v is None:
            out[k] = s
    return out


def read_record(path: Path) -> dict[str, Any] | None:
    """One record, or None when it is missing or not a record (a half-written file cannot exist: writes are
    atomic; anything else in the folder is ignored and named by :func:`read_records`)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or not isinstance(rec.get("trial_id"), str):
        return None
    return rec


def read_records(exp_dir: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """Every trial record of an experiment (by trial id) and the files in ``records/`` that are not records."""
    folder = exp_dir / RECORDS_DIR
    good, bad = [], []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = read_record(f)
        (good.append(rec) if rec is not None and f.stem == rec["trial_id"] else bad.append(f))
    return good, bad


def records_mtime(exp_dir: Path) -> int:
    """The newest modification time (ns) in ``records/`` (0 without records): when the records last changed."""
    folder = exp_dir / RECORDS_DIR
    try:
        times = [folder.stat().st_mtime_ns] + [f.stat().st_mtime_ns for f in folder.iterdir()]
    except OSError:
        return 0
    return max(times)


class TrialRecorder:
    """Keeps the records of one experiment up to date (used by the sweep driver's Tune callback)."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = Path(exp_dir)
        (self.exp_dir / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, dict[str, Any]] = {}

    def _get(self, trial_id: str) -> dict[str, Any]:
        if trial_id not in self._cache:  # a resumed sweep continues the records it left
            self._cache[trial_id] = read_record(record_path(self.exp_dir, trial_id)) or {
                "format": RECORD_FORMAT, "trial_id": trial_id, "params": {}, "status": "pending", "history": [],
                "error": None, "started": time.time()}
        return self._cache[trial_id]

    def _save(self, rec: dict[str, Any]) -> Path:
        rec["updated"] = time.time()
        path = record_path(self.exp_dir, rec["trial_id"])
        atomic_write_json(path, rec)
        return path

    def start(self, trial_id: str, config: dict[str, Any]) -> Path:
        """A trial started (or restarted): its parameters, status running."""
        rec = self._get(trial_id)
        rec.update(params=flat_params(config), status="running")
        return self._save(rec)

    def result(self, trial_id: str, result: dict[str, Any], epoch_key: str = "epochs_done") -> Path:
        """One epoch's report. A restarted trial reports again from its last checkpoint: a report replaces
        those of the same or later epochs of an earlier attempt."""
        rec = self._get(trial_id)
        row = epoch_metrics(result)
        n = row.get(epoch_key, row.get("training_iteration"))
        if n is not None:
            rec["history"] = [h for h in rec["history"] if (h.get(epoch_key, h.get("training_iteration")) or 0) < n]
        rec["history"].append(row)
        rec["status"] = "running"
        return self._save(rec)

    def end(self, trial_id: str, status: str, error: str | None = None) -> Path:
        """A trial ended: ``terminated`` (finished or stopped early), ``error`` (with its error's last line), or
        ``abandoned`` (lost by a killed driver before Tune saved it; its Optuna trial went on as another)."""
        if status not in STATUSES:
            raise ValueError(f"unknown trial status {status!r}")
        rec = self._get(trial_id)
        rec.update(status=status, error=error)
        return self._save(rec)
