"""Latent clusters: subjects in the top latent (or a stored 2D projection), by diagnosis and split."""

import numpy as np
import streamlit as st

from shapetune.dashboard import common
from shapetune.dashboard import experiments as ex
from shapetune.dashboard.decode import boundary_grid
from shapetune.dashboard.figures import latent_scatter
from shapetune.evaluation.navigation import latent_levels

PROJECTIONS = {"top": "top latent z_L", "pca": "PCA", "laplacian": "Laplacian eigenmaps", "tsne": "t-SNE"}


def open_in_shapes(model_label: str, split: str, subject: str) -> None:
    st.session_state["shapes_target"] = {"model": model_label, "split": split, "subject": subject}
    st.switch_page("views/shapes.py")


def render() -> None:
    st.title("Latent clusters")
    exps = common.selected_experiments()
    tables = common.evaluated_tables(exps)
    if tables is None:
        return
    subj, _, lat, info = tables
    label = st.selectbox("Model", list(dict.fromkeys(lat.model)))
    g = lat[lat.model == label]
    levels = latent_levels(g)  # none for a baseline without a latent
    top_level, dim = len(levels) - 1, (levels[-1].shape[1] if levels else 0)
    options = (["top"] if dim == 2 else []) + [p for p in ("pca", "laplacian", "tsne") if g[f"{p}_x"].notna().all()]
    proj = st.radio("View", options, format_func=PROJECTIONS.get, horizontal=True)
    if dim != 2:
        st.caption(f"The top latent has {dim} dimensions: shown through a stored 2D projection.")
    splits = st.multiselect("Splits", list(dict.fromkeys(g.split)), default=list(dict.fromkeys(g.split)))
    p = subj[subj.model == label][["split", "subject", "prob_hcm", "correct"]]
    df = g[g.split.isin(splits)].merge(p, on=["split", "subject"], how="left")
    df["correct"] = df.correct.fillna(1)
    x, y = (f"z{top_level}_0", f"z{top_level}_1") if proj == "top" else (f"{proj}_x", f"{proj}_y")
    boundary = None
    row = info[info.label == label].iloc[0]
    if proj == "top" and row.checkpoint:
        pad_x, pad_y = np.ptp(df[x]) * 0.15 + 1e-3, np.ptp(df[y]) * 0.15 + 1e-3
        xs = np.linspace(df[x].min() - pad_x, df[x].max() + pad_x, 120)
        ys = np.linspace(df[y].min() - pad_y, df[y].max() + pad_y, 120)
        boundary = (xs, ys, boundary_grid(common.model_of(row.checkpoint), xs, ys))
    wrong = df[df.correct == 0]
    title = f"{label}: {PROJECTIONS[proj]} · {len(df)} subjects · {len(wrong)} misclassified"
    exp = next((e for e in exps if e.name == row.experiment), None)
    names, split_names = (ex.class_names(exp) if exp is not None else None), ex.split_labels(subj)
    event = st.plotly_chart(latent_scatter(df, x, y, title, boundary, names, split_names), width="stretch",
                            on_select="rerun", selection_mode="points", key="latent_scatter")
    st.caption(f"Colour: diagnosis · circle: {split_names['imperial_test']}, diamond: ACDC · "
               "black ring: misclassified"
               + (" · dashed: the classifier's decision boundary (p = 0.5)" if boundary is not None else "")
               + ". Select a point to open it on the Shapes page.")
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event, "get") else []
    if points and row.checkpoint:
        cd = points[0].get("customdata") or []
        if len(cd) >= 2:
            open_in_shapes(label, cd[1], cd[0])
    if len(wrong):
        st.markdown("**Misclassified:** " + ", ".join(f"{r.subject} ({r.split}, p={r.prob_hcm:.2f})"
                                                      for r in wrong.itertuples()))
    if row.checkpoint:
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Subject", [f"{r.subject} · {r.split}" for r in df.itertuples()])
        if c2.button("Open on Shapes page") and pick:
            subject, split = pick.split(" · ")
            open_in_shapes(label, split, subject)
    else:
        st.caption("A baseline has no decoder: its subjects cannot be opened on the Shapes page.")


common.guard(render)
