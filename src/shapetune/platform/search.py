"""Optuna behind Ray Tune: samplers by name, an RDB-backed study, and crash-safe trial bookkeeping."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from shapetune.experiment.table import TUNE_TRIAL_ATTR
from shapetune.search_spaces.sampling import define_by_run
from shapetune.search_spaces.spec import SearchSpace

# TPE's `group` option is marked experimental in Optuna 5; it is what handles the conditional hierarchy.
warnings.filterwarnings("ignore", message=r"Argument ``group`` is an experimental",
                        category=optuna.exceptions.ExperimentalWarning)


def _tpe(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    # multivariate + group: TPE models each conditional sub-space (depth 2 vs depth 4) on its own;
    # constant_liar keeps concurrent trials from piling onto the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.sampler.n_startup_trials,
                                      multivariate=True, group=True, constant_liar=True)


SAMPLERS = {
    "tpe": _tpe,
    "random": lambda space, seed: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": lambda space, seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def make_sampler(space: SearchSpace, name: str | None, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler, or ``name`` when given (``tpe``, ``random``, ``nsga2``)."""
    return SAMPLERS[name or space.sampler.name](space, seed)


def sqlite_url(exp_dir: str | Path) -> str:
    """Default study storage: an SQLite file in the experiment directory."""
    return f"sqlite:///{Path(exp_dir).resolve() / 'optuna.db'}"


def publish_sqlite(db: Path, location: str) -> None:
    """Copy an SQLite study to ``location`` (a URI or a path) as a consistent snapshot, even while it is written."""
    import sqlite3
    import tempfile

    from shapetune.platform import storage

    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / db.name
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
        dst = sqlite3.connect(snap)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        storage.upload(snap, location)


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite or any SQLAlchemy URL, e.g. PostgreSQL). Opening a new database creates its
    schema; when another process (a second driver, a watcher) does so at the same moment, one of them hits
    the other's rows (``UNIQUE constraint failed: alembic_version``): that one retries, and then finds the
    schema made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    for attempt in range(attempts - 1):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError):
            time.sleep(0.2 * (attempt + 1))
    return optuna.storages.RDBStorage(url, **kwargs)  # the last attempt raises what it meets


class ShapeTuneOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tags each Optuna trial with its Tune trial id and adopts orphans after a crash.

    Killing the driver can leave Optuna trials that were asked but never reached Tune's saved experiment
    state (RUNNING in the study, unknown to Tune). On resume the next new Tune trial takes such a trial
    over, with the parameters already drawn for it, so the study and Tune keep one trial each, none doubled.
    """

    def suggest(self, trial_id: str):
        if callable(self._space) and trial_id not in self._ot_trials:
            orphan = self._next_orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
        params = super().suggest(trial_id)
        if params is not None and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # A trial the study already finished (told just before the driver died) reports once more on resume.
        if not self._finished_in_study(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._finished_in_study(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def _finished_in_study(self, trial_id: str) -> bool:
        t = self._ot_trials.get(trial_id)
        return t is not None and self._ot_study._storage.get_trial(t._trial_id).state.is_finished()

    def _next_orphan(self):
        mine = {t.number for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in mine:
                return t
        return None


def make_searcher(space: SearchSpace, study_name: str, storage_url: str, sampler: str | None,
                  seed: int) -> ShapeTuneOptunaSearch:
    """Define-by-run Optuna search over ``space`` with its study in ``storage_url``."""
    metrics = [o.metric for o in space.objectives]
    modes = [o.mode for o in space.objectives]
    multi = len(metrics) > 1
    return ShapeTuneOptunaSearch(space=define_by_run(space), metric=metrics if multi else metrics[0],
                                 mode=modes if multi else modes[0], sampler=make_sampler(space, sampler, seed),
                                 study_name=study_name, storage=open_storage(storage_url))
