"""Compare: two or more evaluated runs or baselines side by side, with CIs, paired tests, distributions and curves."""

import pandas as pd
import plotly.express as px
import streamlit as st

from shapetune.dashboard import common
from shapetune.dashboard import experiments as ex
from shapetune.evaluation.names import phases_of
from shapetune.evaluation.report import paired_table, seed_table, split_table

METRICS = {"dice": "Dice (DC)", "nsd": "surface Dice (NSD)",
           "hd": "Hausdorff (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)",
           "rvd": "relative volume difference"}
CURVES = {"val_dice": "validation Dice", "val_dice_ed": "validation Dice ED", "val_dice_es": "validation Dice ES",
          "val_acc": "validation accuracy", "train_loss": "training loss"}


def _default(info: pd.DataFrame) -> list[str]:
    """The selected run if evaluated, else the first checkpoint, plus the baselines."""
    run = st.session_state.get("run", "")
    picks = [r.label for r in info.itertuples() if r.trial_id and f"{r.experiment}/{r.trial_id}" == run]
    picks = picks or info[info.kind != "baseline"].label.head(1).tolist()
    return list(dict.fromkeys(picks + info[info.kind == "baseline"].label.tolist()))[:4]


def render() -> None:
    st.title("Compare")
    exps = common.selected_experiments()
    tables = common.evaluated_tables(exps)
    if tables is None:
        return
    subj, summ, _, info = tables
    models = st.multiselect("Models (runs, extra checkpoints, baselines)", info.label.tolist(), default=_default(info))
    if len(models) < 2:
        st.info("Choose at least two models to compare.")
        return
    splits = list(dict.fromkeys(subj.split))
    if "acdc_test" not in splits:
        st.info("No ACDC split was evaluated: run `shapetune evaluate ... --acdc RAW_ACDC` to add it.")
    st.subheader("Seed-style table (mean ± sd; accuracy with its 95 % bootstrap CI)")
    st.markdown(seed_table(summ, models))
    names = ex.split_labels(subj)
    for tab, split in zip(st.tabs([names.get(s, s) for s in splits]), splits, strict=True):
        with tab:
            st.markdown(split_table(summ, models, split))

    st.subheader("Paired tests")
    ref = st.selectbox("Reference model", models)
    st.markdown(paired_table(subj[subj.model.isin(models)], ref, models))
    st.caption("McNemar (exact) on per-subject correctness; Wilcoxon signed-rank on per-subject Dice. "
               "Δ = other − reference.")

    st.subheader("Per-subject distributions")
    c1, c2 = st.columns(2)
    metric = c1.selectbox("Metric", list(METRICS), format_func=METRICS.get)
    kind = c2.radio("Plot", ["violin", "box"], horizontal=True)
    cols = [f"{metric}_{ph}" for ph in phases_of(subj)]  # ED, ES; a table cohort's own phases
    have = subj[subj.model.isin(models)]
    if not set(cols) <= set(have.columns) or have[cols].isna().all().all():
        st.info("None of the chosen models reconstructs (baselines without a decoder have no shape metrics).")
    else:
        long = have.melt(id_vars=["model", "split", "subject"], value_vars=cols, var_name="phase", value_name=metric)
        long["phase"] = long.phase.str[len(metric) + 1:].str.upper()
        long["split"] = long.split.map(names).fillna(long.split)
        plot = px.violin if kind == "violin" else px.box
        extra = {"box": True, "points": "outliers"} if kind == "violin" else {"points": "outliers"}
        fig = plot(long.dropna(), x="model", y=metric, color="model", facet_col="phase", facet_row="split",
                   hover_data=["subject"], labels={metric: METRICS[metric]}, **extra)
        fig.update_layout(height=320 * long.split.nunique(), showlegend=False)
        st.plotly_chart(fig, width="stretch")

    st.subheader("Learning curves")
    curve = st.selectbox("Curve", list(CURVES), format_func=CURVES.get)
    frames = []
    by_name = {e.name: e for e in exps}
    for r in info[info.label.isin(models)].itertuples():
        if r.kind == "baseline":
            continue
        e = by_name[r.experiment]
        c = common.learning_curve(str(e.path), r.trial_id, r.checkpoint, ex.stamp(e.path))
        if curve in c:
            frames.append(c[["epoch", curve]].assign(model=r.label))
    if frames:
        fig = px.line(pd.concat(frames), x="epoch", y=curve, color="model", markers=True, labels={curve: CURVES[curve]})
        st.plotly_chart(fig, width="stretch")
    else:
        st.info("No learning curve recorded for the chosen models (baselines are fitted, not trained).")


common.guard(render)
