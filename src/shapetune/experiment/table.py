"""The trial table of an experiment, from ShapeTune's own records and the Optuna study (read-only).

Nothing here unpickles: Tune's ``experiment_state-*.json`` embeds cloudpickled objects, so anyone who can write
an experiment folder could run code as whoever reads it. The table comes from ``records/*.json`` (written by
the sweep driver) joined with the Optuna study opened read-only; ``trials.parquet`` is the driver's snapshot.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from shapetune.catalog import table_metrics
from shapetune.experiment.ranking import best_value
from shapetune.experiment.records import RECORDS_DIR, read_records, records_mtime
from shapetune.experiment.settings import (SUMMARY_FILE, SweepSettings, frozen_space, max_epochs, read_settings,
                                           trial_location)
from shapetune.config import ConfigError
from shapetune.search_spaces.spec import HIERARCHY_TOP

if TYPE_CHECKING:
    import optuna

TUNE_TRIAL_ATTR = "tune_trial_id"  # the Optuna user attribute holding a trial's Tune id
TABLE_METRICS = table_metrics()  # every task's validation metrics and train_loss (None where not reported)


def readonly_storage_url(settings: SweepSettings, exp_dir: Path) -> str:
    """The study's storage; the default SQLite file is opened read-only (nothing is created or migrated)."""
    if settings.optuna_storage:
        return settings.optuna_storage
    return f"sqlite:///file:{Path(exp_dir).resolve() / 'optuna.db'}?mode=ro&uri=true"


def open_study_readonly(settings: SweepSettings, exp_dir: Path) -> optuna.Study | None:
    """The sweep's Optuna study without creating or changing anything, or None when it does not exist yet."""
    import optuna

    if not settings.optuna_storage and not (Path(exp_dir) / "optuna.db").exists():
        return None
    storage = optuna.storages.RDBStorage(readonly_storage_url(settings, exp_dir), skip_table_creation=True,
                                         skip_compatibility_check=True,
                                         engine_kwargs={"connect_args": {"timeout": 30}}
                                         if not settings.optuna_storage else {})
    try:
        return optuna.load_study(study_name=settings.name, storage=storage)
    except KeyError:
        return None


def trial_table(exp_dir: str | Path) -> pd.DataFrame:
    """Every trial with its parameters, status and metrics (records joined with the Optuna study).

    Args:
        exp_dir: an experiment folder on this machine (or the local mirror of one at a URI).

    Returns:
        One row per trial: ``trial_id``, ``status`` (completed, stopped early, failed, running, pending),
        ``epochs``, ``optuna_number``/``optuna_state``, ``path`` (its checkpoints), ``param:NAME`` columns, the
        last epoch's metrics, ``best_METRIC`` per objective, ``wall_s``, ``node_id``, ``resumed_from_epoch``,
        ``error``.
    """
    exp = Path(exp_dir).resolve()
    settings = read_settings(exp)
    space = frozen_space(settings)
    records, bad = read_records(exp)
    if bad:
        warnings.warn(f"{exp / RECORDS_DIR}: not trial records, left out of the table: "
                      f"{', '.join(p.name for p in bad)}", stacklevel=2)
    study = open_study_readonly(settings, exp)
    by_tune = {t.user_attrs.get(TUNE_TRIAL_ATTR): t for t in study.get_trials(deepcopy=False)} if study else {}
    home = settings.exp_location if settings.remote else str(exp)
    most = max_epochs(space)
    rows = []
    for rec in sorted(records, key=lambda r: (r.get("started") or 0, r["trial_id"])):
        if rec["status"] == "abandoned":  # not a trial of the sweep: its Optuna trial continued as another one
            continue
        hist = rec.get("history") or []
        last = hist[-1] if hist else {}
        epochs = int(last.get("epochs_done") or last.get("training_iteration") or 0)
        status = {"terminated": "completed" if epochs >= most else "stopped early",
                  "error": "failed"}.get(rec["status"], rec["status"])
        ot = by_tune.get(rec["trial_id"])
        row = {"trial_id": rec["trial_id"], "status": status, "epochs": epochs,
               "optuna_number": ot.number if ot else None, "optuna_state": ot.state.name if ot else None,
               "path": trial_location(home, rec["trial_id"], settings.workers_per_trial)}
        row.update({f"param:{k}": v for k, v in rec.get("params", {}).items()})
        row.update({m: last.get(m) for m in TABLE_METRICS})
        for o in space.objectives:
            best = best_value(hist, o.metric, o.mode)
            if best is not None:
                row[f"best_{o.metric}"] = best
        row["wall_s"] = last.get("time_total_s")
        row["node_id"] = last.get("node_id")  # the Ray node that ran the trial's last epoch
        row["resumed_from_epoch"] = last.get("resumed_from_epoch")
        row["error"] = rec.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def read_trial_table(exp_dir: str | Path) -> pd.DataFrame | None:
    """The trial table, read-only: ``trials.parquet`` when no record changed after it, else rebuilt in memory
    from the records (a sweep still running, or a driver that died before writing the summary); None when the
    experiment has neither (no trial has started)."""
    exp = Path(exp_dir)
    f = exp / SUMMARY_FILE
    changed = records_mtime(exp)  # one listing of records/: it may hold thousands of files
    if f.exists() and (not changed or f.stat().st_mtime_ns >= changed):
        return pd.read_parquet(f)
    return trial_table(exp) if changed else None


def load_summary(exp_dir: str | Path) -> pd.DataFrame:
    """:func:`read_trial_table` for the commands that need trials (export, evaluate).

    Raises:
        ConfigError: the folder has neither records nor a summary.
    """
    table = read_trial_table(exp_dir)
    if table is None:
        raise ConfigError(f"{exp_dir}: no trial records ({RECORDS_DIR}/) and no {SUMMARY_FILE}: no trial has started "
                          "yet, or the sweep was written before ShapeTune kept trial records (resume it once with "
                          "`shapetune tune --resume NAME`, from storage you trust, to write them)")
    return table


def latent_sizes(r: pd.Series) -> str:
    """A trial's latent sizes from its hierarchy parameters, bottom -> top (``[32,8,2]``), or ``-``."""
    top = r.get(f"param:{HIERARCHY_TOP}")
    if top is None or top != top:
        return "-"
    lower = sorted((c for c in r.index if c.startswith("param:hierarchy.z_") and c != f"param:{HIERARCHY_TOP}"
                    and r[c] == r[c] and r[c] is not None), key=lambda c: int(c.rsplit("_", 1)[1]))
    return "[" + ",".join(str(int(r[c])) for c in lower + [f"param:{HIERARCHY_TOP}"]) + "]"
