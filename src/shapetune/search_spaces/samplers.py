"""Optuna samplers by name: the one registry every sampler name comes from (a space's ``sampler.name``, the sweep
settings, ``shapetune tune --sampler``). optuna is imported only when a sampler is built, so the record readers
that validate a space stay light."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from shapetune.search_spaces.spec import SearchSpace


def _tpe(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    # multivariate + group: TPE models each conditional sub-space (depth 2 vs depth 4) on its own;
    # constant_liar keeps concurrent trials from piling onto the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.sampler.n_startup_trials,
                                      multivariate=True, group=True, constant_liar=True)


def _random(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed)


SAMPLERS: dict[str, Callable[[SearchSpace, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "random": _random, "nsga2": _nsga2}


def check_registered(name: str, registry: Mapping[str, object], kind: str) -> str:
    """``name`` when ``registry`` has it.

    Raises:
        ValueError: an unknown name (the registered ones listed).
    """
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose from {', '.join(registry)}")
    return name


def check_sampler(name: str) -> str:
    """``name`` when it is a registered sampler (:func:`check_registered`)."""
    return check_registered(name, SAMPLERS, "sampler")


def make_sampler(space: SearchSpace, name: str | None, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler, or ``name`` when given."""
    return SAMPLERS[check_sampler(name or space.sampler.name)](space, seed)
