"""Search-space files: a typed schema, loaded from YAML and validated with file-and-line errors.

A space names a base training config, dotted overrides fixed for every trial, the objective(s), the
sampler and scheduler, an optional latent ``hierarchy`` (depth sampled first, then exactly one latent size
per existing level, the top level from its own range) and ordinary ``params`` that may be conditional
(``when: {param: NAME, ge: 2}``) on anything sampled before them.
"""

from __future__ import annotations

import copy
import difflib
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from shapetune.catalog import ENGINE_METRICS, reported_metrics
from shapetune.errors import ShapeTuneError
from shapetune.search_spaces.samplers import check_sampler
from shapetune.search_spaces.schedulers import check_scheduler
from shapetune.config import (ConfigError, FieldProblem, Strict, TrainConfig, by_relevance, explain, line_of,
                              load_config, memory_problem, set_dotted, unreported, yaml_lines)

Lines = dict[tuple[Any, ...], int]  # a YAML document's line per key path (config.yaml_lines)

HIERARCHY_DEPTH = "hierarchy.depth"
HIERARCHY_TOP = "hierarchy.z_top"
CONFIG_DIR = Path(__file__).parents[1] / "configs"


class SpaceError(ShapeTuneError):
    """A bad search-space file, reported with its path and line."""


class Condition(Strict):
    """Sample a parameter only when an earlier one satisfies every given comparison."""

    param: str
    eq: Any = None
    ne: Any = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    in_: list[Any] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _has_test(self) -> "Condition":
        if all(getattr(self, k) is None for k in ("eq", "ne", "ge", "gt", "le", "lt", "in_")):
            raise ValueError("a condition needs one of eq, ne, in, ge, gt, le, lt")
        return self

    def holds(self, value: Any) -> bool:
        tests: tuple[tuple[Any, Callable[[Any, Any], Any]], ...] = (
            (self.eq, operator.eq), (self.ne, operator.ne), (self.in_, _is_in), (self.ge, operator.ge),
            (self.gt, operator.gt), (self.le, operator.le), (self.lt, operator.lt))
        return all(bool(fn(value, ref)) for ref, fn in tests if ref is not None)


def _is_in(value: Any, choices: list[Any]) -> bool:
    return value in choices


class Range(Strict):
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        self._check_order()
        return self

    def _check_order(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError("step must be > 0 and cannot be combined with log")


class Param(Range):
    """One searched field: ``float``/``int`` over [low, high] (optionally log) or ``categorical`` choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # type: ignore[assignment]
    high: float | None = None  # type: ignore[assignment]
    choices: list[Any] | None = None
    when: Condition | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a float or int parameter (parsing guarantees both)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter has no low/high")
        return self.low, self.high

    @property
    def options(self) -> list[Any]:
        """The choices of a categorical parameter (parsing guarantees a non-empty list)."""
        if not self.choices:
            raise ValueError(f"a {self.type} parameter has no choices")
        return self.choices

    @model_validator(mode="after")
    def _ordered(self) -> "Param":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical parameter takes 'choices', not low/high/log")
            if any(isinstance(c, (list, dict)) for c in self.choices):
                raise ValueError("choices must be scalars (numbers, strings, booleans, null)")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'choices'")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer low/high")
        if self.type == "int" and self.step is not None and self.step != int(self.step):
            raise ValueError(f"an int parameter needs an integer step, got {self.step}")
        self._check_order()
        return self


class Depth(Strict):
    low: int = Field(ge=1, le=5)
    high: int = Field(ge=1, le=5)

    @model_validator(mode="after")
    def _ordered(self) -> "Depth":
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self


class IntRange(Range):
    @model_validator(mode="after")
    def _int(self) -> "IntRange":
        if self.low != int(self.low) or self.high != int(self.high) or self.low < 1:
            raise ValueError("latent sizes need integer low/high >= 1")
        if self.step is not None and self.step != int(self.step):
            raise ValueError(f"latent sizes need an integer step, got {self.step}")
        return self


class Hierarchy(Strict):
    """Depth first (fixed or a range), then the top level's size, then one size per lower level."""

    depth: int | Depth = Field(1)
    top: IntRange
    level: IntRange | None = None

    @model_validator(mode="after")
    def _levels(self) -> "Hierarchy":
        if self.max_depth > 1 and self.level is None:
            raise ValueError("depth can exceed 1, so 'level' (the range of the lower levels) is required")
        if isinstance(self.depth, int) and not 1 <= self.depth <= 5:
            raise ValueError(f"depth must be within 1..5, got {self.depth}")
        return self

    @property
    def max_depth(self) -> int:
        return self.depth if isinstance(self.depth, int) else self.depth.high


class Objective(Strict):
    metric: str
    mode: Literal["max", "min"] = "max"


class SamplerSpec(Strict):
    name: str = Field("tpe", description="A sampler of shapetune.search_spaces.samplers.SAMPLERS.")
    n_startup_trials: int = Field(5, ge=0)

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return check_sampler(v)


class SchedulerSpec(Strict):
    name: str = Field("asha", description="A scheduler of search_spaces.schedulers.SCHEDULERS.")
    grace_period: int = Field(3, ge=1, description="Epochs every trial runs before ASHA may stop it.")
    reduction_factor: float = Field(2.0, gt=1)


    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return check_scheduler(v)


class SearchSpace(Strict):
    description: str = ""
    base: str = Field(description="A shipped training config name (lvae, vae, ae) or a YAML path.")
    fixed: dict[str, Any] = Field(default_factory=dict)
    objectives: list[Objective] = Field(min_length=1, max_length=3)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    hierarchy: Hierarchy | None = None
    params: dict[str, Param] = Field(default_factory=dict)

    name: str = ""
    source: str = ""  # the file it came from, for messages

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def base_path(self) -> Path:
        p = Path(self.base)
        if p.suffix in (".yaml", ".yml"):
            return p if p.is_absolute() or not self.source else Path(self.source).parent / p
        return CONFIG_DIR / f"{self.base}.yaml"


def _fail(src: str, line: int | None, msg: str) -> SpaceError:
    return SpaceError(f"{src}:{line}: {msg}" if line else f"{src}: {msg}")


def config_field_exists(dotted: str) -> bool:
    model: Any = TrainConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        ann = fields[part].annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and hasattr(a, "model_fields")]
        model = ann if hasattr(ann, "model_fields") else (args[0] if args else None)
    return True


def config_fields() -> list[str]:
    """Every dotted field of the training config (sections and their fields)."""
    out: list[str] = []

    def walk(model: Any, prefix: str) -> None:
        for name, f in model.model_fields.items():
            out.append(prefix + name)
            ann = f.annotation
            subs = [a for a in (ann, *getattr(ann, "__args__", ()))
                    if isinstance(a, type) and hasattr(a, "model_fields")]
            if subs:
                walk(subs[0], f"{prefix}{name}.")

    walk(TrainConfig, "")
    return out


def unknown_field(dotted: str) -> str:
    """``unknown configuration field 'x'`` with the closest real one, if any."""
    close = difflib.get_close_matches(dotted, config_fields(), n=1, cutoff=0.6)
    return f"unknown configuration field {dotted!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    """Parse and validate a search space; errors read ``FILE:LINE: problem``."""
    try:
        raw = yaml.safe_load(text)
        lines = yaml_lines(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: top level must be a mapping")
    try:
        space = SearchSpace.model_validate({**raw, "source": source, "name": raw.get("name") or Path(source).stem})
    except ValidationError as exc:
        errors = by_relevance(exc.errors())  # a misspelt key before the 'Field required' it causes
        loc, msg = explain(errors[0], SearchSpace)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _fail(source, line_of(lines, loc), f"{'.'.join(map(str, loc))}: {msg}{more}") from exc
    _check_semantics(space, lines, source)
    return space


def check_space(space: SearchSpace) -> None:
    """The checks of ``parse_space`` beyond the schema, again (after ``fixed`` was changed, e.g. by overrides)."""
    _check_semantics(space, {}, space.source or "<space>")


def _check_semantics(space: SearchSpace, lines: Lines, source: str) -> None:
    sampled: list[str] = []
    if space.hierarchy is not None:
        sampled += [HIERARCHY_DEPTH, HIERARCHY_TOP]
        if "model.latent_dims" in space.params or "model.latent_dims" in space.fixed or "model.depth" in space.params:
            raise _fail(source, lines.get(("hierarchy",)),
                        "with a 'hierarchy' section, latent sizes and depth come from it; remove model.latent_dims/"
                        "model.depth from params and fixed")
    for key in space.fixed:
        if not config_field_exists(key):
            raise _fail(source, lines.get(("fixed", key)), f"fixed: {unknown_field(key)}")
    for name, p in space.params.items():
        if not config_field_exists(name):
            raise _fail(source, lines.get(("params", name)), f"params: {unknown_field(name)}")
        if p.when is not None and p.when.param not in sampled:
            raise _fail(source, lines.get(("params", name, "when", "param")) or lines.get(("params", name)),
                        f"params.{name}: condition on {p.when.param!r}, which is not a parameter sampled before it "
                        f"(known: {', '.join(sampled) or 'none'})")
        sampled.append(name)
    if not space.base_path().exists():
        raise _fail(source, lines.get(("base",)), f"base config {space.base!r} not found ({space.base_path()})")
    _check_trial_configs(space, lines, source)


# --- what the trials' training configs can be ----------------------------------------------------------

def _base_data(space: SearchSpace, lines: Lines, source: str) -> dict[str, Any]:
    """The base config as a dict, its latent sizes those of the smallest hierarchy when there is one."""
    try:
        data = load_config(space.base_path()).model_dump(mode="json")
    except ConfigError as exc:
        raise _fail(source, lines.get(("base",)), f"base: {exc}") from exc
    data["model"]["depth"] = None  # derived from latent_dims, as in every trial
    if space.hierarchy is not None:
        data["model"]["latent_dims"] = _latents(space.hierarchy, _depths(space.hierarchy)[0])
    return data


def _depths(h: Hierarchy) -> tuple[int, int]:
    return (h.depth, h.depth) if isinstance(h.depth, int) else (h.depth.low, h.depth.high)


def _latents(h: Hierarchy, depth: int) -> list[int]:
    low = int(h.level.low) if h.level is not None else 1
    return [low] * (depth - 1) + [int(h.top.low)]


def _with(data: dict[str, Any], values: dict[str, Any]) -> tuple[TrainConfig | None, ValidationError | None]:
    """(config, None) for ``data`` with dotted ``values`` set, or (None, the validation error)."""
    d = copy.deepcopy(data)
    for key, value in values.items():
        set_dotted(d, key, value)
    try:
        return TrainConfig.model_validate(d), None
    except ValidationError as exc:
        return None, exc


def _overlaps(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


def _candidates(p: Param) -> list[tuple[str, Any]]:
    """The values of a parameter that bound it: its ends, or every choice."""
    if p.type == "categorical":
        return [("choice", c) for c in p.options]
    low, high = p.bounds
    return [("low", int(low)), ("high", int(high))] if p.type == "int" else [("low", low), ("high", high)]


# Fields whose smallest value needs the least memory (and light_ends on): a space is refused for memory only
# when even its leanest trial would not fit.
_LEAN = ("model.grid", "model.width", "optim.batch_size")


def _leanest(space: SearchSpace) -> dict[str, Any]:
    """Overrides for the least memory any trial of ``space`` needs."""
    out: dict[str, Any] = {}
    for key in _LEAN:
        p = space.params.get(key)
        numbers = [v for _, v in _candidates(p) if isinstance(v, (int, float))] if p is not None else []
        if numbers:
            out[key] = min(numbers)
    p = space.params.get("model.light_ends")
    if p is not None and p.type == "categorical" and True in p.options:
        out["model.light_ends"] = True
    return out


def _check_trial_configs(space: SearchSpace, lines: Lines, source: str) -> None:
    """Refuse, before any trial runs, what every trial would trip over: a fixed value or a parameter's end or
    choice the training config refuses, a space whose leanest trial cannot fit this machine's memory, and an
    objective that a trial does not report."""
    base = _base_data(space, lines, source)
    _check_fixed(space, base, lines, source)
    fixed = copy.deepcopy(base)
    for key, value in space.fixed.items():
        set_dotted(fixed, key, value)
    _check_param_values(space, fixed, lines, source)
    _check_memory(space, fixed, lines, source)
    _check_objectives(space, fixed, lines, source)


def _check_fixed(space: SearchSpace, base: dict[str, Any], lines: Lines, source: str) -> None:
    """The base config with the fixed values must validate, unless a sampled field is involved."""
    _, exc = _with(base, space.fixed)
    if exc is None:
        return
    loc, msg = explain(by_relevance(exc.errors())[0], TrainConfig)
    searched = [tuple(k.split(".")) for k in space.params] + ([("model", "latent_dims")] if space.hierarchy else [])
    if any(_overlaps(loc, s) for s in searched):
        return  # a sampled value may make it valid; trial_config says why when it does not
    key = next((k for k in space.fixed if _overlaps(tuple(k.split(".")), loc)), None)
    line = lines.get(("fixed", key)) if key else lines.get(("fixed",)) or lines.get(("base",))
    raise _fail(source, line, f"fixed: {'.'.join(map(str, loc))}: {msg} (with base {space.base!r})")


def _check_param_values(space: SearchSpace, fixed: dict[str, Any], lines: Lines, source: str) -> None:
    """Each end of a range and each choice must pass its field's own bounds (finite, > 0, a valid grid, ...)."""
    for name, p in space.params.items():
        path = tuple(name.split("."))
        for which, value in _candidates(p):
            _, exc = _with(fixed, {name: value})
            for e in exc.errors() if exc else []:
                loc, msg = explain(e, TrainConfig)
                # not a cross-field check: that one may pass with other sampled values
                if not isinstance((e.get("ctx") or {}).get("error"), FieldProblem) and loc[:len(path)] == path:
                    raise _fail(source, lines.get(("params", name)),
                                f"params.{name}: {which} {value!r} is not a valid {name}: {msg}")


def _check_memory(space: SearchSpace, fixed: dict[str, Any], lines: Lines, source: str) -> None:
    """The leanest trial must fit this machine's memory, and so must every grid, width and batch size searched
    with the others at their leanest."""
    lean = _leanest(space)
    cfg, _ = _with(fixed, lean)
    if cfg is not None and (problem := memory_problem(cfg)):
        key = next((k for k in _LEAN if k in space.fixed), None)
        raise _fail(source, lines.get(("fixed", key)) if key else lines.get(("base",)), problem)
    for name in _LEAN:
        p = space.params.get(name)
        for which, value in _candidates(p) if p is not None else []:
            cfg, _ = _with(fixed, {**lean, name: value})
            if cfg is not None and (problem := memory_problem(cfg)):
                raise _fail(source, lines.get(("params", name)), f"params.{name}: {which} {value!r}: {problem}")


def _variants(space: SearchSpace) -> list[dict[str, Any]]:
    """Overrides that give every kind of trial: each choice of a searched model field, each end of the depth."""
    out: list[dict[str, Any]] = [{}]
    for name, p in space.params.items():
        if name.startswith("model.") and p.type == "categorical":
            out += [{name: c} for c in p.options]
    if space.hierarchy is not None:
        out += [{"model.latent_dims": _latents(space.hierarchy, d)} for d in _depths(space.hierarchy)]
    return out


def _check_objectives(space: SearchSpace, fixed: dict[str, Any], lines: Lines, source: str) -> None:
    """Every objective must be a metric that every kind of trial reports (the task's declared metrics)."""
    have: frozenset[str] | None = None
    anyway = min(ENGINE_METRICS)  # a metric every run reports: trials checkpoint on the objective, not the base's
    for values in _variants(space):
        cfg, _ = _with(fixed, {**values, "checkpoint.metric": anyway})
        if cfg is not None:
            metrics = reported_metrics(cfg.model)
            have = metrics if have is None else have & metrics
    if have is None:
        return  # no trial config validates on its own: the sampled values decide, and trial_config says why
    for k, o in enumerate(space.objectives):
        if o.metric not in have:
            raise _fail(source, lines.get(("objectives", k, "metric")) or lines.get(("objectives", k)),
                        f"objectives.{k}.metric: {unreported(o.metric, have, 'every trial of this space')}")
