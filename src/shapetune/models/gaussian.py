"""Diagonal-Gaussian helpers: KL divergence and the Ladder VAE's precision-weighted merge."""

from __future__ import annotations

import torch


def kl_normal(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | None = None,
              logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension KL(q || p) of diagonal Gaussians; p defaults to N(0, I). Shape of ``mu_q``."""
    if mu_p is None or logvar_p is None:
        if (mu_p is None) != (logvar_p is None):
            raise ValueError("kl_normal: give both mu_p and logvar_p, or neither (the standard normal prior)")
        return 0.5 * (torch.exp(logvar_q) + mu_q**2 - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) / torch.exp(logvar_p) - 1.0)


def precision_weighted_merge(mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor,
                             logvar_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of two Gaussians (Sønderby et al. 2016, eq. 17-18): precisions add, means are precision-weighted."""
    prec_a, prec_b = torch.exp(-logvar_a), torch.exp(-logvar_b)
    var = 1.0 / (prec_a + prec_b)
    mu = (mu_a * prec_a + mu_b * prec_b) * var
    return mu, torch.log(var)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
