"""Read-only access to experiment folders for the dashboard: trials, the Optuna study, evaluation tables.

Nothing here writes into an experiment. Each loader takes the experiment folder and a ``stamp`` (the
modification times of the files it reads) so that the dashboard's cache is keyed on the files' state: a
refresh re-reads exactly what changed, and an unchanged 1000-trial experiment is served from the cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shapetune import storage
from shapetune.dashboard.studies import is_study
from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.errors import ShapeTuneError
from shapetune.evaluation import names
from shapetune.evaluation.candidates import EvaluationError, checkpoint_dir
from shapetune.experiment.checkpoints import LATEST_DIR, load_state
from shapetune.experiment.records import read_record, record_path, records_mtime
from shapetune.experiment.settings import SETTINGS_FILE, SUMMARY_FILE, SweepSettings, frozen_space, trial_run_dir
from shapetune.experiment.table import open_study_readonly, read_trial_table

EVAL_DIR = "evaluation"


def split_labels(per_subject: pd.DataFrame) -> dict[str, str]:
    """Display names of the splits in ``per_subject`` (:func:`shapetune.evaluation.names.split_labels`: the
    report's rule)."""
    return names.split_labels(names.phases_of(per_subject))


class DashboardError(ShapeTuneError):
    """A path that is not an experiment (nor a folder of experiments)."""


@dataclass(frozen=True)
class Experiment:
    """One sweep's folder and its settings."""

    path: Path
    settings: SweepSettings

    @property
    def name(self) -> str:
        return self.path.name  # a mirror of a URI keeps the experiment's folder name


def discover(paths: list[str | Path]) -> list[Experiment]:
    """Experiments named by ``paths``: sweep folders (with ``sweep.json``) or folders holding several."""
    found: list[Experiment] = []
    for raw in paths:
        p = local_root(raw)
        if storage.is_uri(raw) and not p.exists():
            try:
                storage.local_copy(raw)
            except (OSError, ValueError) as exc:
                raise DashboardError(f"{raw}: cannot read this storage location ({exc})") from exc
        if (p / SETTINGS_FILE).exists():
            found.append(open_experiment(p))
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / SETTINGS_FILE).exists())
            if not subs and not is_study(p):  # a fetal-skull study (or a folder of them) has its own page
                raise DashboardError(f"{p}: not an experiment (no {SETTINGS_FILE}), nor a study, and holds neither")
            found.extend(open_experiment(d) for d in subs)
        else:
            raise DashboardError(f"{p}: no such folder")
    names = [e.name for e in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DashboardError(f"several experiments are named {sorted(dupes)}; open them in separate dashboards")
    return found


def local_root(location: str | Path) -> Path:
    """Where the dashboard reads ``location``: the folder itself, or the local mirror of a storage URI."""
    if storage.is_uri(location):
        return storage.mirror_path(str(location))
    return Path(location).expanduser().resolve()


def sync(locations: list[str]) -> None:
    """Bring the local mirrors of the storage URIs among ``locations`` up to date (Refresh)."""
    for loc in locations:
        if storage.is_uri(loc):
            storage.local_copy(loc)


def open_experiment(path: Path) -> Experiment:
    try:
        settings = SweepSettings.model_validate_json((path / SETTINGS_FILE).read_text())
    except Exception as exc:  # pydantic's message names the field; the path names the file
        raise DashboardError(f"{path / SETTINGS_FILE}: unreadable sweep settings ({exc})") from exc
    return Experiment(path, settings)


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def stamp(exp: Path) -> tuple:
    """What the loaders' results depend on: mtimes of the summary, the trial records, the study, the evaluation."""
    ev = exp / EVAL_DIR
    return (_mtime(exp / SUMMARY_FILE), records_mtime(exp), _mtime(exp / "optuna.db"), _mtime(exp / "optuna.db-wal"),
            _mtime(ev / "summary.parquet"), _mtime(ev / "manifest.json"))


def load_trials(exp: Experiment) -> pd.DataFrame:
    """Every trial (parameters, status, metrics). ``trials.parquet`` once the sweep has written it after its
    last change; while a sweep runs, ShapeTune's per-trial records and the study (without writing anything)."""
    df = read_trial_table(exp.path)
    return pd.DataFrame() if df is None else df.assign(experiment=exp.name)


def failed_trials(exp: Experiment, trials: pd.DataFrame) -> dict[str, str]:
    """Failed trial id -> the last line of its error (its record's, else Tune's ``error.txt`` in its folder)."""
    out = {}
    failed = trials.loc[trials.status == "failed"] if len(trials) else trials
    for _, row in failed.iterrows():
        tid, recorded = row.trial_id, row.get("error")
        if isinstance(recorded, str) and recorded:
            out[tid] = recorded
            continue
        err = next(iter(exp.path.glob(f"*_{tid}_*/error.txt")), None)
        lines = err.read_text(errors="replace").strip().splitlines() if err else []
        out[tid] = lines[-1] if lines else "no error file recorded"
    return out


def load_study(exp: Experiment):
    """The sweep's Optuna study (read-only), or None when it does not exist yet."""
    return open_study_readonly(exp.settings, exp.path)


def objectives(exp: Experiment) -> list[tuple[str, str]]:
    """(metric, mode) of each objective of the sweep's frozen space."""
    return [(o.metric, o.mode) for o in frozen_space(exp.settings).objectives]


@dataclass
class Evaluation:
    """What ``shapetune evaluate`` stored for one experiment."""

    per_subject: pd.DataFrame
    summary: pd.DataFrame
    latents: pd.DataFrame
    manifest: dict
    errors: list


def load_evaluation(exp: Experiment) -> Evaluation | None:
    """The stored evaluation tables, or None when the experiment has not been evaluated."""
    ev = exp.path / EVAL_DIR
    if not (ev / "summary.parquet").exists():
        return None
    manifest = json.loads((ev / "manifest.json").read_text()) if (ev / "manifest.json").exists() else {}
    errors = json.loads((ev / "errors.json").read_text()) if (ev / "errors.json").exists() else []
    return Evaluation(pd.read_parquet(ev / "per_subject.parquet"), pd.read_parquet(ev / "summary.parquet"),
                      pd.read_parquet(ev / "latents.parquet"), manifest, errors)


def candidate_info(exp: Experiment, ev: Evaluation) -> pd.DataFrame:
    """One row per evaluated model: name, checkpoint (None for baselines), trial id, kind."""
    rows = {c["name"]: c for c in ev.manifest.get("candidates", [])}
    pat = re.compile(rf"^{re.escape(exp.name)}:(?:best\()?([A-Za-z0-9_]+)\)?$")
    out = []
    for name in dict.fromkeys(ev.summary.model):
        c = rows.get(name, {})
        tid = c.get("trial_id") or (m.group(1) if (m := pat.match(name)) else None)
        ck = c.get("checkpoint")
        if ck is None and tid and not c.get("baseline"):  # evaluations written before manifest.json existed
            try:
                ck = str(checkpoint_dir(trial_run_dir(exp.path, tid, exp.settings.workers_per_trial)))
            except EvaluationError:
                ck = None
        kind = "baseline" if c.get("baseline") or (not ck and not tid) else ("trial" if tid else "checkpoint")
        out.append({"model": name, "checkpoint": ck, "trial_id": tid, "kind": kind})
    return pd.DataFrame(out)


def test_metrics(exp: Experiment, ev: Evaluation | None) -> pd.DataFrame:
    """Per trial id: test-split Dice per phase (ED/ES) and accuracy per evaluated split (wide, for the Runs
    table)."""
    if ev is None:
        return pd.DataFrame(columns=["trial_id"])
    info = candidate_info(exp, ev).dropna(subset=["trial_id"])
    s = ev.summary.merge(info[["model", "trial_id"]], on="model")
    keep = s[((s.metric == "dice") & (s.phase != "")) | (s.metric == "accuracy")].copy()
    short = {"imperial_test": "test", "acdc_test": "acdc", "acdc_hard": "hard"}
    keep["col"] = keep.split.map(short).fillna(keep.split) + "_" + keep.metric.str.replace("accuracy", "acc") \
        + keep.phase.str.lower().radd("_").where(keep.phase != "", "")
    return keep.pivot_table(index="trial_id", columns="col", values="mean", aggfunc="first").reset_index()


def learning_curve(exp: Experiment, trial_id: str | None, checkpoint: str | None) -> pd.DataFrame:
    """Per-epoch metrics of a trial (its record; Tune's ``progress.csv`` for sweeps older than records) or of a
    checkpoint's own history."""
    if trial_id:
        rec = read_record(record_path(exp.path, trial_id))
        if rec and rec.get("history"):
            df = pd.DataFrame(rec["history"])
            if "epochs_done" in df:
                return df.assign(epoch=df.epochs_done)
        f = next(iter(exp.path.glob(f"*_{trial_id}_*/progress.csv")), None)
        if f is not None and f.stat().st_size:
            df = pd.read_csv(f)
            if "epochs_done" in df:
                return df.assign(epoch=df.epochs_done)
    if checkpoint:
        ck = Path(checkpoint)
        latest = ck.parent / LATEST_DIR
        hist = load_state(latest if latest.exists() else ck).get("history") or []
        if hist:
            df = pd.DataFrame(hist)
            return df.assign(epoch=df.epoch + 1)
    return pd.DataFrame()


def class_names(exp: Experiment) -> dict[int, str]:
    """Label -> class name of the experiment's dataset (healthy/HCM, or a table cohort's groups)."""
    try:
        return PreparedDataset(storage.local_copy(exp.settings.data, refresh=False)).class_names
    except (DataError, OSError, storage.StorageError):
        return {0: "healthy", 1: "HCM"}


def split_data(exp: Experiment, ev: Evaluation, split: str) -> str:
    """The prepared dataset that holds a split's subjects (from the evaluation's manifest)."""
    src = ev.manifest.get("splits", {}).get(split)
    if src:
        return src["data"]
    if split == "imperial_test":
        return str(storage.local_copy(exp.settings.data, refresh=False))
    cached = sorted((exp.path / EVAL_DIR / "cache").glob("acdc_*/dataset.json"))
    if cached:
        return str(cached[0].parent)
    raise DashboardError(f"{exp.path / EVAL_DIR}: cannot find the data of split {split!r}; re-run shapetune evaluate")
