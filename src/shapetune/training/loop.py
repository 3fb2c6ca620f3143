"""The one epoch loop: local runs, Ray Train workers and in-process Tune trials all train through :func:`run_epochs`;
what differs between them (where checkpoints go, whom an epoch is reported to, a deadline, an injected fault) is a
:class:`LoopCallback`.

Call order, per run::

    on_start(state)                          # once, before the first epoch (resumed runs: state.start > 0)
    for each epoch while state.epoch < the config's epochs (re-read every epoch: a callback may shorten the run):
        on_epoch_start(state)                # may change state.engine.cfg (a deadline) or raise (a fault)
        train one epoch; validate every cfg.val_every epochs and on the last
        on_metrics(state, metrics)           # add to the epoch's metrics before they enter the history
        on_epoch_end(state, metrics)         # checkpoints, reports, the console line
    on_end(state)

Callbacks run in list order at each point; a callback that writes a checkpoint goes before one that reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapetune import storage
from shapetune.experiment.checkpoints import BEST_DIR, LATEST_DIR, save_state
from shapetune.experiment.ranking import score
from shapetune.training.ray_driver import marked
from shapetune.training.engine import Engine
from shapetune.training.faults import inject_fault
from shapetune.training.tasks import task_of


@dataclass
class LoopState:
    """What the loop and its callbacks share: the engine, the data, the history so far and the epoch."""

    engine: Engine
    data: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0  # the first epoch this call trains (a resumed run starts after its checkpoint's epoch)
    epoch: int = 0

    @property
    def epochs(self) -> int:
        return int(self.engine.cfg.optim.epochs)

    @property
    def last(self) -> bool:
        """Whether the current epoch is the run's last."""
        return self.epoch + 1 == self.epochs


class LoopCallback:
    """Behaviour added to :func:`run_epochs`; every hook does nothing unless overridden (call order: module doc)."""

    def on_start(self, state: LoopState) -> None: ...

    def on_epoch_start(self, state: LoopState) -> None: ...

    def on_metrics(self, state: LoopState, metrics: dict[str, Any]) -> None: ...

    def on_epoch_end(self, state: LoopState, metrics: dict[str, Any]) -> None: ...

    def on_end(self, state: LoopState) -> None: ...


def run_epochs(engine: Engine, data: Any, callbacks: Sequence[LoopCallback] = (),
               resume: dict[str, Any] | None = None) -> LoopState:
    """Train ``engine`` on ``data`` from the start, or from ``resume`` (a checkpoint state), to the config's epochs.

    Args:
        engine: the engine (model, optimizer, task) to train; its config's ``optim.epochs`` ends the run.
        data: the task's training data.
        callbacks: see :class:`LoopCallback`.
        resume: a checkpoint's state: its weights and optimizer are loaded and training goes on after its epoch
            with its history.

    Returns:
        The final state: its ``history`` holds every epoch's metrics (the resumed ones first).
    """
    state = LoopState(engine, data)
    if resume is not None:
        engine.load_state(resume)
        state.start, state.history = resume["epoch"] + 1, list(resume["history"])
    state.epoch = state.start
    for cb in callbacks:
        cb.on_start(state)
    while state.epoch < state.epochs:  # not a for loop: a callback can shorten the run
        for cb in callbacks:
            cb.on_epoch_start(state)
        cfg = engine.cfg
        metrics: dict[str, Any] = {"epoch": state.epoch, "epochs_done": state.epoch + 1,
                                   **engine.train_epoch(data, state.epoch)}
        if (state.epoch + 1) % cfg.val_every == 0 or state.last:
            metrics.update(engine.validate(data))
        metrics["resumed_from_epoch"] = state.start - 1 if state.start else -1
        for cb in callbacks:
            cb.on_metrics(state, metrics)
        state.history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
        state.epoch += 1
    for cb in callbacks:
        cb.on_end(state)
    return state


class InjectFaults(LoopCallback):
    """``cfg.fault_injection``: fail at the configured epoch and rank (chaos tests of the recovery paths)."""

    def __init__(self, rank: int, markers: Path):
        self.rank, self.markers = rank, markers

    def on_epoch_start(self, state: LoopState) -> None:
        inject_fault(state.engine.cfg, state.epoch, self.rank, self.markers)


class PrintEpochs(LoopCallback):
    """One console line per epoch (the task's own summary); ``mark`` it when a Ray worker prints it, so the driver
    shows it (:func:`shapetune.training.ray_driver.route_ray_output`)."""

    def __init__(self, mark: bool = False):
        self.mark = mark

    def on_epoch_end(self, state: LoopState, metrics: dict[str, Any]) -> None:
        line = task_of(state.engine.cfg).epoch_line(metrics, state.epochs)
        print(marked(line) if self.mark else line, flush=True)


class StampTimes(LoopCallback):
    """``first_step_time`` and ``report_time`` in every epoch's metrics: the sweep's overhead accounting (the seconds
    between one trial's last report and the next trial's first step)."""

    def on_start(self, state: LoopState) -> None:
        self.first_step = time.time()

    def on_metrics(self, state: LoopState, metrics: dict[str, Any]) -> None:
        metrics.update(first_step_time=self.first_step, report_time=time.time())


PROBE_EPOCHS = 3  # epochs timed before a deadline fixes the run's length (the first one pays the warm-up)


class Deadline(LoopCallback):
    """End the run properly by a wall-clock ``deadline`` (``time.time()``): after :data:`PROBE_EPOCHS` epochs the
    run's length (and so its lr schedule) is cut to what fits, and cut again whenever the measured pace says it
    would overrun."""

    def __init__(self, deadline: float):
        self.deadline, self.after_warmup = deadline, 0.0

    def on_epoch_start(self, state: LoopState) -> None:
        if state.epoch >= PROBE_EPOCHS:
            pace = (time.time() - self.after_warmup) / (state.epoch - 1)  # epoch 0 paid the warm-up
            fit = epochs_for_deadline(state.epochs, state.epoch, pace, self.deadline - time.time())
            if fit < state.epochs:  # the schedule (cosine) follows the new length
                cfg = state.engine.cfg
                state.engine.cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": fit})})
        if state.epoch == 1:
            self.after_warmup = time.time()


def epochs_for_deadline(cfg_epochs: int, done: int, epoch_wall_s: float, seconds_left: float) -> int:
    """How many epochs a run may have in all to end by its deadline; at least one more than ``done``, so
    the run always ends on a proper last epoch (validated and saved)."""
    return max(done + 1, min(cfg_epochs, done + int(seconds_left // max(epoch_wall_s, 1e-6))))


class BestSoFar(LoopCallback):
    """The best epoch so far by the config's checkpoint metric (a resumed run's history included)."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.improved = False  # whether the epoch that just ended is the new best

    def _score(self, state: LoopState, metrics: dict[str, Any]) -> float | None:
        ck = state.engine.cfg.checkpoint
        return score(metrics, ck.metric, ck.mode)

    def on_start(self, state: LoopState) -> None:
        for h in state.history:
            self._update(state, h)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, Any]) -> None:
        self._update(state, metrics)

    def _update(self, state: LoopState, metrics: dict[str, Any]) -> None:
        score = self._score(state, metrics)
        best = self._score(state, self.metrics) if self.metrics else None
        self.improved = score is not None and (best is None or score > best)
        if self.improved:
            self.metrics = metrics


class KeepCheckpoints(LoopCallback):
    """``checkpoint_best`` (by the config's checkpoint metric) and ``checkpoint_latest`` in ``folder``.

    Args:
        folder: where the two checkpoint folders go.
        latest_every_epoch: write the latest every epoch (resumable); False writes it only at the end, so that
            runs on a deadline spend their budget training (several runs on one GPU).
        publish: called after each epoch's writes with the names written (best first), e.g. to upload them.
    """

    def __init__(self, folder: Path, latest_every_epoch: bool = True,
                 publish: Callable[[list[str]], None] | None = None):
        self.folder, self.latest_every_epoch, self.publish = folder, latest_every_epoch, publish
        self.best = BestSoFar()

    def on_start(self, state: LoopState) -> None:
        self.best.on_start(state)

    def on_epoch_end(self, state: LoopState, metrics: dict[str, Any]) -> None:
        self.best.on_epoch_end(state, metrics)
        improved = self.best.improved
        written = []
        if improved or self.latest_every_epoch or state.last:
            checkpoint = state.engine.state(state.epoch, metrics, state.history)
            if improved:  # best first: a copy of latest never names a missing best
                save_state(self.folder / BEST_DIR, checkpoint)
                written.append(BEST_DIR)
            if self.latest_every_epoch or state.last:
                save_state(self.folder / LATEST_DIR, checkpoint)
                written.append(LATEST_DIR)
        if written and self.publish is not None:
            self.publish(written)


def uploader(folder: Path, home: str) -> Callable[[list[str]], None]:
    """A ``KeepCheckpoints.publish`` that copies the written checkpoint folders from ``folder`` to ``home``."""

    def upload(names: list[str]) -> None:
        for name in names:
            storage.upload(folder / name, storage.join(home, name))

    return upload
