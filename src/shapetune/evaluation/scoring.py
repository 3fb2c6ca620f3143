"""Score one candidate (a checkpoint or a baseline) on one split: per-subject rows and latent means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.evaluation.splits import EvalSplit
from shapetune.evaluation.surface import NSD_TOLERANCE_MM, batch_metrics

def subject_rows(model: str, split: EvalSplit, prob: np.ndarray, recon: np.ndarray | None,
                 workers: int = 1, nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> pd.DataFrame:
    """One row per subject: label, probability, prediction and every reconstruction metric per phase (the NSD at
    ``nsd_tolerance_mm``)."""
    df = pd.DataFrame({"model": model, "split": split.name, "subject": split.subjects, "label": split.labels,
                       "prob_hcm": prob.astype(float), "pred": (prob > 0.5).astype(int)})
    df["correct"] = (df.pred == df.label).astype(int)
    if recon is not None:
        for c, phase in enumerate(split.phases):
            ms = batch_metrics(recon[:, c].astype(bool), split.masks[:, c].astype(bool), split.spacing, workers,
                               nsd_tolerance_mm)
            metrics = pd.DataFrame([m.as_dict(f"_{phase}") for m in ms])
            df = pd.concat([df, metrics], axis=1)
    return df


def latent_rows(model: str, split: EvalSplit, latents: list[np.ndarray]) -> pd.DataFrame:
    """Posterior means per level (``z<level>_<k>``, top level last) with subject, split and label."""
    cols = {f"z{lvl}_{k}": z[:, k] for lvl, z in enumerate(latents) for k in range(z.shape[1])}
    base = pd.DataFrame({"model": model, "split": split.name, "subject": split.subjects, "label": split.labels})
    return pd.concat([base, pd.DataFrame(cols)], axis=1)


def score_checkpoint(checkpoint: str | Path, model_name: str, split: EvalSplit, batch_size: int = 16,
                     device: str = "cpu", nsd_tolerance_mm: float = NSD_TOLERANCE_MM
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reconstruct and classify every subject of ``split`` with a training checkpoint."""
    import torch

    from shapetune.training.checkpoints import load_model

    model, cfg, _ = load_model(checkpoint, map_location=device)
    if (cfg.model.grid,) * 3 != split.masks.shape[2:]:
        raise ValueError(f"{checkpoint}: model grid {cfg.model.grid}^3 does not match split {split.name} "
                         f"({split.masks.shape[2:]})")
    model.to(device)
    probs, recons, lat = [], [], []
    with torch.no_grad():
        for s in range(0, len(split.masks), batch_size):
            # a copy: masks may be read-only mmaps
            x = torch.from_numpy(np.array(split.masks[s:s + batch_size], dtype=np.float32)).to(device)
            out = model(x)
            probs.append(torch.sigmoid(out.cls_logit.float()).cpu().numpy())
            recons.append((out.logits > 0).cpu().numpy().astype(np.uint8))
            lat.append([z.cpu().numpy() for z in model.latents(x)])
    latents = [np.concatenate([b[lvl] for b in lat]) for lvl in range(len(lat[0]))]
    prob, recon = np.concatenate(probs), np.concatenate(recons)
    return (subject_rows(model_name, split, prob, recon, nsd_tolerance_mm=nsd_tolerance_mm),
            latent_rows(model_name, split, latents))
