"""What the Shapes and Latent pages compute with a checkpoint (the evaluation stores metrics, not volumes):
one subject's reconstruction, reconstructions from each prefix of the hierarchy, the classifier over a
2D top latent, class-mean shapes and the walk from healthy to HCM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shapetune.data.dataset import PreparedDataset
from shapetune.data.template import MYOCARDIUM
from shapetune.evaluation import navigation
from shapetune.evaluation.meshes import Mesh, surface_mesh, with_distance_to, with_wall_thickness


@dataclass
class SubjectVolumes:
    subject: str
    label: int
    masks: np.ndarray  # [P, D, H, W] binary: the myocardium at ED and ES, or a table cohort's structure per phase
    spacing: float
    phases: tuple[str, ...] = ("ed", "es")
    cardiac: bool = True  # the LV template frame: wall thickness and the cardiac slice names apply
    class_names: tuple[str, str] = ("healthy", "HCM")


def load_subject(data: str, subject: str) -> SubjectVolumes:
    """One subject's masks (one per phase) from a prepared dataset."""
    ds = PreparedDataset(data)
    rows = ds.manifest[ds.manifest.subject == subject]
    if rows.empty:
        raise KeyError(f"{data}: no subject {subject!r}")
    r = rows.iloc[0]
    masks = (np.asarray(ds.masks[int(r["index"])]) == MYOCARDIUM).astype(np.uint8)
    names = ds.class_names
    return SubjectVolumes(subject, int(r["label"]), masks, ds.grid.spacing, ds.phases, ds.is_cardiac,
                          (names[0], names[1]))


@torch.no_grad()
def reconstruct(model, masks: np.ndarray) -> tuple[np.ndarray, float]:
    """Binary reconstruction ``[2, D, H, W]`` and p(HCM) of one subject."""
    out = model(torch.from_numpy(masks[None]).float())
    return (out.logits[0] > 0).numpy().astype(np.uint8), float(torch.sigmoid(out.cls_logit.float())[0])


@torch.no_grad()
def prefix_reconstructions(model, masks: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Reconstructions reading only the top k levels from the input (the rest follow the prior means),
    k = 1 .. L; a flat VAE has a single entry."""
    x = torch.from_numpy(masks[None]).float()
    levels = getattr(getattr(model, "cfg", None), "levels", 1)
    if not hasattr(model, "decode_from_top") or levels == 1:
        return [("z_0 (all)", (model(x).logits[0] > 0).numpy().astype(np.uint8))]
    out = []
    for k in range(1, levels + 1):
        zs = [lv.z for lv in model.encode(x, n_levels=k, sample=False)]
        read = ", ".join(f"z_{i}" for i in range(levels - 1, levels - 1 - k, -1))
        out.append((read, (model.decode(zs)[0] > 0).numpy().astype(np.uint8)))
    return out


@torch.no_grad()
def boundary_grid(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p(HCM) of the latent classifier over a grid of 2D top latents (``len(y) x len(x)``)."""
    xx, yy = np.meshgrid(x, y)
    z = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32))
    return torch.sigmoid(model.classify(z).float()).numpy().reshape(len(y), len(x))


def class_means(model, levels: list[np.ndarray], labels: np.ndarray, spacing: float,
                wall_thickness: bool = True) -> dict[int, dict]:
    """Per class: the decoded mean shape and (the LV) its wall-thickness map (thickness mm, apex->base, angle
    deg)."""
    out = {}
    for c, vol in navigation.class_mean_shapes(model, levels, labels).items():
        out[c] = {"volume": vol}
        if wall_thickness:
            t, zeta, alpha = navigation.thickness_map(vol[0], spacing)
            out[c].update(thickness=t, zeta=zeta, alpha=alpha)
    return out


def latent_walk(model, levels: list[np.ndarray], labels: np.ndarray, subject: int, steps: int = 8):
    """Decoded volumes ``[steps+1, 2, D, H, W]`` and p(HCM) along the subject's walk towards the other class;
    the steps together cover 1.5x the distance between the class means of the top latent."""
    top = levels[-1]
    gap = float(np.linalg.norm(top[labels == 1].mean(0) - top[labels == 0].mean(0))) if len(set(labels)) == 2 else 1.0
    path, probs = navigation.walk(model, torch.tensor(top[subject]), steps, 1.5 * gap / steps)
    return navigation.decode_path(model, path, [z[subject] for z in levels[:-1]]), probs



def phase_meshes(vol: np.ndarray, spacing: float, reference: np.ndarray | None = None,
                 wall_thickness: bool = True) -> list[Mesh]:
    """One surface mesh per phase of a ``[P, D, H, W]`` shape, with (the LV myocardium) the wall thickness (mm) at
    every vertex; with a ``reference`` shape, also the signed distance (mm) to its surface.

    Raises:
        MeshError: a phase with no surface (an empty decoded shape).
    """
    out = []
    for p in range(vol.shape[0]):
        m = surface_mesh(vol[p], spacing)
        if wall_thickness:
            m = with_wall_thickness(m, vol[p], spacing)
        if reference is not None:
            with_distance_to(m, reference[p], spacing)
        out.append(m)
    return out
