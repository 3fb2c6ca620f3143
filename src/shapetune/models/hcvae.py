"""Hierarchical conditional VAE: the axial view drives the top latent, sagittal and coronal refine below.

Latents ``z_0 .. z_{L-1}`` (bottom -> top). The top level's prior is p(z_top | axial); level ``l`` below has
the prior p(z_l | z_{l+1}, views of level l): a top-down term from ``z_{l+1}`` plus one term per view assigned
to that level, added only when the view was acquired. A missing view therefore leaves its level with the
top-down prior the hierarchy learned, rather than feeding a zero image through an encoder. Views go to
levels in acquisition order: axial -> top, sagittal -> next, coronal -> the one below (with two levels
sagittal and coronal share the bottom one; with one level all three condition it). The posterior of each
level is the precision-weighted merge of a bottom-up Gaussian from the 3D encoder and its prior (as in the
Ladder VAE), and the decoder reads all levels together.
"""

from __future__ import annotations

import torch
from torch import nn

from shapetune.models.conditional import N_VIEWS, ConditionalModel, _gaussian, mlp
from shapetune.models.config import ModelConfig
from shapetune.models.gaussian import precision_weighted_merge, reparameterize
from shapetune.models.outputs import ConditionalOutput, Level


def view_levels(levels: int) -> list[int]:
    """The level each view (axial, sagittal, coronal) conditions."""
    top = levels - 1
    return [top, max(top - 1, 0), max(top - 2, 0)]


class HierarchicalCVAE(ConditionalModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        dims, h = cfg.latent_dims, cfg.ladder_hidden
        self.L = len(dims)
        self.view_level = view_levels(self.L)
        # Top-down terms (from z_{l+1}) for every level but the top; one view term per view.
        self.down = nn.ModuleList([mlp(dims[level + 1], h) for level in range(self.L - 1)])
        self.view_terms = nn.ModuleList([mlp(h, h) for _ in range(N_VIEWS)])
        self.prior_heads = nn.ModuleList([nn.Linear(h, 2 * d) for d in dims])
        self.up = nn.ModuleList([mlp(self.encoder.features, h, 2 * d) for d in dims])
        self.project = nn.Linear(sum(dims), self.decoder.features)

    def _view_terms(self, planes: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
        feats = self.planes(planes)
        return [term(feats[:, v]) * present[:, v:v + 1] for v, term in enumerate(self.view_terms)]

    def _prior(self, level: int, z_above: torch.Tensor | None,
               terms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.down[level](z_above) if z_above is not None else 0.0
        for v, lvl in enumerate(self.view_level):
            if lvl == level:
                h = h + terms[v]
        return _gaussian(self.prior_heads[level](h))

    def _top_down(self, planes: torch.Tensor, present: torch.Tensor, volume: torch.Tensor | None = None,
                  sample: bool = False, terms: list[torch.Tensor] | None = None) -> list[Level]:
        terms = self._view_terms(planes, present) if terms is None else terms
        feats = self.encoder(volume) if volume is not None else None
        levels: list[Level] = []
        z_above = None
        for level in range(self.L - 1, -1, -1):
            mu_p, lv_p = self._prior(level, z_above, terms)
            if feats is not None:
                mu_q, lv_q = precision_weighted_merge(*_gaussian(self.up[level](feats)), mu_p, lv_p)
            else:
                mu_q, lv_q = mu_p, lv_p
            z = reparameterize(mu_q, lv_q, sample)
            levels.insert(0, Level(mu_q, lv_q, z, mu_p, lv_p))
            z_above = z
        return levels

    def _decode(self, levels: list[Level], log_r: torch.Tensor | None = None) -> torch.Tensor:
        return self._place(self.decoder(self.project(torch.cat([lv.z for lv in levels], dim=-1))), log_r)

    def forward(self, volume: torch.Tensor, planes: torch.Tensor, present: torch.Tensor) -> ConditionalOutput:
        terms = self._view_terms(planes, present)
        r_true, r_pred, size_loss = self._sizes(volume, planes, present)
        levels = self._top_down(planes, present, volume, sample=self.training, terms=terms)
        # The prior means are what prediction decodes: train that path directly (a deterministic GSNN term).
        prior_logits = (self._decode(self._top_down(planes, present, None, False, terms), r_pred)
                        if self.training else None)
        return ConditionalOutput(self._decode(levels, r_true), levels, prior_logits, size_loss=size_loss)

    def predict(self, planes: torch.Tensor, present: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self._decode(self._top_down(planes, present, None, sample=sample), self._size(planes, present, sample))
