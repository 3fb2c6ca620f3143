"""Experiment tracking: one parent run per sweep, one nested run per trial, and the evaluation's tables and report
on the parent, in MLflow or Weights & Biases.

- ``--tracking mlflow=URI`` names an MLflow store (``sqlite:///PATH/mlflow.db``, an ``http(s)://`` server, ...);
  trial runs are nested under the parent (``mlflow.parentRunId``) and found again by their ``shapetune.trial_id``
  tag rather than created twice.
- ``--tracking wandb=PROJECT`` logs to a W&B project: the sweep's runs share a group (the sweep's name), the
  parent is the run of job type ``sweep``; run ids are derived from the sweep and trial names, so a resumed sweep
  logs into the same runs. Offline unless ``WANDB_MODE`` says otherwise (nothing leaves the machine; ``wandb
  sync`` uploads later); the run files go to ``EXP/wandb`` (``RUN/wandb`` for ``train``).

The parent run's id is kept in ``EXP/tracking.json`` so a resumed sweep and a later ``shapetune evaluate`` log to
the same run. The packages are imported only when a tracker is built (the ``tracking`` extra).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shapetune.errors import ShapeTuneError
from shapetune.io import atomic_write_json

TRACKING_FILE = "tracking.json"
BACKENDS = ("mlflow", "wandb")  # the tracking backends ``--tracking NAME=TARGET`` accepts
TRIAL_TAG, KIND_TAG, PARENT_TAG = "shapetune.trial_id", "shapetune.kind", "mlflow.parentRunId"


class TrackingError(ShapeTuneError):
    """A malformed ``--tracking`` value, a missing tracking package, or a store that cannot be reached."""


def check_tracking(spec: str) -> str:
    """``spec`` when it reads ``BACKEND=TARGET`` with a known backend.

    Raises:
        ValueError: another form or an unknown backend (the known ones listed).
    """
    backend, sep, target = spec.partition("=")
    if not sep or not target or backend not in BACKENDS:
        raise ValueError(f"tracking must look like BACKEND=TARGET with BACKEND one of {', '.join(BACKENDS)} "
                         f"(e.g. mlflow=sqlite:///mlflow.db), got {spec!r}")
    return spec


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (MLflow stores numbers only; NaN would hide the curve)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MlflowTracker:
    """Runs in one MLflow experiment (named after the sweep or the training run).

    Args:
        uri: the tracking URI. A ``sqlite:///`` store keeps its artifacts in ``mlartifacts/`` beside the database.
        experiment: the MLflow experiment name.

    Raises:
        TrackingError: mlflow is not installed, or the store cannot be opened.
    """

    def __init__(self, uri: str, experiment: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackingError("--tracking mlflow=... needs mlflow: pip install 'shapetune[tracking]'") from exc
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                location = None
                if uri.startswith("sqlite:///"):
                    location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        except Exception as exc:  # mlflow raises its own and SQLAlchemy's errors
            raise TrackingError(f"tracking store {uri}: {exc}") from exc

    def start_run(self, name: str, kind: str, parent: str | None = None, trial_id: str | None = None) -> str:
        """A new run's id (nested under ``parent`` when given)."""
        tags = {KIND_TAG: kind, **({PARENT_TAG: parent} if parent else {}),
                **({TRIAL_TAG: trial_id} if trial_id else {})}
        return str(self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id)

    def trial_run(self, parent: str, trial_id: str) -> str | None:
        """The run already made for ``trial_id`` under ``parent`` (a resumed sweep), or None."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                                                                             f"tags.`{PARENT_TAG}` = '{parent}'")
        return str(found[0].info.run_id) if found else None

    def reopen(self, run: str) -> None:
        """Mark a finished run running again (a resumed sweep's parent)."""
        self.client.update_run(run, status="RUNNING")

    def log_params(self, run: str, params: Mapping[str, Any]) -> None:
        """Log ``params`` (nested dicts flattened to dotted keys); a parameter already logged is left as it is."""
        from mlflow.entities import Param

        have = self.client.get_run(run).data.params
        new = [Param(k, str(v)[:6000]) for k, v in _flat(params).items() if k not in have]
        for i in range(0, len(new), 100):  # MLflow's batch limit
            self.client.log_batch(run, params=new[i:i + 100])

    def log_metrics(self, run: str, metrics: Mapping[str, Any], step: int) -> None:
        """Log the finite numbers of ``metrics`` at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in numeric(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run, metrics=batch[i:i + 1000])

    def log_artifact(self, run: str, path: str | Path, folder: str | None = None) -> None:
        """Copy the file or folder ``path`` into the run's artifacts (under ``folder``)."""
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(run, str(p), folder)
        elif p.exists():
            self.client.log_artifact(run, str(p), folder)

    def finish(self, run: str, status: str = "FINISHED") -> None:
        """Mark the run ended (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self.client.set_terminated(run, status)


class WandbTracker:
    """Runs in one W&B project, grouped by ``experiment``, written under ``folder`` (offline by default).

    Args:
        project: the W&B project.
        experiment: the group of the runs (the sweep's name, or ``shapetune-train``).
        folder: where W&B writes its run files (``folder/wandb``).

    Raises:
        TrackingError: wandb is not installed.
    """

    def __init__(self, project: str, experiment: str, folder: str | Path) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise TrackingError("--tracking wandb=... needs wandb: pip install wandb") from exc
        self.wandb, self.project, self.group = wandb, project, experiment
        self.folder = Path(folder)
        self.runs: dict[str, Any] = {}
        self.kinds: dict[str, tuple[str, str]] = {}  # run id -> (name, kind), to open a run again

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment and restores them on --resume; a live W&B run cannot be
        # pickled (wandb refuses to attach in the same process), so only what reopens the runs is kept.
        return {"project": self.project, "group": self.group, "folder": self.folder, "kinds": self.kinds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import wandb

        self.__dict__.update(state, wandb=wandb, runs={})

    def start_run(self, name: str, kind: str, parent: str | None = None, trial_id: str | None = None) -> str:
        """A run's id, ``GROUP-TRIAL`` (or ``GROUP-NAME``): the same trial, sweep or run folder always maps to the
        same W&B run, which ``resume="allow"`` continues."""
        run_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{self.group}-{trial_id or name}")
        mode = os.environ.get("WANDB_MODE", "offline")
        if mode not in ("online", "offline", "disabled", "shared"):
            raise TrackingError(f"WANDB_MODE={mode!r}: expected online, offline, disabled or shared")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kinds[run_id] = (name, kind)
        self.runs[run_id] = self.wandb.init(
            project=self.project, group=self.group, name=name, id=run_id, job_type=kind, dir=str(self.folder),
            mode=mode, reinit="create_new", resume="allow",  # type: ignore[arg-type]
            config={"shapetune.parent_run": parent} if parent else None)
        return run_id

    def trial_run(self, parent: str, trial_id: str) -> str | None:
        """None: ``start_run`` derives the trial's run id, so W&B resumes the same run."""
        return None

    def reopen(self, run: str) -> None:
        """Open the run again under its id (``resume="allow"``)."""
        self._run(run)

    def _run(self, run: str) -> Any:
        if run not in self.runs:  # a run of an earlier process or pickle (a resumed sweep, evaluate)
            name, kind = self.kinds.get(run, (run.removeprefix(f"{self.group}-"), "sweep"))
            self.start_run(name, kind, trial_id=name if kind == "trial" else None)
        return self.runs[run]

    def log_params(self, run: str, params: Mapping[str, Any]) -> None:
        """Add ``params`` (flattened to dotted keys) to the run's config."""
        self._run(run).config.update(_flat(params), allow_val_change=True)

    def log_metrics(self, run: str, metrics: Mapping[str, Any], step: int) -> None:
        """Log the finite numbers of ``metrics`` at ``step``."""
        self._run(run).log(numeric(metrics), step=step)

    def log_artifact(self, run: str, path: str | Path, folder: str | None = None) -> None:
        """Save the file ``path`` (or the files of the folder) with the run."""
        p = Path(path)
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []):
            self._run(run).save(str(f), base_path=str(p.parent if p.is_file() else p.parent), policy="now")

    def finish(self, run: str, status: str = "FINISHED") -> None:
        """Finish the run (exit code 1 unless ``FINISHED``)."""
        if run in self.runs:
            self.runs.pop(run).finish(exit_code=0 if status == "FINISHED" else 1)


Tracker = MlflowTracker | WandbTracker


def make_tracker(spec: str, experiment: str, folder: str | Path = ".") -> Tracker:
    """The tracker ``spec`` names (``mlflow=URI`` or ``wandb=PROJECT``), logging runs of ``experiment`` (W&B run
    files under ``folder``)."""
    backend, _, target = check_tracking(spec).partition("=")
    if backend == "wandb":
        return WandbTracker(target, experiment, folder)
    return MlflowTracker(target, experiment)


def read_tracking(exp_dir: str | Path) -> dict[str, str] | None:
    """``EXP/tracking.json`` (the tracking spec, MLflow experiment and parent run), or None when not tracked."""
    f = Path(exp_dir) / TRACKING_FILE
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except ValueError as exc:
        raise TrackingError(f"{f}: not valid JSON ({exc})") from exc
    if not isinstance(rec, dict) or not {"spec", "experiment", "parent_run"} <= set(rec):
        raise TrackingError(f"{f}: expected spec, experiment and parent_run")
    return {k: str(rec[k]) for k in ("spec", "experiment", "parent_run")}


def sweep_parent(exp_dir: str | Path, spec: str, name: str, settings: Mapping[str, Any]) -> tuple[Tracker, str]:
    """The tracker and parent run of a sweep: the run recorded in ``EXP/tracking.json`` (a resumed sweep) or a new
    one, recorded there, holding the sweep's settings as parameters."""
    rec = read_tracking(exp_dir)
    if rec is not None and rec["spec"] == spec:  # a resumed sweep: its parent run, open again
        tracker = make_tracker(spec, rec["experiment"], exp_dir)
        tracker.reopen(rec["parent_run"])
        return tracker, rec["parent_run"]
    tracker = make_tracker(spec, name, exp_dir)
    parent = tracker.start_run(name, "sweep")
    tracker.log_params(parent, {f"sweep.{k}": v for k, v in settings.items() if v is not None})
    atomic_write_json(Path(exp_dir) / TRACKING_FILE, {"spec": spec, "experiment": name, "parent_run": parent})
    return tracker, parent


def track_training_run(spec: str, run_dir: Path, config: Mapping[str, Any], history: list[Mapping[str, Any]],
                       best: Mapping[str, Any]) -> str:
    """Log a finished ``shapetune train`` run as one MLflow run (experiment ``shapetune-train``): the config as
    parameters, every epoch's metrics (step = epoch + 1), the best checkpoint's metrics as ``best.<metric>`` and
    the run folder's summary, history and learning curves as artifacts. Logged when the run ends (a Ray Train run
    reports from its workers; the driver logs what they wrote), so a run that dies is not in the store.

    Returns:
        The MLflow run id.
    """
    tracker = make_tracker(spec, "shapetune-train", run_dir)
    run = tracker.start_run(Path(run_dir).name, "train")
    tracker.log_params(run, {**config, "run_dir": str(Path(run_dir).resolve())})
    for h in history:
        tracker.log_metrics(run, h, int(h.get("epoch", 0)) + 1)
    tracker.log_metrics(run, {f"best.{k}": v for k, v in best.items()}, int(best.get("epoch", 0)) + 1)
    for name in ("summary.json", "history.csv", "learning_curves.png"):
        tracker.log_artifact(run, Path(run_dir) / name)
    tracker.finish(run)
    return run


def track_evaluation(exp_dir: Path, out_dir: Path) -> str | None:
    """Log an evaluation (``EXP/evaluation``) to the sweep's parent run when the sweep was tracked: its tables,
    report and figures as artifacts under ``evaluation/``. Returns the parent run id, or None for an untracked
    sweep."""
    rec = read_tracking(exp_dir)
    if rec is None:
        return None
    tracker = make_tracker(rec["spec"], rec["experiment"], exp_dir)
    for name in ("summary.parquet", "per_subject.parquet", "latents.parquet", "report.md", "errors.json",
                 "manifest.json"):
        tracker.log_artifact(rec["parent_run"], out_dir / name, "evaluation")
    if (out_dir / "figures").is_dir():
        tracker.log_artifact(rec["parent_run"], out_dir / "figures", "evaluation/figures")
    if isinstance(tracker, WandbTracker):  # its run was opened again for this; close it
        tracker.finish(rec["parent_run"])
    return rec["parent_run"]
