"""Search-space files: a typed schema, loaded from YAML and validated with file-and-line errors.

A space names a base training config, dotted overrides fixed for every trial, the objective(s), the
sampler and scheduler, an optional latent ``hierarchy`` (depth sampled first, then exactly one latent size
per existing level, the top level from its own range) and ordinary ``params`` that may be conditional
(``when: {param: NAME, ge: 2}``) on anything sampled before them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

HIERARCHY_DEPTH = "hierarchy.depth"
HIERARCHY_TOP = "hierarchy.z_top"
CONFIG_DIR = Path(__file__).parents[1] / "configs"


class SpaceError(ValueError):
    """A bad search-space file, reported with its path and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Condition(_Strict):
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
        tests = [(self.eq, lambda r: value == r), (self.ne, lambda r: value != r), (self.in_, lambda r: value in r),
                 (self.ge, lambda r: value >= r), (self.gt, lambda r: value > r), (self.le, lambda r: value <= r),
                 (self.lt, lambda r: value < r)]
        return all(fn(ref) for ref, fn in tests if ref is not None)


class Range(_Strict):
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError("step must be > 0 and cannot be combined with log")
        return self


class Param(Range):
    """One searched field: ``float``/``int`` over [low, high] (optionally log) or ``categorical`` choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # type: ignore[assignment]
    high: float | None = None  # type: ignore[assignment]
    choices: list[Any] | None = None
    when: Condition | None = None

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
        Range._ordered(self)
        return self


class Depth(_Strict):
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
        return self


class Hierarchy(_Strict):
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


class Objective(_Strict):
    metric: str
    mode: Literal["max", "min"] = "max"


class SamplerSpec(_Strict):
    name: Literal["tpe", "random", "nsga2"] = "tpe"
    n_startup_trials: int = Field(5, ge=0)


class SchedulerSpec(_Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(3, ge=1, description="Epochs every trial runs before ASHA may stop it.")
    reduction_factor: float = Field(2.0, gt=1)


class SearchSpace(_Strict):
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


# --- YAML with line numbers --------------------------------------------------------------------------

def _line_index(text: str) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}

    def walk(node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _fail(src: str, line: int | None, msg: str) -> SpaceError:
    return SpaceError(f"{src}:{line}: {msg}" if line else f"{src}: {msg}")


def config_field_exists(dotted: str) -> bool:
    from shapetune.platform.config import TrainConfig

    model: Any = TrainConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        ann = fields[part].annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and hasattr(a, "model_fields")]
        model = ann if hasattr(ann, "model_fields") else (args[0] if args else None)
    return True


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    """Parse and validate a search space; errors read ``FILE:LINE: problem``."""
    try:
        raw = yaml.safe_load(text)
        lines = _line_index(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: top level must be a mapping")
    try:
        space = SearchSpace.model_validate({**raw, "source": source, "name": raw.get("name") or Path(source).stem})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in ("int", "Depth")))
        where = ".".join(map(str, loc))
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise _fail(source, _line_of(lines, loc), f"{where}: {first['msg']}{more}") from exc
    _check_semantics(space, lines, source)
    return space


def _check_semantics(space: SearchSpace, lines: dict, source: str) -> None:
    sampled: list[str] = []
    if space.hierarchy is not None:
        sampled += [HIERARCHY_DEPTH, HIERARCHY_TOP]
        if "model.latent_dims" in space.params or "model.latent_dims" in space.fixed or "model.depth" in space.params:
            raise _fail(source, lines.get(("hierarchy",)),
                        "with a 'hierarchy' section, latent sizes and depth come from it; remove model.latent_dims/"
                        "model.depth from params and fixed")
    for key in space.fixed:
        if not config_field_exists(key):
            raise _fail(source, lines.get(("fixed", key)), f"fixed: unknown configuration field {key!r}")
    for name, p in space.params.items():
        if not config_field_exists(name):
            raise _fail(source, lines.get(("params", name)), f"params: unknown configuration field {name!r}")
        if p.when is not None and p.when.param not in sampled:
            raise _fail(source, lines.get(("params", name, "when", "param")) or lines.get(("params", name)),
                        f"params.{name}: condition on {p.when.param!r}, which is not a parameter sampled before it "
                        f"(known: {', '.join(sampled) or 'none'})")
        sampled.append(name)
    for k, o in enumerate(space.objectives):
        if not o.metric.startswith(("val_", "train_")):
            raise _fail(source, lines.get(("objectives", k)), f"objective metric {o.metric!r} is not a reported "
                                                                 "metric (val_* or train_*)")
    if not space.base_path().exists():
        raise _fail(source, lines.get(("base",)), f"base config {space.base!r} not found ({space.base_path()})")
