"""Training objective: reconstruction (BCE + soft Dice, per channel) + lambda * sum_i alpha_i KL_i + gamma * CE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shapetune.models.gaussian import kl_normal
from shapetune.models.outputs import ConditionalOutput, Level, ModelOutput


@dataclass(frozen=True)
class LossWeights:
    lambda_kl: float = 1e-3
    gamma_cls: float = 1.0
    dice_weight: float = 1.0
    kl_warmup_epochs: float = 5.0  # linear warm-up of lambda over this many epochs (0 = none)
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised
    prior_recon: float = 0.5  # conditional models: weight of the reconstruction from the prior path (GSNN)
    embed_weight: float = 1.0  # TL-Net: weight of the embedding regression
    size_weight: float = 100.0  # size frame: weight of the head-size regression (squared log-radius error)
    adv_weight: float = 0.01  # conditional GAN: weight of the generator's adversarial term
    kl_alpha: tuple[float, ...] | None = None  # per-level KL weights (bottom -> top), multiplying lambda


def _level_kl(levels: Sequence[Level], w: LossWeights, terms: dict[str, torch.Tensor],
              device: torch.device) -> torch.Tensor:
    """Sum over levels of alpha_i x KL_i (free bits applied per dimension); each level's KL into ``terms``."""
    total = torch.zeros((), device=device)
    for i, lv in enumerate(levels):
        kl_dim = kl_normal(lv.mu_q.float(), lv.logvar_q.float(),
                           None if lv.mu_p is None else lv.mu_p.float(),
                           None if lv.logvar_p is None else lv.logvar_p.float()).mean(0)
        terms[f"kl_{i}"] = kl_dim.sum()
        level = torch.clamp(kl_dim, min=w.free_bits).sum() if w.free_bits > 0 else kl_dim.sum()
        total = total + (level if w.kl_alpha is None else w.kl_alpha[i] * level)
    return total


def soft_dice_per_channel(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice per sample and channel, ``[B, C]``."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    inter = (p * target).sum(dims)
    return (2 * inter + eps) / (p.sum(dims) + target.sum(dims) + eps)


def hard_dice(pred: torch.Tensor, target: torch.Tensor, start_dim: int = 2) -> torch.Tensor:
    """Dice of binary tensors over every dimension from ``start_dim`` on (``[B, C]`` for the default, ``[B]``
    with ``start_dim=1``); 1 when both are empty."""
    dims = tuple(range(start_dim, pred.ndim))
    inter = (pred * target).sum(dims)
    denom = pred.sum(dims) + target.sum(dims)
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))


def kl_warmup(epoch: float, warmup_epochs: float) -> float:
    return 1.0 if warmup_epochs <= 0 else min(1.0, (epoch + 1) / warmup_epochs)


def shape_loss(out: ModelOutput, target: torch.Tensor, label: torch.Tensor, w: LossWeights, epoch: float,
               variational: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its terms (detached, for reporting). ``target`` is the binary mask, ``label`` 0/1."""
    logits = out.logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = 1.0 - soft_dice_per_channel(logits, target).mean()
    recon = bce + w.dice_weight * dice
    terms = {"bce": bce, "dice_loss": dice}
    kl_total = _level_kl(out.levels, w, terms, logits.device) if variational else torch.zeros((), device=logits.device)
    terms["kl"] = kl_total
    ce = F.binary_cross_entropy_with_logits(out.cls_logit.float(), label.float())
    terms["ce"] = ce
    beta = kl_warmup(epoch, w.kl_warmup_epochs)
    total = recon + w.lambda_kl * beta * kl_total + w.gamma_cls * ce
    terms["loss"] = total
    return total, {k: v.detach() for k, v in terms.items()}


def _recon(logits: torch.Tensor, target: torch.Tensor,
           w: LossWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = 1.0 - soft_dice_per_channel(logits, target).mean()
    return bce + w.dice_weight * dice, bce, dice


def conditional_loss(out: ConditionalOutput, target: torch.Tensor, w: LossWeights, epoch: float,
                     variational: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction of the posterior path, plus ``prior_recon`` x that of the prior path (what the model
    predicts from planes alone, Sohn et al.'s hybrid objective), plus lambda x KL per level."""
    recon, bce, dice = _recon(out.logits.float(), target, w)
    terms = {"bce": bce, "dice_loss": dice}
    total = recon
    if out.prior_logits is not None:
        prior_recon, _, prior_dice = _recon(out.prior_logits.float(), target, w)
        terms["prior_dice_loss"] = prior_dice
        total = total + w.prior_recon * prior_recon
    kl_total = _level_kl(out.levels, w, terms, target.device) if variational else torch.zeros((), device=target.device)
    terms["kl"] = kl_total
    total = total + w.lambda_kl * kl_warmup(epoch, w.kl_warmup_epochs) * kl_total
    if out.extra_loss is not None:
        terms["embed"] = out.extra_loss
        total = total + w.embed_weight * out.extra_loss
    if out.size_loss is not None:
        terms["size"] = out.size_loss
        total = total + w.size_weight * out.size_loss
    if out.adv_loss is not None:  # the discriminator's own loss at full weight: its gradient reaches only it
        if out.disc_loss is None:
            raise ValueError("a model that reports adv_loss must report disc_loss (the discriminator's loss)")
        terms["adv"], terms["disc"] = out.adv_loss, out.disc_loss
        total = total + w.adv_weight * out.adv_loss + out.disc_loss
    terms["loss"] = total
    return total, {k: v.detach() for k, v in terms.items()}
