"""Fetal skull study: the table by view subset, metrics per model, reconstructions with uncertainty."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from shapetune.dashboard import common, studies
from shapetune.dashboard.figures import mesh_figure
from shapetune.dashboard import experiments as ex
from shapetune.data.fetal.folds import VIEW_SUBSETS
from shapetune.data.fetal.planes import VIEWS
from shapetune.evaluation.fetal.figures import SLICE_AXES, mid_slice
from shapetune.evaluation.fetal.study import REFERENCE, SIZE_ERRORS, SUBSET_LABELS, mean_sd
from shapetune.evaluation.fetal.view_effects import effects_markdown, view_effects
from shapetune.evaluation.meshes import MESH_FORMATS, MeshError, mesh_bytes, sample, surface_mesh, with_distance_to


@st.cache_data(show_spinner="reading the study ...", max_entries=16)
def _tables(path: str, name: str, stamp: tuple):
    return studies.tables(studies.Study(name, studies.Path(path)))


@st.cache_data(show_spinner="loading the case ...", max_entries=32)
def _case(path: str, name: str, model: str, fold: int, subset: str, subject: str, stamp: tuple):
    return studies.case(studies.Study(name, studies.Path(path)), model, fold, subset, subject)


@st.cache_data(show_spinner="meshing ...", max_entries=32)
def _skull(path: str, name: str, model: str, fold: int, subset: str, subject: str, stamp: tuple):
    """The predicted skull's mesh (signed distance to the truth and, for a sampling model, the uncertainty at every
    vertex) and the truth's; None when the prediction is empty."""
    c = _case(path, name, model, fold, subset, subject, stamp)
    sp = float(c["spacing"])
    try:
        pred = with_distance_to(surface_mesh(c["pred"], sp), c["truth"], sp)
        truth = surface_mesh(c["truth"], sp)
    except MeshError:
        return None
    if np.any(c["var"]):
        pred.values["uncertainty"] = sample(pred, c["var"], sp)
    return pred, truth


@st.cache_data(show_spinner=False, max_entries=16)
def _effects(path: str, name: str, stamp: tuple):
    return view_effects(_tables(path, name, stamp)[1])


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def metric_bars(table):
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Dice", "Hausdorff (mm)", "|RVD|"))
    for i, model in enumerate(dict.fromkeys(table.model)):
        g = table[table.model == model].set_index("views").reindex(list(VIEW_SUBSETS))
        for c, m in enumerate(("dice", "hd", "abs_rvd"), start=1):
            fig.add_bar(x=[SUBSET_LABELS[s].split(" (")[0] for s in g.index], y=g[f"{m}_mean"], name=model,
                        error_y=dict(type="data", array=g[f"{m}_sd"].fillna(0)), legendgroup=model,
                        marker_color=PALETTE[i % len(PALETTE)],
                        showlegend=c == 1, row=1, col=c)
    fig.update_layout(barmode="group", height=330, margin=dict(l=40, r=20, t=40, b=30))
    return fig


def case_figure(c: dict, overlay: bool):
    """Truth (grey), prediction (green contour) and uncertainty (heat) in the three orthogonal mid-slices."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(SLICE_AXES), horizontal_spacing=0.03)
    vmax = max(1e-3, float(c["var"].max()))
    for col, view in enumerate(SLICE_AXES, start=1):
        truth = mid_slice(c["truth"].astype(float), view)
        pred = mid_slice(c["pred"].astype(float), view)
        fig.add_heatmap(z=truth, colorscale="Greys", showscale=False, zmin=0, zmax=1.5, row=1, col=col,
                        hovertemplate="truth %{z}<extra></extra>")
        fig.add_contour(z=pred, contours=dict(start=0.5, end=0.5, coloring="lines"), line=dict(width=2),
                        colorscale=[[0, "#2ca02c"], [1, "#2ca02c"]],
                        showscale=False, row=1, col=col, name="prediction", hoverinfo="skip")
        if overlay:
            var = mid_slice(c["var"], view)
            fig.add_heatmap(z=np.where(var > 0.05 * vmax, var, np.nan), colorscale="Magma", zmin=0, zmax=vmax,
                            opacity=0.75, showscale=col == 3, colorbar=dict(title="variance"), row=1, col=col,
                            hovertemplate="variance %{z:.4f}<extra></extra>")
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def planes_figure(planes: np.ndarray, present: tuple[int, int, int]):
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{v}{'' if p else ' (not acquired)'}"
                                                        for v, p in zip(VIEWS, present, strict=True)])
    for i in range(3):
        fig.add_heatmap(z=planes[i].T * (1.0 if present[i] else 0.25), colorscale="Greys", reversescale=True,
                        zmin=0, zmax=1, showscale=False, row=1, col=i + 1, hoverinfo="skip")
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    fig.update_layout(height=230, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def render() -> None:
    st.title("Fetal skull study")
    roots = [ex.local_root(p) for p in common.experiment_paths()]
    found = studies.discover_studies(roots)
    if not found:
        st.info("No fetal-skull study here. Run `shapetune study --data PREPARED --out DIR` (or `shapetune evaluate` "
                "on a fetal sweep) and open the dashboard on that folder.")
        return
    names = [s.name for s in found]
    study = found[names.index(st.selectbox("Study", names))]
    stamp = studies.stamp(study)
    table, per_case = _tables(str(study.path), study.name, stamp)
    st.subheader("Reconstruction by view subset (mean ± sd over folds)")
    rows = []
    for _, r in table.iterrows():
        size = {}
        if "abs_bpd_err_mean" in r:  # studies scored before the size errors existed lack them
            size = {"|size error| length / width / height": " / ".join(
                f"{100 * r[f'abs_{c}_mean']:.1f}" for c in SIZE_ERRORS) + " %"}
        rows.append({"model": r.model, "views": SUBSET_LABELS[r.views], "DC": mean_sd(r, "dice", ".3f"),
                     "HD mm": mean_sd(r, "hd", ".2f"), "RVD": mean_sd(r, "rvd", ".3f"), **size,
                     "uncertainty": mean_sd(r, "uncertainty", ".4f"), "folds": int(r.folds)})
    st.dataframe(rows, hide_index=True, width="stretch")
    with st.expander("Reference study (real 3D ultrasound, 96³ at 0.5 mm)"):
        st.dataframe([{"model": m, **{SUBSET_LABELS[s]: " / ".join(f"{x:g}" for x in v[s]) for s in VIEW_SUBSETS}}
                      for m, v in REFERENCE.items()], hide_index=True, width="stretch")
    st.plotly_chart(metric_bars(table), width="stretch")
    effects = _effects(str(study.path), study.name, stamp)
    lost = effects[(effects.kind == "loss") & (effects["from"] == "3v") & (effects["to"] == "1v")]
    if not lost.empty:
        st.caption("Dice lost from 3 views to 1 view, paired per test subject (95 % CI): " + ", ".join(
            f"{r.what} {r.mean:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]" for r in lost.itertuples()))
        with st.expander("View effects: Dice lost per model, and the difference between models"):
            st.markdown(effects_markdown(effects))
    st.subheader("A case")
    c1, c2, c3, c4 = st.columns(4)
    names = list(dict.fromkeys(per_case.model))
    sampled = set(per_case[per_case.uncertainty.notna()].model)  # open on a model whose samples make a map
    model = c1.selectbox("Model", names, index=next((i for i, m in enumerate(names) if m in sampled), 0))
    fold = c2.selectbox("Fold", sorted(per_case[per_case.model == model].fold.unique()))
    subset = c3.radio("Views", list(VIEW_SUBSETS), format_func=lambda s: SUBSET_LABELS[s].split(" (")[0],
                      horizontal=True)
    subjects = sorted(per_case[(per_case.model == model) & (per_case.fold == fold)].subject.unique())
    subject = c4.selectbox("Subject", subjects)
    c = _case(str(study.path), study.name, model, int(fold), subset, subject, stamp)
    row = per_case[(per_case.model == model) & (per_case.fold == fold) & (per_case.views == subset)
                   & (per_case.subject == subject)].iloc[0]
    ga = (f"{c['ga_weeks']:.1f} weeks, cephalic index {c['cephalic_index']:.0f} · "
          if c.get("ga_weeks") == c.get("ga_weeks") and c.get("ga_weeks") is not None else "")
    size = (f" · size error length {100 * row.ofd_err:+.1f} %, width {100 * row.bpd_err:+.1f} %, height "
            f"{100 * row.height_err:+.1f} %" if "bpd_err" in row else "")
    unc = (f"mean variance near the skull {row.uncertainty:.4f}" if row.uncertainty == row.uncertainty
           else "deterministic model: no uncertainty map")
    st.caption(f"{ga}DC {row.dice:.3f} · HD {row.hd:.2f} mm · RVD {row.rvd:+.3f}{size} · {unc}")
    st.plotly_chart(planes_figure(c["planes"], VIEW_SUBSETS[subset]), width="stretch")
    flat, solid = st.tabs(["slices", "3D surfaces"])
    with flat:
        overlay = st.toggle("Uncertainty overlay", value=True,
                            help="Voxel-wise variance of samples from the conditional prior")
        st.plotly_chart(case_figure(c, overlay), width="stretch")
    with solid:
        _skull_3d(_skull(str(study.path), study.name, model, int(fold), subset, subject, stamp), subject)
    st.subheader("Uncertainty by view subset")
    fig = go.Figure()
    for m in dict.fromkeys(per_case.model):
        d = per_case[per_case.model == m]
        fig.add_box(x=d.views.map(lambda s: SUBSET_LABELS[s].split(" (")[0]), y=d.uncertainty, name=m)
    fig.update_layout(boxmode="group", height=300, yaxis_title="mean variance near the skull",
                      margin=dict(l=40, r=20, t=20, b=30))
    st.plotly_chart(fig, width="stretch")


def _skull_3d(meshes, subject: str) -> None:
    """The predicted skull in 3D: distance to the truth (the truth translucent behind it) and the uncertainty."""
    if meshes is None:
        st.info("The prediction is empty: no surface to draw.")
        return
    pred, truth = meshes
    span = max(float(np.percentile(np.abs(pred.values["distance_mm"]), 99)), 1e-3)
    st.caption("Predicted skull: signed distance to the true surface in mm (red outside, blue inside; the truth in "
               "translucent grey)" + (" and the variance of prior samples at every vertex." if "uncertainty" in
                                       pred.values else "; a deterministic model has no uncertainty."))
    cols = st.columns(2 if "uncertainty" in pred.values else 1)
    cols[0].plotly_chart(mesh_figure([("distance to the truth", pred)], "distance_mm", -span, span, ghosts=[truth],
                                     height=460), width="stretch")
    if "uncertainty" in pred.values:
        top = max(float(np.percentile(pred.values["uncertainty"], 99)), 1e-4)
        cols[1].plotly_chart(mesh_figure([("uncertainty", pred)], "uncertainty", 0.0, top, height=460),
                             width="stretch")
    c1, c2 = st.columns([1, 3])
    suffix = c1.radio("Format", list(MESH_FORMATS), horizontal=True, key="skull_fmt")
    c2.download_button("Download the predicted skull for ParaView", mesh_bytes(pred, suffix),
                       file_name=f"{subject}_predicted{suffix}", mime="application/octet-stream")


common.guard(render)
