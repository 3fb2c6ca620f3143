"""Ray Tune trial schedulers by name: the one registry every scheduler name comes from (a space's
``scheduler.name``, the sweep settings, ``shapetune tune --scheduler``). Ray is imported only when a scheduler is
built, so what validates a space stays light."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shapetune.search_spaces.samplers import check_registered

if TYPE_CHECKING:
    from shapetune.search_spaces.spec import SearchSpace


@dataclass(frozen=True)
class Budget:
    """What a scheduler is told of the sweep: the objective and the trial length in epochs."""

    metric: str
    mode: str
    max_epochs: int
    grace_period: int


def _asha(space: SearchSpace, b: Budget) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    # epochs_done (the loop's epoch + 1), not Tune's training_iteration: a resumed trial counts the epochs it
    # trained before, so its rung is where its epochs put it.
    return ASHAScheduler(time_attr="epochs_done", metric=b.metric, mode=b.mode, max_t=b.max_epochs,
                         grace_period=b.grace_period, reduction_factor=space.scheduler.reduction_factor)


def _none(space: SearchSpace, b: Budget) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()  # type: ignore[no-untyped-call]


SCHEDULERS: dict[str, Callable[[SearchSpace, Budget], Any]] = {"asha": _asha, "none": _none}


def check_scheduler(name: str) -> str:
    """``name`` when it is a registered scheduler (``samplers.check_registered``)."""
    return check_registered(name, SCHEDULERS, "scheduler")


def make_scheduler(space: SearchSpace, name: str | None, budget: Budget) -> Any:
    """The space's scheduler, or ``name`` when given."""
    return SCHEDULERS[check_scheduler(name or space.scheduler.name)](space, budget)
