"""``shapetune tune --evaluate``: score each finished trial's best checkpoint on the test split as soon as the trial
ends (a Ray task beside the sweep), into the evaluation cache that ``shapetune evaluate`` then only reads.

The tuning layer knows nothing of evaluation: the CLI builds these callbacks and hands them to ``run_sweep``.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback
from rich.console import Console

from shapetune.catalog import task_spec
from shapetune.config import ConfigError
from shapetune.evaluation.service import score_and_cache
from shapetune.evaluation.splits import load_split
from shapetune.experiment.checkpoints import best_checkpoint
from shapetune.experiment.settings import SweepSettings, frozen_space, trial_location
from shapetune.search_spaces.sampling import base_config

console = Console()


class EvaluateOnComplete(Callback):
    """A Ray Tune callback: on each trial's completion, score its best checkpoint (by the sweep's first objective)
    on its task's held-out split in a Ray task; on the experiment's end, wait for the scores and print them."""

    def __init__(self, exp_dir: str, data: str, workers: int, objective: str, mode: str, split: str):
        self.exp_dir, self.data, self.workers, self.objective, self.mode = exp_dir, data, workers, objective, mode
        self.split = split  # the task's held-out split (TaskSpec.test_split)
        self.refs: list = []
        self._split_ref = None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        import ray

        ck = best_checkpoint(Path(trial_location(self.exp_dir, trial.trial_id, self.workers)), self.objective,
                             self.mode)
        if ck is None:
            return
        if self._split_ref is None:
            self._split_ref = ray.put(load_split(self.data, "test", self.split))
        task = ray.remote(num_cpus=1, max_retries=0)(score_and_cache)
        cache = str(Path(self.exp_dir) / "evaluation" / "cache")
        self.refs.append(task.remote(str(ck), trial.trial_id, self._split_ref, cache))

    def on_experiment_end(self, trials, **info) -> None:
        import ray

        for ref in self.refs:
            try:
                console.print(f"evaluated on the test split: {ray.get(ref)}")
            except Exception as exc:  # an evaluation failure must not fail the sweep
                console.print(f"[red]evaluation of a trial failed:[/] {exc}")


def on_complete_callbacks(settings: SweepSettings) -> list[Callback]:
    """What ``settings.evaluate`` asks of a sweep, as callbacks for :func:`shapetune.tuning.sweep.run_sweep`.

    Returns:
        An empty list without ``evaluate``, else one :class:`EvaluateOnComplete`.

    Raises:
        ConfigError: ``evaluate`` with a URI storage path (trials are scored from local checkpoints) or for a
            task without a held-out split (the fetal skulls: cross-validation by view subset, after the sweep).
    """
    if not settings.evaluate:
        return []
    if settings.remote:
        raise ConfigError("--evaluate scores trials from local checkpoints; with a URI --storage-path run "
                          "`shapetune evaluate NAME --storage-path URI` after the sweep")
    space = frozen_space(settings)
    task = task_spec(base_config(space).model.name)
    if task.test_split is None:
        raise ConfigError(f"--evaluate scores a held-out test split, which a {task.name} sweep has none of; run "
                          f"`shapetune evaluate {settings.name}` after it")
    obj = space.objectives[0]
    return [EvaluateOnComplete(str(settings.exp_dir), settings.data, settings.workers_per_trial, obj.metric,
                               obj.mode, task.test_split)]
