"""The diagnosis head: a small MLP on the top latent, differentiable w.r.t. the latent."""

from __future__ import annotations

import torch
from torch import nn


class LatentClassifier(nn.Module):
    """Logit of HCM vs healthy from a latent vector; ``torch.autograd`` gives its gradient in latent space."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)
