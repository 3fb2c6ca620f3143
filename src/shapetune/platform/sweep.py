"""The sweep driver: Ray Tune + Optuna over a search space, resumable, with a Parquet summary.

An experiment directory ``STORAGE/NAME`` holds Tune's own state and trial checkpoints, ``sweep.json``
(the settings, so ``--resume NAME`` needs nothing else), ``space.yaml`` (a frozen copy of the space),
``optuna.db`` (the study, unless another SQLAlchemy URL was given) and ``trials.parquet`` (the summary).

``STORAGE`` is a local folder or a URI (``s3://``, ``gs://``, ``file://``). With a URI, Tune writes its state
there itself, every trial uploads its checkpoints from the node it runs on, and the driver keeps its
files in a local mirror of the experiment and publishes them (the SQLite study as a consistent snapshot
after every finished trial), so the bucket alone holds the whole experiment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.table import Table
from ray.tune import Callback

from shapetune.platform import storage
from shapetune.platform.config import ConfigError, parse_overrides
from shapetune.platform.trial import trial_location
from shapetune.search_spaces import load_space, parse_space
from shapetune.search_spaces.sampling import base_config
from shapetune.search_spaces.spec import SearchSpace, config_field_exists

SETTINGS_FILE = "sweep.json"
SPACE_FILE = "space.yaml"
SUMMARY_FILE = "trials.parquet"
console = Console()


class SweepSettings(BaseModel):
    """Everything a sweep needs; persisted in the experiment directory for ``--resume``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    space: str
    data: str
    trials: int = Field(8, ge=1)
    concurrency: int = Field(1, ge=1)
    storage_path: str
    optuna_storage: str | None = None  # SQLAlchemy URL; default SQLite in the experiment directory
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    scheduler: str | None = Field(None, pattern="^(asha|none)$")
    sampler: str | None = Field(None, pattern="^(tpe|random|nsga2)$")
    grace_period: int | None = Field(None, ge=1, description="ASHA grace period (default: the space's).")
    seed: int = 0
    overrides: list[str] = Field(default_factory=list)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial before it is recorded as failed.")
    time_budget_s: float | None = None
    evaluate: bool = Field(False, description="Score each finished trial on the test split as soon as it ends.")

    @field_validator("storage_path", "data")
    @classmethod
    def _location(cls, v: str) -> str:
        if storage.is_uri(v) and not v.split("://", 1)[1].strip("/"):
            raise ValueError(f"{v!r}: a URI needs a bucket and a path")
        return v

    @property
    def remote(self) -> bool:
        """Results go to a storage URI rather than a local (or NFS) folder."""
        return storage.is_uri(self.storage_path)

    @property
    def exp_location(self) -> str:
        """The experiment's home: ``STORAGE/NAME`` as a URI or an absolute path."""
        if self.remote:
            return storage.join(self.storage_path, self.name)
        return str(Path(self.storage_path).resolve() / self.name)

    @property
    def exp_dir(self) -> Path:
        """The experiment folder on this machine: itself, or the local mirror of a URI."""
        return storage.mirror_path(self.exp_location) if self.remote else Path(self.exp_location)


def local_experiment(location: str | Path) -> Path:
    """An experiment folder on this machine: the folder itself, or a fresh mirror of an experiment at a URI."""
    if storage.is_uri(location):
        if not storage.exists(storage.join(location, SETTINGS_FILE)):
            raise ConfigError(f"{location}: no such experiment (no {SETTINGS_FILE})")
        return storage.local_copy(location)
    return Path(location).resolve()


def data_dir(settings: SweepSettings) -> Path:
    """The sweep's prepared dataset on this machine (a URI is mirrored into the cache first)."""
    return storage.local_copy(settings.data)


def frozen_space(settings: SweepSettings) -> SearchSpace:
    """The sweep's space (the copy in the experiment directory once started) with CLI overrides in ``fixed``."""
    copy = settings.exp_dir / SPACE_FILE
    space = parse_space(copy.read_text(), str(copy)) if copy.exists() else load_space(settings.space)
    fixed = {**space.fixed, **parse_overrides(settings.overrides)}
    for key in fixed:
        if not config_field_exists(key):
            raise ConfigError(f"override {key!r}: unknown configuration field")
    return space.model_copy(update={"fixed": fixed})


def _max_epochs(space: SearchSpace) -> int:
    p = space.params.get("optim.epochs")
    if p is not None:
        return int(max(p.choices) if p.choices else p.high)
    return base_config(space).optim.epochs


class ProgressCallback(Callback):
    """Live progress in the terminal: one line per epoch report, one per finished trial."""

    def __init__(self, total: int, objective: str, mode: str):
        self.total, self.objective, self.sign = total, objective, 1 if mode == "max" else -1
        self.best: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        v = result.get(self.objective)
        if v is not None and (self.best is None or self.sign * v > self.sign * self.best):
            self.best = v
        console.print(f"  trial {trial.trial_id} epoch {result.get('epochs_done', result.get('training_iteration'))} {self.objective} "
                      f"{_fmt(v)} acc {_fmt(result.get('val_acc'))} (best so far {_fmt(self.best)})")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._done(trials, trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._done(trials, trial, "[red]failed[/]")

    def _done(self, trials, trial, what: str) -> None:
        n = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        console.print(f"[bold]trial {trial.trial_id} {what}[/] ({min(n, self.total)}/{self.total})")


class EvaluateOnComplete(Callback):
    """``--evaluate``: score each finished trial's best checkpoint on the test split right away (a Ray task),
    into the evaluation cache that ``shapetune evaluate`` reads."""

    def __init__(self, exp_dir: str, data: str, workers: int, objective: str, mode: str):
        self.exp_dir, self.data, self.workers, self.objective, self.mode = exp_dir, data, workers, objective, mode
        self.refs: list = []
        self._split_ref = None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        import ray

        from shapetune.evaluation.service import score_and_cache
        from shapetune.evaluation.splits import load_split
        from shapetune.platform.export import best_checkpoint

        ck = best_checkpoint(Path(trial_location(self.exp_dir, trial.trial_id, self.workers)), self.objective, self.mode)
        if ck is None:
            return
        if self._split_ref is None:
            self._split_ref = ray.put(load_split(self.data, "test", "imperial_test"))
        task = ray.remote(num_cpus=1, max_retries=0)(score_and_cache)
        self.refs.append(task.remote(str(ck), trial.trial_id, self._split_ref, str(Path(self.exp_dir) / "evaluation" / "cache")))

    def on_experiment_end(self, trials, **info) -> None:
        import ray

        for ref in self.refs:
            try:
                console.print(f"evaluated on the test split: {ray.get(ref)}")
            except Exception as exc:  # an evaluation failure must not fail the sweep
                console.print(f"[red]evaluation of a trial failed:[/] {exc}")


def _load_data(settings: SweepSettings, space: SearchSpace):
    """The prepared train/val data at the space's grid (checked before anything is started)."""
    from shapetune.platform.tasks import load_task_data

    for key in ("model.grid", "model.name", "data.fold"):
        if key in space.params:
            raise ConfigError(f"{space.source}: {key} cannot be searched (one dataset, one task, one fold per sweep)")
    return load_task_data(data_dir(settings), base_config(space))


def _trainable(settings: SweepSettings, space: SearchSpace, data):
    from ray import tune

    from shapetune.platform.trial import TrialSettings, sweep_trial

    ts = TrialSettings(space=space, workers=settings.workers_per_trial, cpus_per_worker=settings.cpus_per_worker,
                       gpus_per_worker=settings.gpus_per_worker, exp_dir=settings.exp_location)
    fn = tune.with_parameters(sweep_trial, data=data, settings=ts)  # data goes through the object store
    if settings.workers_per_trial > 1:
        resources = {"CPU": 0.01}  # the Train workers reserve their own CPUs/GPUs
    else:
        resources = {"CPU": settings.cpus_per_worker, **({"GPU": settings.gpus_per_worker} if settings.gpus_per_worker else {})}
    return tune.with_resources(fn, resources)


class PublishStudy(Callback):
    """With a URI storage path: copy the driver's SQLite study to the bucket after every finished trial (the
    final copy comes with ``write_summary``)."""

    def __init__(self, db: Path, location: str):
        self.db, self.location = db, location

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._publish()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._publish()

    def _publish(self) -> None:
        from shapetune.platform.search import publish_sqlite

        try:
            publish_sqlite(self.db, self.location)
        except OSError as exc:  # the bucket being briefly unreachable must not stop the sweep
            console.print(f"[yellow]could not publish the study to {self.location}:[/] {exc}")


def run_sweep(settings: SweepSettings, resume: bool = False) -> pd.DataFrame:
    """Run (or resume) a sweep to ``settings.trials`` trials; returns and writes the trial summary."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from shapetune.platform.ray_train import ensure_ray
    from shapetune.platform.search import make_searcher, sqlite_url
    from shapetune.platform.tasks import task_of

    exp, home = settings.exp_dir, settings.exp_location
    if not resume and storage.exists(storage.join(home, SETTINGS_FILE)):
        raise ConfigError(f"{home}: experiment {settings.name!r} already exists; continue it with --resume "
                          f"{settings.name} or choose another --name")
    if settings.remote and settings.evaluate:
        raise ConfigError("--evaluate scores trials from local checkpoints; with a URI --storage-path run "
                          "`shapetune evaluate NAME --storage-path URI` after the sweep")
    if settings.remote and resume:
        storage.local_copy(home)  # the driver's files (the SQLite study) as the bucket has them
    space = frozen_space(settings)
    data = _load_data(settings, space)
    if settings.evaluate and task_of(base_config(space)).name == "fetal":
        raise ConfigError("--evaluate scores the cardiac test split; for a fetal-skull sweep run `shapetune evaluate "
                          f"{settings.name}` after it (cross-validation by view subset)")
    exp.mkdir(parents=True, exist_ok=True)
    if not (exp / SPACE_FILE).exists():
        (exp / SPACE_FILE).write_text(Path(space.source).read_text())
    if not resume:
        _atomic_write(exp / SETTINGS_FILE, settings.model_dump_json(indent=2))
    if settings.remote:
        for f in (SPACE_FILE, SETTINGS_FILE):
            storage.upload(exp / f, storage.join(home, f))
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save Tune's state often: a kill loses little
    ensure_ray()
    objective = space.objectives[0]
    storage_url = settings.optuna_storage or sqlite_url(exp)
    trainable = _trainable(settings, space, data)
    progress = ProgressCallback(settings.trials, objective.metric, objective.mode)
    callbacks = [progress] + ([EvaluateOnComplete(str(exp), settings.data, settings.workers_per_trial, objective.metric,
                                                  objective.mode)] if settings.evaluate else [])
    if settings.remote and not settings.optuna_storage:
        callbacks.append(PublishStudy(exp / "optuna.db", storage.join(home, "optuna.db")))
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(home):
        console.print(f"[bold]resuming[/] {home}")
        tuner = tune.Tuner.restore(home, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        scheduler_name = settings.scheduler or space.scheduler.name
        if scheduler_name == "asha":
            scheduler = ASHAScheduler(time_attr="epochs_done", metric=objective.metric, mode=objective.mode,
                                      max_t=_max_epochs(space),
                                      grace_period=settings.grace_period or space.scheduler.grace_period,
                                      reduction_factor=space.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        searcher = ConcurrencyLimiter(make_searcher(space, settings.name, storage_url, settings.sampler, settings.seed),
                                      max_concurrent=settings.concurrency)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings.trials,
                                        reuse_actors=settings.workers_per_trial == 1,
                                        time_budget_s=settings.time_budget_s),
            run_config=tune.RunConfig(
                name=settings.name, storage_path=storage.parent_of(home), verbose=0, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=settings.max_failures)),
        )
    tuner.fit()
    console.print(f"sweep finished in {time.perf_counter() - t0:.0f} s")
    return write_summary(exp)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_settings(storage_path: str | Path, name: str) -> SweepSettings:
    """Settings of an existing experiment (a local folder or a URI)."""
    f = storage.join(storage.normalise(storage_path), name, SETTINGS_FILE)
    if not storage.exists(f):
        raise ConfigError(f"{f}: no sweep named {name!r} under {storage_path}")
    return SweepSettings.model_validate_json(storage.read_text(f))


def trial_table(exp_dir: str | Path) -> pd.DataFrame:
    """Every trial with its parameters, status and metrics, joining Tune's records and the Optuna study."""
    import optuna
    from ray.tune import ExperimentAnalysis

    from shapetune.platform.search import TUNE_TRIAL_ATTR, open_storage, sqlite_url

    exp = Path(exp_dir).resolve()
    settings = SweepSettings.model_validate_json((exp / SETTINGS_FILE).read_text())
    space = frozen_space(settings)
    metrics = [o.metric for o in space.objectives]
    # Tune's records live where Tune wrote them (the bucket, for a URI storage path); the study on this machine
    home = settings.exp_location if settings.remote else str(exp)
    analysis = ExperimentAnalysis(home)
    study = optuna.load_study(study_name=settings.name, storage=open_storage(settings.optuna_storage or sqlite_url(exp)))
    by_tune = {t.user_attrs.get(TUNE_TRIAL_ATTR): t for t in study.get_trials(deepcopy=False)}
    max_epochs = _max_epochs(space)
    rows = []
    for t in analysis.trials:
        last = t.last_result or {}
        df = analysis.trial_dataframes.get(t.trial_id)
        ot = by_tune.get(t.trial_id)
        epochs = int(last.get("epochs_done") or last.get("training_iteration") or 0)
        status = {"TERMINATED": "completed" if epochs >= max_epochs else "stopped early",
                  "ERROR": "failed"}.get(t.status, t.status.lower())
        row = {"trial_id": t.trial_id, "status": status, "epochs": epochs,
               "optuna_number": ot.number if ot else None, "optuna_state": ot.state.name if ot else None,
               "path": trial_location(home, t.trial_id, settings.workers_per_trial)}
        row.update({f"param:{k}": v for k, v in (t.config or {}).items()})
        for m in ("val_dice", "val_dice_ed", "val_dice_es", "val_acc", "val_auc", "val_dice_3v", "val_dice_2v",
                  "val_dice_1v", "train_loss"):
            row[m] = last.get(m)
        for m, o in zip(metrics, space.objectives):
            if df is not None and m in df:
                row[f"best_{m}"] = float(df[m].max() if o.mode == "max" else df[m].min())
        row["wall_s"] = last.get("time_total_s")
        row["node_id"] = last.get("node_id")  # the Ray node that ran the trial's last epoch
        row["resumed_from_epoch"] = last.get("resumed_from_epoch")
        rows.append(row)
    return pd.DataFrame(rows)


def load_summary(exp_dir: Path) -> pd.DataFrame:
    """``trials.parquet`` of an experiment, written first if the sweep never got that far."""
    f = exp_dir / SUMMARY_FILE
    return pd.read_parquet(f) if f.exists() else write_summary(exp_dir, show=False)


def write_summary(exp_dir: str | Path, show: bool = True) -> pd.DataFrame:
    """Write ``trials.parquet`` (and, for a URI storage path, publish it and the study) and print the table."""
    from shapetune.platform.search import publish_sqlite

    exp = Path(exp_dir).resolve()
    df = trial_table(exp)
    df.to_parquet(exp / SUMMARY_FILE, index=False)
    settings = SweepSettings.model_validate_json((exp / SETTINGS_FILE).read_text())
    if settings.remote:
        storage.upload(exp / SUMMARY_FILE, storage.join(settings.exp_location, SUMMARY_FILE))
        if not settings.optuna_storage and (exp / "optuna.db").exists():
            publish_sqlite(exp / "optuna.db", storage.join(settings.exp_location, "optuna.db"))
    if show:
        print_table(df)
        console.print(f"summary: {storage.join(settings.exp_location, SUMMARY_FILE)}")
    return df


def print_table(df: pd.DataFrame) -> None:
    """The trials, best first: latent sizes in one column, other parameters by their last name."""
    t = Table(title="sweep trials (best first)")
    params = [c for c in df.columns if c.startswith("param:") and not c.startswith("param:hierarchy.")]
    best_col = next((c for c in df.columns if c.startswith("best_")), None)
    cols = ["trial", "status", "ep", "latents", *[p.rsplit(".", 1)[-1] for p in params],
            best_col or "val_dice", "val_acc", "optuna"]
    for c in cols:
        t.add_column(c, overflow="fold")
    order = df.sort_values(best_col, ascending=False, na_position="last") if best_col else df
    for _, r in order.iterrows():
        cells = [str(r.trial_id), str(r.status), str(r.epochs), latent_sizes(r)]
        cells += [_fmt(r[p]) for p in params]
        cells += [_fmt(r[best_col or "val_dice"]), _fmt(r.val_acc), f"#{_fmt(r.optuna_number)} {r.optuna_state}"]
        t.add_row(*cells)
    console.print(t)


def latent_sizes(r: pd.Series) -> str:
    from shapetune.search_spaces.spec import HIERARCHY_TOP

    top = r.get(f"param:{HIERARCHY_TOP}")
    if top is None or top != top:
        return "-"
    lower = sorted((c for c in r.index if c.startswith("param:hierarchy.z_") and c != f"param:{HIERARCHY_TOP}"
                    and r[c] == r[c] and r[c] is not None), key=lambda c: int(c.rsplit("_", 1)[1]))
    return "[" + ",".join(str(int(r[c])) for c in lower + [f"param:{HIERARCHY_TOP}"]) + "]"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.2e}" if abs(v) < 1e-2 else f"{v:.3f}"
    return str(v)
