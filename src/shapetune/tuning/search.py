"""Optuna behind Ray Tune: samplers by name, an RDB-backed study, and crash-safe trial bookkeeping."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from shapetune.experiment.study_storage import open_storage
from shapetune.experiment.table import TUNE_TRIAL_ATTR
from shapetune.search_spaces.samplers import make_sampler
from shapetune.search_spaces.sampling import define_by_run
from shapetune.search_spaces.spec import SearchSpace

logger = logging.getLogger(__name__)

# TPE's `group` option is marked experimental in Optuna 5; it is what handles the conditional hierarchy.
warnings.filterwarnings("ignore", message=r"Argument ``group`` is an experimental",
                        category=optuna.exceptions.ExperimentalWarning)


class ShapeTuneOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tags each Optuna trial with its Tune trial id, keeps the study at ``max_trials``
    trials, and repairs its bookkeeping after a crash.

    Ray Tune's saved state (its trial list, this searcher, the trial counter) reaches the experiment folder
    only every few minutes (the sync period) and in three files. A driver killed in between resumes with a
    trial list that misses the trials started since, and files that may be one save apart. Optuna's study
    (SQLite or PostgreSQL, written at every ask and tell) is the record that is always current, so:

    1. ``restore_from_dir`` maps each Tune trial in the newest experiment state that this searcher's state
       does not know to the Optuna trial tagged with its id.
    2. ``suggest`` first hands a new Tune trial an orphan (RUNNING in the study, but no Tune trial of this
       driver's), with the parameters already drawn for it.
    3. ``suggest`` answers ``FINISHED`` once the study holds ``max_trials`` trials. A trial that ran to its
       end after the last saved state is COMPLETE in the study (and in its record) but unknown to Tune, whose
       counter would start one trial more for it (seen in CI: 6 trials of 5).
    """

    def __init__(self, *args, max_trials: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_trials = max_trials

    def suggest(self, trial_id: str):
        if callable(self._space) and trial_id not in self._ot_trials:
            orphan = self._next_orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
            elif self._max_trials is not None and len(self._ot_study.get_trials(deepcopy=False)) >= self._max_trials:
                return Searcher.FINISHED
        params = super().suggest(trial_id)
        if params not in (None, Searcher.FINISHED) and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return params

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        super().restore_from_dir(checkpoint_dir)
        if self._ot_study is None:
            return
        tagged = {t.user_attrs.get(TUNE_TRIAL_ATTR): t for t in self._ot_study.get_trials(deepcopy=False)}
        for tid in tune_trial_ids(checkpoint_dir):
            if tid not in self._ot_trials and tid in tagged:
                self._ot_trials[tid] = optuna.trial.Trial(self._ot_study, tagged[tid]._trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # A trial the study already finished (told just before the driver died) reports once more on resume.
        if trial_id not in self._ot_trials:
            logger.warning("result of Tune trial %s, which has no Optuna trial: not reported to the study", trial_id)
        elif not self._finished_in_study(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials:
            logger.warning("end of Tune trial %s, which has no Optuna trial: not told to the study", trial_id)
            return
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


class ShapeTuneLimiter(ConcurrencyLimiter):
    """``ConcurrencyLimiter`` that also passes on the results and the end of a trial it does not know: a
    trial restored from an experiment state saved after this limiter's own state (a driver killed between the
    two saves). Ray's limiter drops such a trial's completion, so its Optuna trial would stay RUNNING."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._limit_concurrency and trial_id not in self.live_trials:
            self.live_trials.add(trial_id)  # running, so it counts against the limit
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._limit_concurrency and trial_id not in self.live_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def tune_trial_ids(experiment_dir: str | Path) -> list[str]:
    """The Tune trial ids in the newest ``experiment_state-*.json`` of a Tune experiment folder (JSON, read
    without unpickling anything); empty when there is none."""
    states = sorted(Path(experiment_dir).glob("experiment_state-*.json"))
    if not states:
        return []
    data = json.loads(states[-1].read_text())
    return [json.loads(trial_json)["trial_id"] for trial_json, _ in data.get("trial_data", [])]


def make_searcher(space: SearchSpace, study_name: str, storage_url: str, sampler: str | None,
                  seed: int, max_trials: int | None = None) -> ShapeTuneOptunaSearch:
    """Define-by-run Optuna search over ``space`` with its study in ``storage_url``, starting at most
    ``max_trials`` trials."""
    metrics = [o.metric for o in space.objectives]
    modes = [o.mode for o in space.objectives]
    multi = len(metrics) > 1
    return ShapeTuneOptunaSearch(space=define_by_run(space), metric=metrics if multi else metrics[0],
                                 mode=modes if multi else modes[0], sampler=make_sampler(space, sampler, seed),
                                 study_name=study_name, storage=open_storage(storage_url), max_trials=max_trials)
