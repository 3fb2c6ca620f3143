"""Score one conditional-model checkpoint on one fold's test subjects, for every view subset.

Prediction is the prior-mean path (what a clinician would get); uncertainty comes from ``samples`` draws
of the conditional prior: the voxel-wise variance of the predicted probabilities. Per subject and subset:
DC, HD (mm), HD95, ASSD, RVD, the relative error of the head's length, width and height, the mean
variance in the region where prediction or truth has skull (within two voxels), and how well variance
ranks the wrong voxels there (AUROC). Maps are kept, compressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import binary_dilation
from sklearn.metrics import roc_auc_score

from shapetune.data.fetal.folds import VIEW_SUBSETS
from shapetune.evaluation.surface import batch_metrics
from shapetune.io import atomic_path
from shapetune.training.checkpoints import load_model


def _region(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return binary_dilation(pred | truth, iterations=2)


def uncertainty_stats(var: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean variance near the skull, and the AUROC of variance for the voxels predicted wrong there."""
    region = _region(pred, truth)
    wrong = (pred != truth)[region]
    v = var[region]
    auc = float(roc_auc_score(wrong, v)) if 0 < wrong.sum() < wrong.size and v.std() > 0 else float("nan")
    return float(v.mean()), auc


def extents(mask: np.ndarray) -> np.ndarray:
    """The mask's length in voxels along each axis (0.5th to 99.5th percentile of its voxels, so a stray
    voxel does not count); NaN when empty."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return np.full(mask.ndim, np.nan)
    lo, hi = np.percentile(idx, [0.5, 99.5], axis=0)
    return hi - lo + 1


def size_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Relative error of the predicted head's length, width and height (skull frame: occipito-frontal,
    biparietal, base-to-vertex): the biometry a sonographer reads, and what thin-band Dice hinges on."""
    e = extents(pred) / extents(truth) - 1.0
    return {"ofd_err": float(e[0]), "bpd_err": float(e[1]), "height_err": float(e[2])}


@torch.no_grad()
def score_fold(checkpoint: str | Path, planes: np.ndarray, truth: np.ndarray, subjects: list[str], spacing: float,
               samples: int = 8, seed: int = 0, batch_size: int = 7,
               device: str = "cpu") -> tuple[pd.DataFrame, dict[str, dict]]:
    """Rows per subject x view subset, and per subset the arrays to keep (prediction, variance maps);
    the network runs on ``device``, the surface metrics on the CPU."""
    model, cfg, _ = load_model(checkpoint)
    model = model.to(device)
    if truth.shape[-1] != cfg.model.grid:
        raise ValueError(f"{checkpoint}: model grid {cfg.model.grid}^3 does not match the data ({truth.shape[-1]}^3)")
    torch.manual_seed(seed)  # the uncertainty samples, so a re-evaluation reproduces the maps
    rows, maps = [], {}
    for subset, present in VIEW_SUBSETS.items():
        preds, variances = [], []
        for s in range(0, len(planes), batch_size):
            p = torch.from_numpy(np.asarray(planes[s:s + batch_size], dtype=np.float32)).to(device)
            pres = torch.tensor([present] * len(p), dtype=torch.float32, device=device)
            preds.append((model.predict(p, pres)[:, 0] > 0).cpu().numpy())
            if samples > 1 and model.variational:
                probs = torch.stack([torch.sigmoid(model.predict(p, pres, sample=True)[:, 0]) for _ in range(samples)])
                variances.append(probs.var(0).cpu().numpy())
            else:
                variances.append(np.zeros((len(p), *truth.shape[-3:]), dtype=np.float32))
        pred, var = np.concatenate(preds), np.concatenate(variances)
        gt = truth[:, 0].astype(bool)
        metrics = batch_metrics(pred, gt, (spacing,) * 3)
        for i, m in enumerate(metrics):
            unc, auc = uncertainty_stats(var[i], pred[i], gt[i]) if model.variational else (float("nan"),) * 2
            rows.append({"subject": subjects[i], "views": subset, "n_views": sum(present), **m.as_dict(),
                         **size_errors(pred[i], gt[i]),
                         "uncertainty": unc, "uncertainty_auc": auc})
        maps[subset] = {"pred": np.packbits(pred, axis=-1),
                        "var": np.round(np.clip(var, 0, 0.25) * 1020).astype(np.uint8)}
    return pd.DataFrame(rows), maps


def save_maps(path: Path, maps: dict[str, dict], subjects: list[str]) -> None:
    """Predictions (bit-packed) and variance maps (uint8, variance x 1020, 0.25 -> 255) of one fold."""
    arrays = {f"{k}_{subset}": v for subset, d in maps.items() for k, v in d.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:  # a unique name: two scorers of one fold never share it
        np.savez_compressed(tmp, subjects=np.array(subjects), **arrays)


def load_maps(path: Path, subset: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Subjects, boolean predictions ``[N, G, G, G]`` and variance ``[N, G, G, G]`` (float) of one subset."""
    with np.load(path) as z:
        pred = np.unpackbits(z[f"pred_{subset}"], axis=-1).astype(bool)
        return list(z["subjects"]), pred, z[f"var_{subset}"].astype(np.float32) / 1020.0
