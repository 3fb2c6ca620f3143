"""Runs: every trial of the chosen experiments, filterable, with the search's own plots."""

import pandas as pd
import streamlit as st

from shapetune.dashboard import common
from shapetune.dashboard import experiments as ex
from shapetune.dashboard.figures import parallel_coordinates


def render() -> None:
    st.title("Runs")
    exps = common.selected_experiments()
    if not exps:
        st.info("No experiment selected (sidebar).")
        return
    tables = {}
    for e in exps:
        t, failed = common.runs_table_of(e)
        if t.empty:
            st.info(f"**{e.name}**: no trials recorded yet (the sweep has not started a trial, or has just "
                    "started). Press Refresh to look again.")
            continue
        tables[e.name] = t
        if failed:
            shown = list(failed.items())[:5]
            more = f"; and {len(failed) - len(shown)} more (Status filter: failed)" if len(failed) > len(shown) else ""
            st.warning(f"**{e.name}**: {len(failed)} trial(s) failed: " +
                       "; ".join(f"`{k}`: {v}" for k, v in shown) + more)
        running = int((t.status == "running").sum())
        if running:
            st.info(f"**{e.name}** is still running: {running} trial(s) in progress, {len(t)} of "
                    f"{e.settings.trials} started. Refresh to update.")
    if not tables:
        return
    df = pd.concat(tables.values(), ignore_index=True)
    obj = {e.name: ex.objectives(e) for e in exps if e.name in tables}
    metric, mode = next(iter(obj.values()))[0]
    best_col = f"best_{metric}" if f"best_{metric}" in df else metric

    c1, c2, c3 = st.columns([2, 1, 3])
    statuses = sorted(df.status.dropna().unique())
    keep = c1.multiselect("Status", statuses, default=statuses)
    vals = df[best_col].dropna()
    floor = c2.number_input(f"min {best_col}", value=float(vals.min()) if len(vals) else 0.0, format="%.4f") \
        if mode == "max" and len(vals) else None
    query = c3.text_input("Filter (pandas query)", placeholder="`param:optim.lr` < 1e-3 and epochs >= 2")
    view = df[df.status.isin(keep)]
    if floor is not None:
        view = view[view[best_col].isna() | (view[best_col] >= floor)]
    if query.strip():
        try:
            view = view.query(query)
        except Exception as exc:  # noqa: BLE001 - the user's expression
            st.error(f"filter {query!r}: {exc}")
    params = [c for c in view.columns if c.startswith("param:")]
    test_cols = [c for c in view.columns if c.startswith(("test_", "acdc_"))]
    cols = ["experiment", "trial_id", "status", "epochs", "latents", *params, best_col, "val_dice_ed", "val_dice_es",
            "val_acc", "val_auc", *test_cols, "wall_s", "optuna_number"]
    cols = list(dict.fromkeys(c for c in cols if c in view.columns))
    view = view.sort_values(best_col, ascending=mode == "min", na_position="last")
    st.caption(f"{len(view)} of {len(df)} trials · best first by {best_col} · click a column to sort")
    with st.expander("Optuna's own views of these studies (optuna-dashboard)"):
        st.markdown("Run `shapetune dashboard EXP --optuna` (a snapshot of the study, evaluation figures attached "
                    "to the evaluated trials), then open [http://127.0.0.1:8080/dashboard/]"
                    "(http://127.0.0.1:8080/dashboard/):")
        st.code("\n".join(f"shapetune dashboard {e.path} --optuna" for e in exps if e.name in tables), language="bash")
    st.dataframe(view[cols].rename(columns=lambda c: c.removeprefix("param:")), hide_index=True,
                 width="stretch", column_config={"wall_s": st.column_config.NumberColumn(format="%.0f s")})

    ids = [f"{r.experiment}/{r.trial_id}" for r in view.itertuples()]
    if ids:
        current = st.session_state.get("run")
        idx = ids.index(current) if current in ids else 0
        st.session_state["run"] = st.selectbox("Selected run (used by Compare, Shapes and Export)", ids, index=idx)

    st.subheader("Search")
    # the experiment with the most finished trials first: a sweep whose only trial failed has no search to show
    ranked = sorted(tables, key=lambda n: -int((tables[n].status != "failed").sum()))
    name = st.selectbox("Experiment", ranked, key="runs_search_exp") if len(tables) > 1 else ranked[0]
    e = next(x for x in exps if x.name == name)
    t = tables[name]
    e_metric = obj[name][0][0]
    e_col = f"best_{e_metric}" if f"best_{e_metric}" in t else e_metric
    done = t.dropna(subset=[e_col]) if e_col in t else t.iloc[:0]  # a sweep whose trials all failed reports none
    tab_pc, tab_hist, tab_imp, *tab_pareto = st.tabs(
        ["Parallel coordinates", "Optimization history", "Parameter importances"]
        + (["Pareto front"] if len(obj[name]) > 1 else []))
    with tab_pc:
        usable = [p for p in params if p in done and done[p].notna().all() and done[p].nunique() > 1]
        if len(done) < 2 or not usable:
            st.info("The parallel-coordinates plot needs at least two trials with a reported objective.")
        else:
            st.plotly_chart(parallel_coordinates(done, usable, e_col), width="stretch")
            st.caption("Parameters that only some trials have (deeper hierarchy levels) are left out here.")
    figs = common.study_figures(str(e.path), ex.stamp(e.path))
    with tab_hist:
        if "history" in figs:
            st.plotly_chart(figs["history"], width="stretch")
        else:
            st.info(figs.get("message", "no history"))
    with tab_imp:
        if "importances" in figs:
            st.plotly_chart(figs["importances"], width="stretch")
        else:
            st.info(figs.get("importances_message", figs.get("message", "")))
    if tab_pareto:
        with tab_pareto[0]:
            if "pareto" in figs:
                st.plotly_chart(figs["pareto"], width="stretch")
            else:
                st.info(figs.get("message", "no Pareto front yet"))


common.guard(render)
