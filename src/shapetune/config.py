"""Training configuration: typed, loaded from YAML, with dotted ``key=value`` overrides."""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from shapetune.catalog import reported_metrics, task_spec
from shapetune.errors import ShapeTuneError
from shapetune.models.config import ModelConfig, training_bytes


class Strict(BaseModel):
    """The base of every config and search-space section: unknown keys are errors, and so are inf and nan (they
    pass every ge/gt bound, nan even slips past some, and a range bound of either breaks the sampler later)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldProblem(ValueError):
    """A cross-field check's failure, naming the dotted field to blame (so messages and lines point at it)."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(problem)


Beta = Annotated[float, Field(ge=0, lt=1, description="An Adam moment decay: 1 or more never forgets (diverges).")]


class OptimConfig(Strict):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(30, ge=1)
    grad_clip: float | None = Field(5.0, ge=0, description="Max gradient norm; 0 or null: no clipping.")
    schedule: Literal["constant", "cosine", "onecycle"] = Field(
        "constant", description="Learning-rate schedule, set every step: constant; cosine from lr down to "
                                "lr x min_lr_ratio; onecycle (Smith 2018) up from lr/25 to lr over warmup_epochs "
                                "(30 % of the run if 0), then cosine down to lr/25e4 (torch's OneCycleLR).")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Cosine: the last epoch's lr as a fraction of lr.")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up of the lr from 0 over this many epochs "
                                                        "(constant and cosine; onecycle's own warm-up).")
    head_lr_scale: float = Field(1.0, gt=0, le=1, description="vae, lvae, ae: the learning rate of the bottom latent's "
                                 "head (conv features -> its mean and log-variance) as a fraction of the schedule's. "
                                 "Adam steps each of its thousands of weights by about lr, so the latent mean moves "
                                 "far more than lr per step; from model.linear_init: pca that scrambles the PCA "
                                 "coefficients in the first epoch.")
    ema: float | None = Field(None, gt=0, lt=1, description="Decay of an exponential moving average of the weights "
                                                            "(e.g. 0.999), used for validation, checkpoints and "
                                                            "export; null: none.")


class LossConfig(Strict):
    lambda_kl: float = Field(1e-4, ge=0, description="KL weight (lambda); reconstruction is a per-voxel mean.")
    gamma_cls: float = Field(1.0, ge=0, description="Classifier cross-entropy weight (gamma).")
    dice_weight: float = Field(1.0, ge=0)
    kl_warmup_epochs: float = Field(5.0, ge=0)
    free_bits: float = Field(0.0, ge=0)
    prior_recon: float = Field(0.5, ge=0, description="Conditional models: weight of the prior-path reconstruction.")
    embed_weight: float = Field(1.0, ge=0, description="TL-Net: weight of the embedding regression.")
    size_weight: float = Field(100.0, ge=0, description="Conditional models with model.size_frame: weight of the "
                                                          "head-size regression (squared error of log radii).")
    adv_weight: float = Field(0.01, ge=0, description="Conditional GAN (cgan): weight of the generator's adversarial "
                                                      "term beside the reconstruction (pix2pix-style).")
    kl_alpha: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description="Per-level KL weights alpha_i (bottom -> top, one per latent level) multiplying lambda, "
                          "as in the reference Ladder VAE; null: 1 for every level.")


class AugmentConfig(Strict):
    """Anatomy-respecting augmentation: no flips (they would swap septum and free wall)."""

    enabled: bool = True
    rotate_deg: float = Field(8.0, ge=0, le=180, description="Max rotation about the long axis.")
    translate_vox: float = Field(1.5, ge=0, description="Max shift in voxels: under half the grid (checked with it).")
    elastic_vox: float = Field(0.75, ge=0, description="Amplitude of the smooth elastic jitter (under half the grid).")


class PlaneAugmentConfig(Strict):
    """Fetal study: every epoch the planes are cut afresh from an anisotropically scaled skull, with the
    reference study's perturbations (rotations up to 10 degrees, shifts up to 7 pixels)."""

    enabled: bool = True
    scale: float = Field(0.04, ge=0, lt=0.5, description="Per-axis scaling within 1 +- scale.")
    rotate_deg: float = Field(10.0, ge=0, le=180)
    translate_px: float = Field(7.0, ge=0, description="Max in-plane shift in pixels: under half the grid.")
    normal_px: float = Field(2.0, ge=0, description="Shift along the plane's normal (under half the grid).")


class ViewsConfig(Strict):
    """Fetal study: which views a training sample has (axial always; the others at these rates)."""

    p_sagittal: float = Field(0.6, ge=0, le=1)
    p_coronal: float = Field(0.4, ge=0, le=1)


class DataConfig(Strict):
    fold: int = Field(0, ge=0, description="Cross-validation fold of datasets that have folds (fetal).")


class CheckpointSettings(Strict):
    metric: str = Field("val_dice", description="A metric the run reports (its task's; checked with the model).")
    mode: Literal["max", "min"] = "max"
    keep: int = Field(2, ge=1)


class FaultInjection(Strict):
    """Chaos testing: worker ``rank`` fails at the start of ``epoch`` (logged to a marker file in the run dir).

    ``exit`` kills the process as a crashed worker would; ``raise`` raises an exception. ``once`` fails only the
    first attempt (a retry then succeeds); otherwise every attempt fails.
    """

    epoch: int | None = Field(None, ge=0, description="Must be one the run reaches (below optim.epochs).")
    rank: int = Field(0, ge=0)
    mode: Literal["exit", "raise"] = "exit"
    once: bool = True


class TrainConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    plane_augment: PlaneAugmentConfig = Field(default_factory=PlaneAugmentConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    seed: int = Field(0, ge=0, lt=2**32, description="numpy's generators take no negative seed.")
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="bf16 autocast: 'auto' on CPUs with native bf16 "
                                                                     "(AVX512-BF16 or AMX); fp32 on GPU, which ran "
                                                                     "the lvae step faster (gpu_check).")
    deterministic: bool | None = Field(None, description="torch's deterministic algorithms; null: on GPU only (on "
                                                          "CPU runs are bitwise reproducible without them).")
    channels_last: bool = Field(True, description="3D conv weights and batches in channels-last layout (faster "
                                                  "with oneDNN on CPU and cuDNN on GPU).")
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off", description="torch.compile of the training step's model ('reduce-overhead': with CUDA graphs). On an "
                           "H200 the 64^3 lvae step at batch 8 ran 2.2x eager with 'reduce-overhead' (the whole "
                           "loop 1.3x) after 18-25 s of compiling, 1.0-1.3x with 'default' (gpu_step); slower on "
                           "this project's CPU. Validation, checkpoints and exports use the plain model.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint.")
    val_every: int = Field(1, ge=1)
    fault_injection: FaultInjection | None = None

    @field_validator("amp", "compile", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` (amp: off, compile=off) as false

    @model_validator(mode="after")
    def _batch_norm_needs_batches(self) -> "TrainConfig":
        if (self.model.name == "lvae" or self.model.norm == "batch") and self.optim.batch_size < 2:
            raise FieldProblem("optim.batch_size", "batch normalisation needs optim.batch_size >= 2")
        return self

    @model_validator(mode="after")
    def _one_alpha_per_level(self) -> "TrainConfig":
        alpha = self.loss.kl_alpha
        if alpha is not None and len(alpha) != self.model.levels:
            raise FieldProblem("loss.kl_alpha", f"{len(alpha)} weights for {self.model.levels} latent levels "
                                                f"(model.latent_dims={self.model.latent_dims}): give one per level")
        return self

    @model_validator(mode="after")
    def _head_lr_needs_a_bottom_head(self) -> "TrainConfig":
        if self.optim.head_lr_scale != 1.0 and self.model.name not in ("vae", "lvae", "ae"):
            raise FieldProblem("optim.head_lr_scale", f"is for vae, lvae and ae (their bottom latent's head), not "
                                                      f"model {self.model.name!r}: leave it at 1")
        return self

    @model_validator(mode="after")
    def _within_the_run(self) -> "TrainConfig":
        half = self.model.grid / 2  # a shift or jitter of half the grid moves the anatomy off it
        a, p = self.augment, self.plane_augment
        for on, key, value in ((a.enabled, "augment.translate_vox", a.translate_vox),
                               (a.enabled, "augment.elastic_vox", a.elastic_vox),
                               (p.enabled, "plane_augment.translate_px", p.translate_px),
                               (p.enabled, "plane_augment.normal_px", p.normal_px)):
            if on and value >= half:
                raise FieldProblem(key, f"{value:g} must be under half the grid ({half:g} at model.grid "
                                        f"{self.model.grid})")
        fi = self.fault_injection
        if fi is not None and fi.epoch is not None and fi.epoch >= self.optim.epochs:
            last = self.optim.epochs - 1
            raise FieldProblem("fault_injection.epoch", f"epoch {fi.epoch} is never reached: the run has "
                                                        f"optim.epochs={self.optim.epochs} (epochs 0..{last})")
        return self

    @model_validator(mode="after")
    def _checkpoint_metric_is_reported(self) -> "TrainConfig":
        have = reported_metrics(self.model)
        if self.checkpoint.metric not in have:
            raise FieldProblem("checkpoint.metric", unreported(self.checkpoint.metric, have,
                                                               f"a {task_spec(self.model.name).name} run of model "
                                                               f"{self.model.name!r}"))
        return self


class ConfigError(ShapeTuneError):
    """A bad configuration, reported with its source."""


def unreported(metric: str, have: frozenset[str] | set[str], who: str) -> str:
    """Why ``metric`` cannot be ranked on: ``who`` never reports it; the close match and the full list."""
    close = difflib.get_close_matches(metric, sorted(have), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{metric!r} is not a metric {who} reports{hint}; it reports: {', '.join(sorted(have))}"


# --- errors that name the field, the unknown key's close match, and the line ----------------------------

def _members(tp: Any) -> list[Any]:
    """The alternatives of a union / Optional annotation (the annotation itself otherwise)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, part: Any) -> tuple[Any, bool]:
    """Follow one step of a pydantic error location; (annotation there, whether ``part`` names a real key)."""
    for m in _members(tp):
        name = getattr(m, "__name__", None)
        if isinstance(part, str) and name and (part == name or part.endswith(f" {name}]")):
            # a union member's tag (``int``, ``function-after[_ordered(), Depth]``), not a key of the document
            return m, False
        if _is_model(m):
            for name, f in m.model_fields.items():
                if part in (name, f.alias):
                    return f.annotation, True
        origin, args = typing.get_origin(m), typing.get_args(m)
        if origin is dict and args:
            return args[1], True
        if origin is list and args:
            return args[0], True
        if origin is tuple and args and isinstance(part, int):
            variadic = len(args) == 2 and args[1] is Ellipsis
            return (args[0] if variadic else args[part] if part < len(args) else None), True
    return None, True


def keys_at(root: type[BaseModel], loc: tuple) -> tuple[tuple, list[str]]:
    """The document path of ``loc`` (union tags dropped) and the keys the mapping at its end accepts."""
    tp, path = root, []
    for part in loc:
        tp, real = _step(tp, part)
        if real:
            path.append(part)
        if tp is None:
            return tuple(path), []
    keys = [k for m in _members(tp) if _is_model(m) for n, f in m.model_fields.items() for k in [f.alias or n]]
    return tuple(path), keys


def explain(err: ErrorDetails, root: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """One pydantic error as (document path of the field, message): an unknown key says so and suggests the
    close match; a cross-field check points at the field it blames."""
    loc, msg = tuple(err["loc"]), err["msg"]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        return keys_at(root, loc)[0] + tuple(problem.field.split(".")), problem.problem
    if err["type"] == "extra_forbidden":
        parent, keys = keys_at(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(keys)}"
        return parent + (loc[-1],), f"{msg} (unknown key {loc[-1]!r}; {hint})"
    return keys_at(root, loc)[0], msg


def by_relevance(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Unknown keys first (a misspelt key also makes its real one 'Field required', which misleads), type
    mismatches last (of a union, ``depth: {low: 0, ...}`` is no int, but the mapping's own error is the news)."""
    return sorted(errors, key=lambda e: (e["type"] != "extra_forbidden", e["type"].endswith("_type")))


def yaml_lines(text: str) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}

    def walk(node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
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


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of ``loc`` or of its nearest enclosing key."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


# --- memory -------------------------------------------------------------------------------------------

def machine_memory() -> int | None:
    """Bytes of memory on this machine, or its container's limit when lower; None when unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _gib(n: float) -> str:
    return f"{n / 2**40:.1f} TiB" if n >= 2**40 else f"{n / 2**30:.1f} GiB"


def memory_problem(cfg: TrainConfig, available: int | None = None) -> str | None:
    """Why ``cfg`` cannot train in ``available`` bytes (default: this machine's memory), or None.

    The need is a lower bound (``training_bytes``): a refusal is certain, a pass is no promise.
    """
    available = machine_memory() if available is None else available
    need = training_bytes(cfg.model, cfg.optim.batch_size)
    if available is None or need <= available:
        return None
    m = cfg.model
    return (f"model.grid: {m.grid}^3 needs at least {_gib(need)} for one training step (optim.batch_size "
            f"{cfg.optim.batch_size}, model.width {m.width}: the input, logits and conv activations kept for the "
            f"backward pass), more than this machine's {_gib(available)}; lower model.grid, optim.batch_size "
            f"or model.width")


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        if d.get(p) is None:  # an optional section that is off (null) is switched on by setting a field
            d[p] = {}
        d = d[p]
        if not isinstance(d, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``section.key=value`` strings -> ``{dotted key: value}`` (values parsed as YAML:
    ``model.latent_dims=[32,8,2]``)."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` strings to a nested config dict."""
    for key, value in parse_overrides(overrides).items():
        set_dotted(data, key, value)
    return data


def validation_lines(exc: ValidationError, lines: dict[tuple, int], overridden: set[tuple] = frozenset()) -> list[str]:
    """``field: problem (line N)`` per error, unknown keys first; a field set by an override has no file line."""
    out = []
    for e in by_relevance(exc.errors()):
        loc, msg = explain(e, TrainConfig)
        line = None
        if loc and not any(loc[:len(k)] == k or k[:len(loc)] == loc for k in overridden):
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f" (line {line})" if line else ""
        out.append(f"{'.'.join(map(str, loc))}: {msg}{where}" if loc else f"{msg}{where}")
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults), apply overrides, validate; errors name the file, field and line,
    and a config too big for this machine's memory is refused (``memory_problem``)."""
    data: dict = {}
    src = "defaults"
    lines: dict[tuple, int] = {}
    if path is not None:
        path = Path(path)
        src = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_text()
            data = yaml.safe_load(text) or {}
            lines = yaml_lines(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    parsed = parse_overrides(overrides)
    for key, value in parsed.items():
        set_dotted(data, key, value)
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        found = validation_lines(exc, lines, {tuple(k.split(".")) for k in parsed})
        raise ConfigError(f"{src}: invalid configuration\n  " + "\n  ".join(found)) from exc
    problem = memory_problem(cfg)
    if problem:
        line = lines.get(("model", "grid")) if "model.grid" not in parsed else None
        raise ConfigError(f"{src}:{line}: {problem}" if line else f"{src}: {problem}")
    return cfg
