"""From a search space to Optuna's define-by-run function and from sampled values to a training config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shapetune.config import ConfigError, TrainConfig, load_config, memory_problem, set_dotted
from shapetune.search_spaces.spec import HIERARCHY_DEPTH, HIERARCHY_TOP, Param, SearchSpace

if TYPE_CHECKING:
    import optuna


def level_name(k: int) -> str:
    """Optuna name of the latent size of level ``k`` below the top (0 = bottom)."""
    return f"hierarchy.z_{k}"


def _suggest(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(name, p.options)
    low, high = p.bounds
    if p.type == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, low, high, step=p.step, log=p.log)


class DefineByRun:
    """Optuna's define-by-run function for a space: depth first, then one size per existing level, then params.

    Parameters that a condition switches off are never suggested, so TPE sees the true conditional space.
    A class rather than a closure, so the searcher that holds it can be pickled into Tune's experiment state.
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        values: dict[str, Any] = {}
        h = self.space.hierarchy
        if h is not None:
            depth = (h.depth if isinstance(h.depth, int)
                     else trial.suggest_int(HIERARCHY_DEPTH, h.depth.low, h.depth.high))
            values[HIERARCHY_DEPTH] = depth
            values[HIERARCHY_TOP] = _suggest(trial, HIERARCHY_TOP, Param(type="int", **h.top.model_dump()))
            for k in range(depth - 1):
                assert h.level is not None  # required whenever the depth can exceed 1 (Hierarchy checks it)
                _suggest(trial, level_name(k), Param(type="int", **h.level.model_dump()))
        for name, p in self.space.params.items():
            if p.when is not None and (p.when.param not in values or not p.when.holds(values[p.when.param])):
                continue
            values[name] = _suggest(trial, name, p)


def define_by_run(space: SearchSpace) -> DefineByRun:
    """The define-by-run function of ``space`` for Optuna / ``OptunaSearch``."""
    return DefineByRun(space)


def params_to_overrides(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Sampled values (flat Optuna names) -> dotted training-config overrides."""
    out = dict(space.fixed)
    if space.hierarchy is not None:
        h = space.hierarchy
        depth = int(params.get(HIERARCHY_DEPTH, h.depth if isinstance(h.depth, int) else 0))
        sizes = [int(params[level_name(k)]) for k in range(depth - 1)] + [int(params[HIERARCHY_TOP])]
        out["model.latent_dims"] = sizes
    for name in space.params:
        if name in params:
            out[name] = params[name]
    return out


def base_config(space: SearchSpace) -> TrainConfig:
    """What every trial shares: the base file with the space's fixed overrides, nothing sampled."""
    return trial_config(space.model_copy(update={"params": {}, "hierarchy": None}), {})


def trial_config(space: SearchSpace, params: dict[str, Any]) -> TrainConfig:
    """The full training config of one trial: base file, fixed overrides, then the sampled values."""
    base = load_config(space.base_path())
    data = base.model_dump(mode="json")
    for key, value in params_to_overrides(space, params).items():
        set_dotted(data, key, value)
    data["model"]["depth"] = None  # derived from latent_dims
    try:
        cfg = TrainConfig.model_validate(data)
    except Exception as exc:
        raise ConfigError(f"{space.source}: parameters {params} give an invalid training config: {exc}") from exc
    problem = memory_problem(cfg)  # here on the machine that trains it
    if problem:
        raise ConfigError(f"{space.source}: parameters {params}: {problem}")
    return cfg
