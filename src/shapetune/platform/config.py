"""Training configuration: typed, loaded from YAML, with dotted ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shapetune.models.config import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Strict):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(30, ge=1)
    grad_clip: float | None = 5.0
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning-rate schedule over the epochs.")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Cosine: the last epoch's lr as a fraction of lr.")


class LossConfig(_Strict):
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


class AugmentConfig(_Strict):
    """Anatomy-respecting augmentation: no flips (they would swap septum and free wall)."""

    enabled: bool = True
    rotate_deg: float = Field(8.0, ge=0, description="Max rotation about the long axis.")
    translate_vox: float = Field(1.5, ge=0)
    elastic_vox: float = Field(0.75, ge=0, description="Amplitude of the smooth elastic jitter.")


class PlaneAugmentConfig(_Strict):
    """Fetal study: every epoch the planes are cut afresh from an anisotropically scaled skull, with the
    reference study's perturbations (rotations up to 10 degrees, shifts up to 7 pixels)."""

    enabled: bool = True
    scale: float = Field(0.04, ge=0, lt=0.5, description="Per-axis scaling within 1 +- scale.")
    rotate_deg: float = Field(10.0, ge=0)
    translate_px: float = Field(7.0, ge=0)
    normal_px: float = Field(2.0, ge=0, description="Shift along the plane's normal.")


class ViewsConfig(_Strict):
    """Fetal study: which views a training sample has (axial always; the others at these rates)."""

    p_sagittal: float = Field(0.6, ge=0, le=1)
    p_coronal: float = Field(0.4, ge=0, le=1)


class DataConfig(_Strict):
    fold: int = Field(0, ge=0, description="Cross-validation fold of datasets that have folds (fetal).")


class CheckpointSettings(_Strict):
    metric: str = "val_dice"
    mode: Literal["max", "min"] = "max"
    keep: int = Field(2, ge=1)


class FaultInjection(_Strict):
    """Chaos testing: worker ``rank`` fails at the start of ``epoch`` (logged to a marker file in the run dir).

    ``exit`` kills the process as a crashed worker would; ``raise`` raises an exception. ``once`` fails only the
    first attempt (a retry then succeeds); otherwise every attempt fails.
    """

    epoch: int | None = None
    rank: int = 0
    mode: Literal["exit", "raise"] = "exit"
    once: bool = True


class TrainConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    plane_augment: PlaneAugmentConfig = Field(default_factory=PlaneAugmentConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    seed: int = 0
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="bf16 autocast on GPU when 'auto'.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint.")
    val_every: int = Field(1, ge=1)
    fault_injection: FaultInjection | None = None

    @model_validator(mode="after")
    def _batch_norm_needs_batches(self) -> "TrainConfig":
        if (self.model.name == "lvae" or self.model.norm == "batch") and self.optim.batch_size < 2:
            raise ValueError("batch normalisation needs optim.batch_size >= 2")
        return self


class ConfigError(ValueError):
    """A bad configuration, reported with its source."""


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
    """``section.key=value`` strings -> ``{dotted key: value}`` (values parsed as YAML: ``model.latent_dims=[32,8,2]``)."""
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults), apply overrides, validate; errors name the file and field."""
    data: dict = {}
    src = "defaults"
    if path is not None:
        path = Path(path)
        src = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    data = apply_overrides(data, overrides)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{src}: invalid configuration\n  " + "\n  ".join(lines)) from exc
