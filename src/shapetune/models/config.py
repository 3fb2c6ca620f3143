"""Model configuration, validated at the edge."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


CONDITIONAL_MODELS = ("cvae", "hcvae", "tlnet", "cgan")  # the fetal-skull study's models: 3D from 2D planes


def _pow2(v: int) -> bool:
    return v >= 1 and 2 ** round(math.log2(v)) == v


class ModelConfig(BaseModel):
    """Architecture of a shape model. ``latent_dims`` lists latent sizes bottom -> top (last = top level)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["vae", "lvae", "ae", "cvae", "hcvae", "tlnet", "cgan"] = "lvae"
    grid: int = Field(32, description="Grid size (voxels per side): a power of two >= 16, or 3 x one >= 48 (96).")
    in_channels: int = 2
    width: int = Field(16, ge=4, le=128, description="Channels of the first conv stage.")
    bottleneck: int = Field(4, description="Spatial size (voxels per side) where the conv features are flattened.")
    norm: Literal["group", "batch"] = Field("batch", description="Normalisation in the conv backbone.")
    light_ends: bool = Field(False, description="Full-resolution stages of the 3D encoder/decoder reduced to one "
                                                "strided (transposed) convolution: several times cheaper at 64^3.")
    latent_dims: list[int] = Field(default_factory=lambda: [32, 16, 2])
    depth: int | None = Field(None, description="LVAE hierarchy depth; must equal len(latent_dims) if given.")
    ladder_hidden: int = Field(256, ge=8, description="Width of the LVAE's deterministic ladder MLPs.")
    classifier_hidden: int = Field(32, ge=2)
    size_frame: bool = Field(False, description="Conditional models (cvae, hcvae, tlnet, cgan): decode the skull in a "
                                                "size-normalised frame, scaled by a head size read off the planes.")

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
            raise ValueError(f"bottleneck must be one of 2, 3, 4, 6, 8, 12, at most grid/4, and grid/bottleneck a power "
                             f"of two (e.g. 4 or 8 at 64, 6 or 12 at 96), got {self.bottleneck} at grid {self.grid}")
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
        if self.name in ("vae", "ae", "cvae", "tlnet") and n != 1:
            raise ValueError(f"model '{self.name}' has a single latent; latent_dims must have one size, got {self.latent_dims}")
        return self

    @property
    def levels(self) -> int:
        return len(self.latent_dims)
