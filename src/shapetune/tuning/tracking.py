"""``--tracking`` for sweeps: a Ray Tune callback that mirrors each trial into a nested MLflow run under the sweep's
parent run (``experiment.tracking``), from the driver.

Why not Ray's ``MLflowLoggerCallback``: it starts a fresh run whenever a trial starts, so a resumed sweep (or a
trial restarted on another node) would log its trials twice, and it has no parent run (ray-project/ray #19978).
Here a trial's run is looked up by its ``shapetune.trial_id`` tag under the parent before one is made, and only the
parameters the trial actually sampled (its conditional ones included, as Optuna gave them) are logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console

from shapetune.experiment.checkpoints import best_checkpoint, read_metrics
from shapetune.experiment.settings import trial_run_dir
from shapetune.experiment.tracking import Tracker, numeric

console = Console()
SKIP = {"trial_id", "node_id", "pid", "timestamp", "date", "hostname", "node_ip", "done", "time_this_iter_s",
        "first_step_time", "report_time"}  # bookkeeping Tune or the loop adds to every result


class TrackTrials(Callback):
    """One nested run per trial: its sampled parameters, every epoch's metrics (step = epochs done), and on its end
    the metrics of its best checkpoint (``best.<metric>``) and its status.

    Args:
        tracker, parent: the tracker and the sweep's parent run (``experiment.tracking.sweep_parent``).
        exp_dir: the local experiment folder (for the trials' checkpoints).
        workers: workers per trial (where a trial keeps its checkpoints).
        objective, mode: the sweep's first objective (to find each trial's best checkpoint).
    """

    def __init__(self, tracker: Tracker, parent: str, exp_dir: Path, workers: int, objective: str,
                 mode: str) -> None:
        self.tracker, self.parent, self.exp_dir, self.workers = tracker, parent, exp_dir, workers
        self.objective, self.mode = objective, mode
        self.runs: dict[str, str] = {}

    def _run(self, trial: Any) -> str | None:
        tid = trial.trial_id
        if tid not in self.runs:
            try:
                run = self.tracker.trial_run(self.parent, tid) or self.tracker.start_run(tid, "trial", self.parent,
                                                                                           tid)
                self.tracker.log_params(run, trial.config)
                self.runs[tid] = run
            except Exception as exc:  # a tracking server that is down must not stop the sweep
                console.print(f"[yellow]tracking: trial {tid} not logged:[/] {exc}")
                return None
        return self.runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self._run(trial)
        if run is None:
            return
        step = int(result.get("epochs_done", result.get("training_iteration", 0)))
        try:
            self.tracker.log_metrics(run, {k: v for k, v in result.items() if k not in SKIP}, step)
        except Exception as exc:
            console.print(f"[yellow]tracking: epoch {step} of trial {trial.trial_id} not logged:[/] {exc}")

    def _end(self, trial: Any, status: str) -> None:
        run = self._run(trial)
        if run is None:
            return
        try:
            ck = best_checkpoint(trial_run_dir(self.exp_dir, trial.trial_id, self.workers), self.objective, self.mode)
            if ck is not None:
                best = numeric(read_metrics(ck))
                self.tracker.log_metrics(run, {f"best.{k}": v for k, v in best.items()}, int(best.get("epoch", 0)))
            self.tracker.finish(run, status)
        except Exception as exc:  # a tracking server that is down must not fail the sweep
            console.print(f"[yellow]tracking: the end of trial {trial.trial_id} not logged:[/] {exc}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")


def track_sweep_end(tracker: Tracker, parent: str, exp_dir: Path, table: Any, objective: str,
                    mode: str) -> None:
    """On the parent run: the trial table, the settings and the frozen space as artifacts, the best value of the
    objective and the trial counts as metrics; then the run is marked finished (a resumed sweep reopens it)."""
    try:
        for name in ("trials.parquet", "sweep.json", "space.yaml"):
            tracker.log_artifact(parent, exp_dir / name, "sweep")
        col = f"best_{objective}"
        metrics = {"trials": len(table), "trials_completed": int((table.status == "completed").sum())}
        if col in table and table[col].notna().any():
            metrics[col] = float(table[col].max() if mode == "max" else table[col].min())
        tracker.log_metrics(parent, metrics, len(table))
        tracker.finish(parent)
    except Exception as exc:
        console.print(f"[yellow]tracking: the sweep's end not logged:[/] {exc}")
