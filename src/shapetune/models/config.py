"""Model configuration, validated at the edge."""

from __future__ import annotations

import difflib
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shapetune.catalog import MODEL_SPECS, models_of

CONDITIONAL_MODELS = models_of("fetal")  # the fetal-skull study's models: 3D from 2D planes


def _pow2(v: int) -> bool:
    return v >= 1 and 2 ** round(math.log2(v)) == v


ACTIVATION_BYTES = 2  # activations counted as bf16, the narrowest any run keeps them in: a lower bound


class ModelConfig(BaseModel):
    """Architecture of a shape model. ``latent_dims`` lists latent sizes bottom -> top (last = top level)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("lvae", description="The registered model (shapetune.catalog.MODEL_SPECS).",
                      json_schema_extra={"enum": list(MODEL_SPECS)})
    grid: int = Field(32, description="Grid size (voxels per side): a power of two >= 16, or 3 x one >= 48 (96).")
    in_channels: int = Field(2, description="Masks per subject: 2 (ED, ES) for the cardiac models; the fetal "
                                            "models read one skull mask and ignore it.")
    width: int = Field(16, ge=4, le=128, description="Channels of the first conv stage.")
    bottleneck: int = Field(4, description="Spatial size (voxels per side) where the conv features are flattened.")
    norm: Literal["group", "batch"] = Field("batch", description="Normalisation in the conv backbone.")
    light_ends: bool = Field(False, description="Full-resolution stages of the 3D encoder/decoder reduced to one "
                                                "strided (transposed) convolution: several times cheaper at 64^3.")
    residual: bool = Field(False, description="Each stage's second convolution adds its input back (a residual "
                                              "block): same compute, deeper gradient path.")
    linear_path: bool = Field(False, description="vae, lvae, ae: a linear shape basis beside the conv path (masks -> "
                                                 "bottom latent mean, latents -> voxel logits, added).")
    linear_init: Literal["zero", "pca"] = Field("zero", description="How the linear path starts: zero (it grows "
                                                                     "from the data) or the training masks' "
                                                                     "principal components.")
    latent_dims: list[int] = Field(default_factory=lambda: [32, 16, 2])
    depth: int | None = Field(None, description="LVAE hierarchy depth; must equal len(latent_dims) if given.")
    ladder_hidden: int = Field(256, ge=8, description="Width of the LVAE's deterministic ladder MLPs.")
    classifier_hidden: int = Field(32, ge=2)
    size_frame: bool = Field(False, description="Conditional models (cvae, hcvae, tlnet, cgan): decode the skull in a "
                                                "size-normalised frame, scaled by a head size read off the planes.")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in MODEL_SPECS:
            close = difflib.get_close_matches(v, list(MODEL_SPECS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown model {v!r}{hint}; registered: {', '.join(MODEL_SPECS)}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: int) -> int:
        if not (_pow2(v) and v >= 16) and not (v % 3 == 0 and _pow2(v // 3) and v >= 48):
            raise ValueError(f"grid must be a power of two >= 16 (or 3 x a power of two >= 48, such as 96), got {v}")
        return v

    @field_validator("latent_dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 for d in v):
            raise ValueError(f"latent_dims must be a non-empty list of positive sizes, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if self.bottleneck not in (2, 3, 4, 6, 8, 12) or self.bottleneck > self.grid // 4 \
                or self.grid % self.bottleneck or not _pow2(self.grid // self.bottleneck):
            raise ValueError(f"bottleneck must be one of 2, 3, 4, 6, 8, 12, at most grid/4, and grid/bottleneck a "
                             f"power of two (e.g. 4 or 8 at 64, 6 or 12 at 96), got {self.bottleneck} at grid "
                             f"{self.grid}")
        if self.name not in CONDITIONAL_MODELS and self.in_channels not in (1, 2):
            raise ValueError(f"in_channels must be 1 or 2 for model '{self.name}' (the phases of the prepared "
                             f"dataset: 2 for ED and ES, 1 for a one-phase cohort), got {self.in_channels}")
        n = len(self.latent_dims)
        if self.depth is not None:
            if self.depth < 1 or self.depth > 5:
                raise ValueError(f"depth must be within 1..5, got {self.depth}")
            if self.depth != n:
                raise ValueError(f"latent_dims has {n} sizes but depth is {self.depth}: give one latent size per level")
        if self.name in ("lvae", "hcvae") and n > 5:
            raise ValueError(f"model '{self.name}' supports depth 1..5, got {n} levels")
        if self.size_frame and self.name not in CONDITIONAL_MODELS:
            raise ValueError(f"size_frame is for the conditional models ({', '.join(CONDITIONAL_MODELS)}), "
                             f"not '{self.name}'")
        if self.linear_path and self.name not in ("vae", "lvae", "ae"):
            raise ValueError(f"linear_path is for vae, lvae and ae, not '{self.name}'")
        if self.linear_init == "pca" and not self.linear_path:
            raise ValueError("linear_init: pca needs linear_path: true")
        if self.name in ("vae", "ae", "cvae", "tlnet") and n != 1:
            raise ValueError(f"model '{self.name}' has a single latent; latent_dims must have one size, "
                             f"got {self.latent_dims}")
        return self

    @property
    def levels(self) -> int:
        return len(self.latent_dims)


def training_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """A lower bound on the memory one training step of the 3D backbone holds at ``cfg.grid``.

    Counted: the float32 input batch and logits, and per conv stage of the encoder and decoder the outputs that
    autograd keeps for the backward pass (conv, normalisation, SiLU; two convs a stage) at 2 bytes a value.
    Not counted: weights, gradients, optimiser state, conv workspaces, the conditional models' plane encoders
    and second (prior-path) decode, so the real peak is several times higher.
    """
    stages = int(math.log2(cfg.grid // cfg.bottleneck))
    ch = [cfg.width * min(2**i, 8) for i in range(stages + 1)]  # as backbone._channels
    vox = [(cfg.grid // 2**i) ** 3 for i in range(stages + 1)]
    channels = 1 if cfg.name in CONDITIONAL_MODELS else cfg.in_channels  # the fetal models see one skull mask
    io = 2 * channels * vox[0] * 4
    # encoder: a stem at full resolution (or, light, one strided conv to half), then two convs per stage
    enc = 3 * ch[1] * vox[1] if cfg.light_ends else 3 * ch[0] * vox[0] + 6 * ch[1] * vox[1]
    enc += sum(6 * ch[j] * vox[j] for j in range(2, stages + 1))
    # decoder: two convs per stage back up to full resolution (light: to half, then straight to logits)
    dec = sum(6 * ch[j] * vox[j] for j in range(1 if cfg.light_ends else 0, stages))
    return batch_size * (io + ACTIVATION_BYTES * (enc + dec))
