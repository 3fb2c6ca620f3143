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
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from ray.tune import Callback

from shapetune.experiment.records import (RECORDS_DIR, TrialRecorder, epoch_metrics, read_record, read_records,
                                          record_path)
from shapetune.experiment.settings import (SETTINGS_FILE, SPACE_FILE, SUMMARY_FILE, SweepSettings,  # noqa: F401
                                           data_dir, frozen_space, load_settings, local_experiment, max_epochs,
                                           read_settings, trial_location)
from shapetune.experiment.table import latent_sizes, trial_table
from shapetune.io import atomic_write_bytes, atomic_write_text
from shapetune import storage
from shapetune.config import ConfigError
from shapetune.search_spaces.sampling import base_config
from shapetune.search_spaces.schedulers import Budget, make_scheduler
from shapetune.search_spaces.spec import SearchSpace
from shapetune.terminal import fitted_table
from shapetune.training.ray_driver import RAY_LOG, route_logger, route_ray_output
from shapetune.tuning.tracking import TrackTrials, track_sweep_end
from shapetune.experiment.tracking import sweep_parent

console = Console()


class ProgressCallback(Callback):
    """Live progress in the terminal: one line per epoch report, one per finished trial."""

    def __init__(self, total: int, objective: str, mode: str):
        self.total, self.objective, self.sign = total, objective, 1 if mode == "max" else -1
        self.best: float | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        v = result.get(self.objective)
        if v is not None and (self.best is None or self.sign * v > self.sign * self.best):
            self.best = v
        console.print(f"  trial {trial.trial_id} epoch {result.get('epochs_done', result.get('training_iteration'))} "
                      f"{self.objective} {_fmt(v)} acc {_fmt(result.get('val_acc'))} (best so far {_fmt(self.best)})")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._done(trials, trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._done(trials, trial, "[red]failed[/]")

    def _done(self, trials, trial, what: str) -> None:
        n = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        console.print(f"[bold]trial {trial.trial_id} {what}[/] ({min(n, self.total)}/{self.total})")


class RecordTrials(Callback):
    """Keeps ShapeTune's own record of every trial (``records/TRIAL_ID.json``: parameters, status, every epoch's
    metrics, error), so reading an experiment never needs Tune's pickled state. With a URI storage path a record
    is uploaded when its trial starts and ends (the final copies come with ``write_summary``)."""

    def __init__(self, exp_dir: Path, location: str | None = None):
        self.recorder, self.location = TrialRecorder(exp_dir), location

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._publish(self.recorder.start(trial.trial_id, trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.recorder.result(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._publish(self.recorder.end(trial.trial_id, "terminated"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._publish(self.recorder.end(trial.trial_id, "error", _error_line(trial)))

    def _publish(self, path: Path) -> None:
        if self.location is None:
            return
        try:
            storage.upload(path, storage.join(self.location, path.parent.name, path.name))
        except OSError as exc:  # the bucket being briefly unreachable must not stop the sweep
            console.print(f"[yellow]could not publish {path.name} to {self.location}:[/] {exc}")


def _error_line(trial) -> str | None:
    """The last line of a failed trial's error (Tune's ``error.txt``, plain text)."""
    path = getattr(trial, "error_file", None)
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines() if path else []
    except OSError:
        return None
    return lines[-1] if lines else None


def reconcile_records(exp: Path, results) -> int:
    """Bring the records in line with the ``ResultGrid`` this driver holds at the end of ``fit``: a trial
    without a record (a sweep started before records existed, then resumed) gets one, and a trial whose
    record was left running (the driver died between its last report and its end, and Tune restored it as
    finished) gets its final status and any epochs it missed, and a record Tune does not know is marked
    abandoned. Returns how many records changed."""
    recorder, n, known = TrialRecorder(exp), 0, set()
    for r in results:
        tid = (r.metrics or {}).get("trial_id")
        if not tid:
            continue
        known.add(tid)
        rec = read_record(record_path(exp, tid))
        status = "error" if r.error else "terminated"
        if rec is not None and rec["status"] == status:
            continue
        if rec is None:
            recorder.start(tid, r.config or {})
        done = {h.get("epochs_done") for h in (rec or {}).get("history", [])}
        df = r.metrics_dataframe
        for row in (df.to_dict("records") if df is not None else [r.metrics]):
            if row.get("epochs_done") not in done:
                recorder.result(tid, epoch_metrics(row))
        recorder.end(tid, status, str(r.error).strip().splitlines()[-1] if r.error else None)
        n += 1
    # A trial started just before the driver was killed, but after Tune last saved its state, is unknown to the
    # resumed Tune: its Optuna trial is taken over by a new trial. Its record stays, marked abandoned.
    for rec in read_records(exp)[0]:
        if rec["trial_id"] not in known and rec["status"] in ("pending", "running"):
            recorder.end(rec["trial_id"], "abandoned", "the driver stopped before Ray Tune saved this trial; "
                                                       "a resumed sweep continued its Optuna trial as a new trial")
            n += 1
    return n


def _load_data(settings: SweepSettings, space: SearchSpace):
    """The prepared train/val data at the space's grid (checked before anything is started)."""
    from shapetune.training.tasks import load_task_data

    for key in ("model.grid", "model.name", "data.fold"):
        if key in space.params:
            raise ConfigError(f"{space.source}: {key} cannot be searched (one dataset, one task, one fold per sweep)")
    return load_task_data(data_dir(settings), base_config(space))


def _trainable(settings: SweepSettings, space: SearchSpace, data):
    from ray import tune

    from shapetune.tuning.trial import TrialSettings, sweep_trial

    ts = TrialSettings(space=space, workers=settings.workers_per_trial, cpus_per_worker=settings.cpus_per_worker,
                       gpus_per_worker=settings.gpus_per_worker, exp_dir=settings.exp_location)
    fn = tune.with_parameters(sweep_trial, data=data, settings=ts)  # data goes through the object store
    if settings.workers_per_trial > 1:
        resources = {"CPU": 0.01}  # the Train workers reserve their own CPUs/GPUs
    else:
        resources = {"CPU": settings.cpus_per_worker,
                     **({"GPU": settings.gpus_per_worker} if settings.gpus_per_worker else {})}
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
        from shapetune.experiment.study_storage import publish_sqlite

        try:
            publish_sqlite(self.db, self.location)
        except OSError as exc:  # the bucket being briefly unreachable must not stop the sweep
            console.print(f"[yellow]could not publish the study to {self.location}:[/] {exc}")


def run_sweep(settings: SweepSettings, resume: bool = False, callbacks: Sequence[Callback] = (),
              verbose: bool = False) -> pd.DataFrame:
    """Run (or resume) a sweep to ``settings.trials`` trials; write and return the trial summary.

    Args:
        settings: the sweep (validated; a resume passes the settings read back from ``sweep.json``).
        resume: continue the experiment ``settings.name`` from its saved Tune state and Optuna study.
        callbacks: extra Ray Tune callbacks (``--evaluate``'s come from
            :func:`shapetune.evaluation.on_complete.on_complete_callbacks`).
        verbose: let Ray print its workers' lines on the console (by default they go to ``ray.log`` in the
            experiment folder).

    Returns:
        The trial table (``trials.parquet``), one row per trial.

    Raises:
        ConfigError: the experiment exists (without ``resume``), a searched key that cannot be searched, or
            ``settings.evaluate`` without its callbacks.
        DataError: the prepared data is missing or does not fit the space's model.
    """
    from ray import tune

    from shapetune.training.ray_train import default_cpus
    from shapetune.experiment.study_storage import sqlite_url
    from shapetune.tuning.search import ShapeTuneLimiter, make_searcher

    exp, home = settings.exp_dir, settings.exp_location
    if not resume and storage.exists(storage.join(home, SETTINGS_FILE)):
        raise ConfigError(f"{home}: experiment {settings.name!r} already exists; continue it with --resume "
                          f"{settings.name} or choose another --name")
    if settings.evaluate and not callbacks:
        raise ConfigError("the settings ask for --evaluate: pass its callbacks "
                          "(shapetune.evaluation.on_complete.on_complete_callbacks(settings))")
    if settings.remote and resume:
        storage.local_copy(home)  # the driver's files (the SQLite study) as the bucket has them
    space = frozen_space(settings)
    data = _load_data(settings, space)
    ray_log = route_ray_output(None if verbose else exp / RAY_LOG)
    route_logger("optuna", ray_log)  # "A new study created in RDB ..." and the like: the log, not the console
    if not verbose:
        # Tune's output engine prints its "Configuration for experiment" box and result paths even at verbose=0
        # (Ray 2.60); its legacy engine at verbose=0 prints nothing, and ProgressCallback shows the sweep.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if settings.cpus_per_worker is None:  # fixed now and kept in the settings, so a resume gets the same
        cpus = default_cpus(settings.concurrency * settings.workers_per_trial)
        settings = settings.model_copy(update={"cpus_per_worker": cpus})
        console.print(f"each trial worker gets {cpus:g} CPUs (the cluster's CPUs / concurrency; set "
                      f"--cpus-per-worker to choose)")
    exp.mkdir(parents=True, exist_ok=True)
    if not (exp / SPACE_FILE).exists():
        (exp / SPACE_FILE).write_text(Path(space.source).read_text())
    if not resume:
        atomic_write_text(exp / SETTINGS_FILE, settings.model_dump_json(indent=2))
    if settings.remote:
        for f in (SPACE_FILE, SETTINGS_FILE):
            storage.upload(exp / f, storage.join(home, f))
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save Tune's state often: a kill loses little
    objective = space.objectives[0]
    storage_url = settings.optuna_storage or sqlite_url(exp)
    trainable = _trainable(settings, space, data)
    progress = ProgressCallback(settings.trials, objective.metric, objective.mode)
    recorder = RecordTrials(exp, home if settings.remote else None)
    callbacks = [progress, recorder, *callbacks]
    tracked = None
    if settings.tracking:  # the parent run first: a store that cannot be reached stops the sweep before it starts
        tracked = sweep_parent(exp, settings.tracking, settings.name, settings.model_dump(mode="json"))
        callbacks.append(TrackTrials(*tracked, exp, settings.workers_per_trial, objective.metric, objective.mode))
    if settings.remote and not settings.optuna_storage:
        callbacks.append(PublishStudy(exp / "optuna.db", storage.join(home, "optuna.db")))
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(home):
        console.print(f"[bold]resuming[/] {home}")
        tuner = tune.Tuner.restore(home, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        scheduler = make_scheduler(space, settings.scheduler, Budget(objective.metric, objective.mode,
                                                                     max_epochs(space), grace_period(settings, space)))
        searcher = ShapeTuneLimiter(make_searcher(space, settings.name, storage_url, settings.sampler, settings.seed,
                                                  settings.trials),
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
    reconcile_records(exp, tuner.fit())
    where = f"; Ray's log: {ray_log}" if ray_log else ""
    console.print(f"sweep finished in {time.perf_counter() - t0:.0f} s{where}", soft_wrap=True)
    table = write_summary(exp)
    if tracked is not None:
        track_sweep_end(*tracked, exp, table, objective.metric, objective.mode)
    return table


def grace_period(settings: SweepSettings, space: SearchSpace) -> int:
    """ASHA's grace period: the one asked for (or the space's), at most the epochs a trial trains (Ray refuses
    a grace period above ``max_t``); a clamp is said on the console."""
    asked = settings.grace_period or space.scheduler.grace_period
    most = max_epochs(space)
    if asked > most:
        console.print(f"[yellow]ASHA grace period {asked} is more than the {most} epoch(s) a trial trains: "
                      f"using {most}[/]")
    return min(asked, most)


def write_summary(exp_dir: str | Path, show: bool = True) -> pd.DataFrame:
    """Write ``trials.parquet`` (and, for a URI storage path, publish it and the study) and print the table."""
    from shapetune.experiment.study_storage import publish_sqlite

    exp = Path(exp_dir).resolve()
    df = trial_table(exp)
    atomic_write_bytes(exp / SUMMARY_FILE, df.to_parquet(index=False))
    settings = read_settings(exp)
    if settings.remote:
        storage.upload(exp / SUMMARY_FILE, storage.join(settings.exp_location, SUMMARY_FILE))
        if (exp / RECORDS_DIR).is_dir():
            storage.upload(exp / RECORDS_DIR, storage.join(settings.exp_location, RECORDS_DIR))
        if not settings.optuna_storage and (exp / "optuna.db").exists():
            publish_sqlite(exp / "optuna.db", storage.join(settings.exp_location, "optuna.db"))
    if show:
        print_table(df)
        console.print(f"summary: {storage.join(settings.exp_location, SUMMARY_FILE)}")
    return df


def print_table(df: pd.DataFrame) -> None:
    """The trials, best first, in the columns that fit the terminal: trial, best value, status, epochs, latent
    sizes, accuracy, then the other parameters by their last name and the Optuna trial (all in trials.parquet)."""
    params = [c for c in df.columns if c.startswith("param:") and not c.startswith("param:hierarchy.")]
    best_col = next((c for c in df.columns if c.startswith("best_")), None) or "val_dice"
    headers = ["trial", "status", "ep", "latents", *[p.rsplit(".", 1)[-1] for p in params], best_col, "val_acc",
               "optuna"]
    order = df.sort_values(best_col, ascending=False, na_position="last") if best_col in df else df
    rows = [[str(r.trial_id), str(r.status), str(r.epochs), latent_sizes(r), *(_fmt(r[p]) for p in params),
             _fmt(r[best_col]), _fmt(r.val_acc), f"#{_fmt(r.optuna_number)} {r.optuna_state}"] for _, r in
            order.iterrows()]
    n = len(headers)
    priority = [0, n - 3, 1, 2, 3, n - 2, *range(4, n - 3), n - 1]
    table, left_out = fitted_table("sweep trials (best first)", headers, rows, console.width, priority,
                                   right=[2, n - 3, n - 2])
    console.print(table)
    if left_out:
        console.print(f"not shown for the terminal's width: {', '.join(left_out)}")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.2e}" if abs(v) < 1e-2 else f"{v:.3f}"
    return str(v)
