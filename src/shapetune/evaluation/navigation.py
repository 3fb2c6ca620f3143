"""Latent navigation: walk a subject's top latent along the classifier's gradient, class-mean shapes, wall thickness.

The walk moves z_L in fixed-length steps along the gradient of the classifier's logit (towards HCM for a
healthy subject, away for an HCM one) and decodes every step with the subject's own lower levels kept, so
the path shows the remodeling the model ties to the diagnosis on that subject's anatomy. Class-mean shapes
decode the class mean of every level. (Decoding z_L alone through the prior means, ``decode_from_top``,
is also available, but with the small KL weights that reconstruct well the priors of the lower levels
stay far from the posteriors and such decodings are nearly empty: seen on the demo models.)
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import binary_fill_holes

from shapetune.data.indices import wall_thickness_points
from shapetune.data.template import CAVITY, MYOCARDIUM


def latent_levels(latents: pd.DataFrame) -> list[np.ndarray]:
    """Per-level posterior means (bottom -> top) from the evaluation's latent table of one model and split;
    empty for a model without latents (a baseline)."""
    zcols = [c for c in latents.columns if re.fullmatch(r"z\d+_\d+", c) and latents[c].notna().all()]
    if not zcols:
        return []
    n_levels = max(int(c[1:].split("_")[0]) for c in zcols) + 1
    return [latents[sorted((c for c in zcols if c.startswith(f"z{lvl}_")), key=lambda c: int(c.split("_")[1]))]
            .to_numpy(np.float32) for lvl in range(n_levels)]


def decode_levels(model, levels: list[torch.Tensor]) -> torch.Tensor:
    """Volume logits from latents of every level (bottom -> top; a VAE has one level)."""
    return model.decode(levels) if hasattr(model, "decode_from_top") else model.decode(levels[-1])


def walk(model, z_top: torch.Tensor, steps: int = 8, step_size: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Latents along the path (``[steps + 1, d]``) and the HCM probability at each, from ``z_top`` (``[d]``)."""
    model.eval()
    z = z_top.detach().clone().float()[None]
    with torch.no_grad():
        direction = -1.0 if torch.sigmoid(model.classify(z)).item() > 0.5 else 1.0
    path, probs = [z.clone()], []
    for _ in range(steps):
        z.requires_grad_(True)
        logit = model.classify(z).sum()
        (g,) = torch.autograd.grad(logit, z)
        with torch.no_grad():
            probs.append(torch.sigmoid(logit).item())
            z = z + direction * step_size * g / g.norm().clamp(min=1e-8)
        path.append(z.detach().clone())
    with torch.no_grad():
        probs.append(torch.sigmoid(model.classify(z)).item())
    return torch.cat(path).numpy(), np.array(probs)


@torch.no_grad()
def decode_path(model, path: np.ndarray, lower: list[np.ndarray] = ()) -> np.ndarray:
    """Binary ``[steps, 2, D, H, W]`` volumes along a top-latent path, the lower levels held at ``lower``."""
    top = torch.from_numpy(np.asarray(path, dtype=np.float32))
    levels = [torch.from_numpy(np.array(z, dtype=np.float32)).reshape(1, -1).expand(len(top), -1) for z in lower]
    return (decode_levels(model, [*levels, top]) > 0).numpy().astype(np.uint8)


def labels_from_myocardium(myo: np.ndarray) -> np.ndarray:
    """Template labels (myocardium, cavity) from a myocardium mask: the cavity fills each short-axis ring."""
    out = np.where(myo > 0, MYOCARDIUM, 0).astype(np.uint8)
    for k in range(myo.shape[0]):  # axis 0 is the long axis: slices are short-axis rings
        filled = binary_fill_holes(myo[k] > 0)
        out[k][filled & (myo[k] == 0)] = CAVITY
    return out


def thickness_map(myo_ed: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thickness mm, zeta apex->base, alpha deg) at every epicardial point of a decoded ED myocardium."""
    return wall_thickness_points(labels_from_myocardium(myo_ed), spacing)


@torch.no_grad()
def class_mean_shapes(model, levels: list[np.ndarray], labels: np.ndarray) -> dict[int, np.ndarray]:
    """Decode each class's mean latent (every level): ``{0: healthy, 1: HCM}`` binary ``[2, D, H, W]`` volumes."""
    out = {}
    for c in (0, 1):
        if np.any(labels == c):
            means = [torch.from_numpy(z[labels == c].mean(axis=0, keepdims=True).astype(np.float32)) for z in levels]
            out[c] = (decode_levels(model, means) > 0).numpy()[0].astype(np.uint8)
    return out


def navigation_figure(model, levels: list[np.ndarray], labels: np.ndarray, subject: int, spacing: float,
                      path_png, means_png, wall_thickness: bool = True) -> None:
    """Two PNGs: the decoded walk of one subject (mid short-axis slice, ED) and the class-mean shapes with
    their wall-thickness maps (thickness over the unrolled wall: angle around the LV vs apex->base); without
    ``wall_thickness`` (anatomy other than the LV) the class means alone, first phase, central slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = levels[-1]
    gap = float(np.linalg.norm(top[labels == 1].mean(0) - top[labels == 0].mean(0))) if len(set(labels)) == 2 else 1.0
    steps = 8  # together the steps cover 1.5x the distance between the class means of z_L
    path, probs = walk(model, torch.tensor(top[subject], dtype=torch.float32), steps, 1.5 * gap / steps)
    vols = decode_path(model, path, [z[subject] for z in levels[:-1]])
    k = vols.shape[2] // 2
    fig, ax = plt.subplots(1, len(vols), figsize=(1.6 * len(vols), 1.9))
    for i, a in enumerate(ax):
        a.imshow(vols[i, 0, k].T, origin="lower", cmap="gray"), a.set_axis_off()
        a.set_title(f"p({'HCM' if wall_thickness else 'label 1'}) {probs[i]:.2f}", fontsize=7)
    fig.suptitle("walk along the classifier gradient (" + ("ED, mid short-axis slice" if wall_thickness
                                                           else "first phase, central slice") + ")", fontsize=8)
    fig.tight_layout(), fig.savefig(path_png, dpi=110), plt.close(fig)
    means = class_mean_shapes(model, levels, labels)
    if not wall_thickness:
        fig, ax = plt.subplots(1, len(means), figsize=(2.4 * len(means), 2.6), squeeze=False)
        for j, (c, v) in enumerate(means.items()):
            ax[0, j].imshow(v[0, k].T, origin="lower", cmap="gray"), ax[0, j].set_axis_off()
            ax[0, j].set_title(f"mean of class {c}", fontsize=8)
        fig.tight_layout(), fig.savefig(means_png, dpi=110), plt.close(fig)
        return
    fig, ax = plt.subplots(1, 2 * len(means), figsize=(4.2 * len(means), 2.8))
    vmax = 1.0
    maps = {c: thickness_map(v[0], spacing) for c, v in means.items()}
    for t, _, _ in maps.values():
        vmax = max(vmax, float(np.percentile(t, 99)) if len(t) else vmax)
    for j, (c, v) in enumerate(means.items()):
        name = "HCM" if c else "healthy"
        ax[2 * j].imshow(v[0, k].T, origin="lower", cmap="gray"), ax[2 * j].set_axis_off()
        ax[2 * j].set_title(f"mean {name} (ED)", fontsize=8)
        t, zeta, alpha = maps[c]
        sc = ax[2 * j + 1].scatter(alpha, zeta, c=t, s=6, cmap="magma", vmin=0, vmax=vmax)
        ax[2 * j + 1].set_xlabel("angle (deg)", fontsize=7), ax[2 * j + 1].set_ylabel("apex -> base", fontsize=7)
        ax[2 * j + 1].set_title(f"{name} wall thickness (mm)", fontsize=8)
    fig.colorbar(sc, ax=ax[-1])
    fig.tight_layout(), fig.savefig(means_png, dpi=110), plt.close(fig)
