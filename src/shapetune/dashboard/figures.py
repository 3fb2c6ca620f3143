"""Figures of the dashboard (plotly where interaction helps, matplotlib for slice mosaics); no Streamlit here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CLASS_NAMES = {0: "healthy", 1: "HCM"}
CLASS_COLOURS = {"healthy": "#1f77b4", "HCM": "#d62728"}
SPLIT_SYMBOLS = {"imperial_test": "circle", "acdc_test": "diamond", "acdc_hard": "square"}
PLANES = ("short axis", "long axis 1", "long axis 2")  # axis 0 runs apex -> base


def parallel_coordinates(trials: pd.DataFrame, params: list[str], objective: str) -> go.Figure:
    """One line per trial through its parameters, ending on the objective (colour = objective)."""
    dims = []
    for p in [*params, objective]:
        v = trials[p]
        label = p.removeprefix("param:")
        if pd.api.types.is_numeric_dtype(v):
            vals = v.astype(float)
            log = label.endswith(("lambda_kl", "lr", "weight_decay")) and (vals > 0).all()
            dims.append(dict(label=f"log10 {label}" if log else label, values=np.log10(vals) if log else vals))
        else:  # categorical strings: one tick per category
            cats = sorted(v.dropna().astype(str).unique())
            codes = v.astype(str).map({c: i for i, c in enumerate(cats)})
            dims.append(dict(label=label, values=codes, tickvals=list(range(len(cats))), ticktext=cats))
    colour = trials[objective].astype(float)
    fig = go.Figure(go.Parcoords(line=dict(color=colour, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title=objective)), dimensions=dims))
    fig.update_layout(margin=dict(l=60, r=40, t=40, b=20), height=420)
    return fig


def latent_scatter(df: pd.DataFrame, x: str, y: str, title: str, boundary: tuple | None = None,
                   class_names: dict[int, str] | None = None, split_names: dict[str, str] | None = None) -> go.Figure:
    """Subjects in a 2D latent view: colour = diagnosis, symbol = split, misclassified ringed in black;
    ``boundary`` = (xs, ys, p) draws the classifier's p(positive class) and its 0.5 contour; ``class_names``
    label -> name (default healthy / HCM); ``split_names`` split -> the name its legend entries show."""
    names = class_names or CLASS_NAMES
    colours = {names[k]: CLASS_COLOURS[v] for k, v in CLASS_NAMES.items() if k in names}
    p_label = f"p({names.get(1, 'HCM')})"
    fig = go.Figure()
    if boundary is not None:
        xs, ys, p = boundary
        fig.add_trace(go.Contour(x=xs, y=ys, z=p, colorscale="RdBu_r", opacity=0.35, zmin=0, zmax=1,
                                 contours=dict(start=0, end=1, size=0.1), showscale=True, line_width=0,
                                 colorbar=dict(title=p_label, len=0.6), hoverinfo="skip", name=p_label))
        fig.add_trace(go.Contour(x=xs, y=ys, z=p, contours=dict(start=0.5, end=0.5, size=1, coloring="lines"),
                                 line=dict(color="black", width=2, dash="dash"), showscale=False, hoverinfo="skip",
                                 name="decision boundary (p = 0.5)", showlegend=True))
    for split, g_split in df.groupby("split", sort=False):
        shown = (split_names or {}).get(split, split.replace("_", " "))
        for label, g in g_split.groupby("label", sort=True):
            name = names.get(int(label), str(label))
            wrong = g.correct == 0
            fig.add_trace(go.Scatter(
                x=g[x], y=g[y], mode="markers", name=f"{name} · {shown}",
                marker=dict(color=colours.get(name, "grey"), symbol=SPLIT_SYMBOLS.get(split, "square"),
                            size=np.where(wrong, 13, 8), line=dict(color="black", width=np.where(wrong, 2.5, 0.5))),
                customdata=np.stack([g.subject, g.split, g.prob_hcm.round(3), np.where(wrong, "misclassified", "")],
                                    axis=1),
                hovertemplate="%{customdata[0]} (%{customdata[1]})<br>" + p_label
                              + " %{customdata[2]}<br>%{customdata[3]}<extra></extra>"))
    fig.update_layout(title=title, height=560, legend=dict(orientation="h", y=-0.15), xaxis_title=x, yaxis_title=y,
                      margin=dict(l=40, r=20, t=50, b=40), clickmode="event+select")
    return fig


def _overlay(ref: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """RGB: agreement light grey, missed by the reconstruction red, added by it blue."""
    img = np.zeros((*ref.shape, 3))
    img[(ref > 0) & (rec > 0)] = (0.85, 0.85, 0.85)
    img[(ref > 0) & (rec == 0)] = (0.9, 0.1, 0.1)
    img[(ref == 0) & (rec > 0)] = (0.15, 0.45, 1.0)
    return img


def plane(vol: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice, oriented for display (rows up)."""
    return np.take(vol, index, axis=axis).T[::-1]


def slices_figure(ref: np.ndarray, rec: np.ndarray, centre: tuple[int, int, int], title: str = "",
                  phases: list[str] | tuple[str, ...] = ("ED", "ES")):
    """Input vs reconstruction, one row per phase, in three orthogonal planes with the error overlay (matplotlib)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(phases), 3, figsize=(8, 2.7 * len(phases) + 0.3 * (len(phases) == 1)),
                             squeeze=False)
    for r, phase in enumerate(phases):
        for a, name in enumerate(PLANES):
            ax = axes[r, a]
            ax.imshow(_overlay(plane(ref[r], a, centre[a]), plane(rec[r], a, centre[a])), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{phase} · {name} (slice {centre[a]})", fontsize=8)
    fig.legend(handles=[Patch(color=(0.85, 0.85, 0.85), label="both"), Patch(color=(0.9, 0.1, 0.1), label="missed"),
                        Patch(color=(0.15, 0.45, 1.0), label="added")], loc="lower center", ncol=3, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def mosaic(volumes: list[tuple[str, np.ndarray]], centre: tuple[int, int, int], ref: np.ndarray | None = None,
           rows: tuple[str, str] = ("ED short axis", "ED long axis")):
    """One column per volume (``[P, D, H, W]``): the first phase's slices across axes 0 and 1 (the LV: short and
    long axis, the default ``rows`` labels); overlay against ``ref``."""
    import matplotlib.pyplot as plt

    n = len(volumes)
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 4.6), squeeze=False)
    for j, (title, vol) in enumerate(volumes):
        for r, axis in enumerate((0, 1)):
            a, b = plane(vol[0], axis, centre[axis]), None if ref is None else plane(ref[0], axis, centre[axis])
            img = _overlay(b, a) if b is not None else a
            axes[r, j].imshow(img, cmap="gray", interpolation="nearest")
            axes[r, j].set_xticks([]), axes[r, j].set_yticks([])
        axes[0, j].set_title(title, fontsize=8)
    axes[0, 0].set_ylabel(rows[0], fontsize=8), axes[1, 0].set_ylabel(rows[1], fontsize=8)
    fig.tight_layout()
    return fig


def thickness_bullseye(means: dict[int, dict]) -> go.Figure:
    """Wall thickness of each class's decoded mean shape as a bull's-eye: apex at the centre, base outside,
    angle around the LV; one shared colour scale."""
    classes = sorted(means)
    vmax = max([float(np.percentile(m["thickness"], 99)) for m in means.values() if len(m["thickness"])] + [1.0])
    fig = make_subplots(rows=1, cols=len(classes), specs=[[{"type": "polar"}] * len(classes)],
                        subplot_titles=[f"mean {CLASS_NAMES[c]} shape (ED)" for c in classes])
    for j, c in enumerate(classes):
        m = means[c]
        fig.add_trace(go.Scatterpolar(
            r=m["zeta"], theta=m["alpha"], mode="markers", name=CLASS_NAMES[c],
            marker=dict(color=m["thickness"], cmin=0, cmax=vmax, colorscale="Magma", size=5,
                        showscale=j == len(classes) - 1, colorbar=dict(title="wall (mm)")),
            hovertemplate="angle %{theta:.0f}°<br>apex→base %{r:.2f}<br>%{marker.color:.1f} mm<extra></extra>"),
            row=1, col=j + 1)
    fig.update_polars(radialaxis=dict(range=[0, 1], showticklabels=False), angularaxis=dict(direction="clockwise"))
    fig.update_layout(height=380, showlegend=False, margin=dict(l=30, r=30, t=60, b=20))
    return fig


MESH_COLOURS = {"wall_thickness_mm": ("Magma", "wall (mm)"), "distance_mm": ("RdBu_r", "distance (mm)"),
                "uncertainty": ("Viridis", "uncertainty")}


def mesh_figure(panels: list[tuple[str, object]], value: str, vmin: float, vmax: float,
                ghosts: list[object | None] | None = None, height: int = 420) -> go.Figure:
    """Surface meshes side by side (one 3D scene each), coloured by the per-vertex ``value`` on one shared scale.

    Args:
        panels: (title, :class:`shapetune.evaluation.meshes.Mesh`) per scene.
        value: the per-vertex value to colour by (``wall_thickness_mm``, ``distance_mm``, ``uncertainty``).
        vmin, vmax: the colour scale's range, the same in every scene.
        ghosts: per scene, a mesh drawn translucent grey behind it (e.g. the input under its reconstruction).
    """
    colorscale, label = MESH_COLOURS.get(value, ("Viridis", value))
    fig = make_subplots(rows=1, cols=len(panels), specs=[[{"type": "scene"}] * len(panels)],
                        subplot_titles=[t for t, _ in panels], horizontal_spacing=0.01)
    for j, (title, m) in enumerate(panels):
        ghost = ghosts[j] if ghosts else None
        if ghost is not None:
            fig.add_trace(_mesh3d(ghost, color="lightgrey", opacity=0.25, name="reference", hoverinfo="skip"),
                          row=1, col=j + 1)
        fig.add_trace(_mesh3d(m, intensity=m.values[value], colorscale=colorscale, cmin=vmin, cmax=vmax,
                              showscale=j == len(panels) - 1, colorbar=dict(title=label, len=0.8), name=title,
                              hovertemplate=f"{label} %{{intensity:.2f}}<extra>{title}</extra>"),
                      row=1, col=j + 1)
    camera = dict(eye=dict(x=1.6, y=1.2, z=0.9))
    for j in range(len(panels)):
        key = "scene" if j == 0 else f"scene{j + 1}"
        fig.layout[key].update(aspectmode="data", camera=camera, xaxis_visible=False, yaxis_visible=False,
                               zaxis_visible=False)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=40, b=0), showlegend=False)
    return fig


def _mesh3d(m, **kw) -> go.Mesh3d:
    # The mesh's axis 0 runs apex -> base: shown as the vertical (z) axis. Swapping two axes mirrors the mesh, so
    # two corners of every triangle swap too (its normal keeps pointing outwards for the lighting).
    v, f = m.verts, m.faces
    return go.Mesh3d(x=v[:, 2], y=v[:, 1], z=v[:, 0], i=f[:, 0], j=f[:, 2], k=f[:, 1], flatshading=False,
                     lighting=dict(ambient=0.5, diffuse=0.7, specular=0.2), **kw)
