"""Shared Streamlit pieces: the experiments the dashboard was started on, cached loaders, the sidebar, guards."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from shapetune.dashboard import experiments as ex
from shapetune.experiment.table import latent_sizes

ENV_VAR = "SHAPETUNE_DASHBOARD_EXPERIMENTS"  # one path or URI per line, set by `shapetune dashboard`
log = logging.getLogger("shapetune.dashboard")
_CHOSEN = "chosen_experiments"


def experiment_paths() -> list[str]:
    return [p for p in os.environ.get(ENV_VAR, "").split("\n") if p]


@st.cache_data(show_spinner=False)
def _discover(paths: tuple[str, ...], listing: tuple) -> list[ex.Experiment]:
    return ex.discover(list(paths))


def all_experiments() -> list[ex.Experiment]:
    paths = tuple(experiment_paths())
    # the folder listing is part of the key: a new experiment under a storage folder shows up on refresh
    listing = tuple(sorted(str(p) for root in paths for p in ex.local_root(root).glob("*/sweep.json")))
    return _discover(paths, listing)


def selected_experiments() -> list[ex.Experiment]:
    """The experiments ticked in the sidebar (all by default)."""
    exps = all_experiments()
    chosen = st.session_state.get(_CHOSEN) or [e.name for e in exps]
    return [e for e in exps if e.name in chosen]


def sidebar() -> None:
    """Experiment chooser and refresh, on every page."""
    with st.sidebar:
        st.markdown("### ShapeTune")
        try:
            exps = all_experiments()
        except ex.DashboardError as exc:
            st.error(str(exc))
            return
        names = [e.name for e in exps]
        # Widget state does not survive a page switch; the choice is kept under a plain key and restored.
        st.session_state["experiments"] = [n for n in st.session_state.get(_CHOSEN, names) if n in names]
        st.multiselect("Experiments", names, key="experiments",
                       on_change=lambda: st.session_state.update({_CHOSEN: st.session_state["experiments"]}))
        if st.button("Refresh", help="Re-read the experiment files (a running sweep shows its new trials); "
                     "experiments at a storage URI are synced to their local mirror first"):
            with st.spinner("syncing from storage ..."):
                ex.sync(experiment_paths())
            st.rerun()
        st.caption(f"read {time.strftime('%H:%M:%S')} · read-only on the experiment folders")


def guard(render) -> None:
    """Run a page; a failure shows as a message, the traceback goes to the server log."""
    try:
        render()
    except ex.DashboardError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a page must never show a raw traceback
        if type(exc).__module__.startswith("streamlit"):  # st.rerun / st.switch_page control flow
            raise
        log.exception("dashboard page failed")
        st.error(f"This page could not be drawn: {type(exc).__name__}: {exc}")


@st.cache_data(show_spinner="reading trials ...", max_entries=64)
def trials(path: str, stamp: tuple) -> pd.DataFrame:
    return ex.load_trials(ex.open_experiment(Path(path)))


@st.cache_data(show_spinner="reading the evaluation ...", max_entries=64)
def evaluation(path: str, stamp: tuple) -> ex.Evaluation | None:
    return ex.load_evaluation(ex.open_experiment(Path(path)))


def trials_of(e: ex.Experiment) -> pd.DataFrame:
    return trials(str(e.path), ex.stamp(e.path))


def evaluation_of(e: ex.Experiment) -> ex.Evaluation | None:
    return evaluation(str(e.path), ex.stamp(e.path))


@st.cache_data(show_spinner="reading trials ...", max_entries=64)
def runs_table(path: str, stamp: tuple) -> tuple[pd.DataFrame, dict[str, str]]:
    """The Runs page's table (trials, latent sizes, stored test metrics) and the failed trials' errors."""
    e = ex.open_experiment(Path(path))
    t = trials(path, stamp)
    if t.empty:
        return t, {}
    t = t.assign(latents=[latent_sizes(r) for _, r in t.iterrows()])
    tests = ex.test_metrics(e, evaluation(path, stamp))
    if len(tests.columns) > 1:
        t = t.merge(tests, on="trial_id", how="left")
    return t, ex.failed_trials(e, t)


def runs_table_of(e: ex.Experiment) -> tuple[pd.DataFrame, dict[str, str]]:
    return runs_table(str(e.path), ex.stamp(e.path))


@st.cache_data(show_spinner="drawing the study ...", max_entries=64)
def study_figures(path: str, stamp: tuple) -> dict:
    """Optuna's optimization history, parameter importances and (two objectives) Pareto front, or why not."""
    import warnings

    import optuna.visualization as vis

    warnings.filterwarnings("ignore", message="Some regimes for parameter", category=UserWarning)
    e = ex.open_experiment(Path(path))
    study = ex.load_study(e)
    out: dict = {}
    if study is None:
        return {"message": "no Optuna study yet"}
    objs = ex.objectives(e)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        return {"message": "no completed trial in the study yet"}
    names = [m for m, _ in objs]
    if len(objs) == 1:
        out["history"] = vis.plot_optimization_history(study, target_name=names[0])
    else:
        out["history"] = vis.plot_optimization_history(study, target=lambda t: t.values[0], target_name=names[0])
        out["pareto"] = vis.plot_pareto_front(study, target_names=names)
    if len(done) >= 2:
        try:
            kw = {} if len(objs) == 1 else {"target": lambda t: t.values[0], "target_name": names[0]}
            out["importances"] = vis.plot_param_importances(study, **kw)
        except (RuntimeError, ValueError) as exc:  # e.g. no parameter shared by every completed trial
            out["importances_message"] = str(exc)
    else:
        out["importances_message"] = "parameter importances need at least two completed trials"
    return out


@st.cache_resource(show_spinner="loading the model ...", max_entries=8)
def model(checkpoint: str, mtime: int):
    from shapetune.training.checkpoints import load_model

    return load_model(checkpoint)[0]


def model_of(checkpoint: str):
    f = Path(checkpoint) / "checkpoint.pt"
    return model(checkpoint, f.stat().st_mtime_ns)


@st.cache_data(show_spinner=False, max_entries=256)
def learning_curve(path: str, trial_id: str | None, checkpoint: str | None, stamp: tuple) -> pd.DataFrame:
    return ex.learning_curve(ex.open_experiment(Path(path)), trial_id, checkpoint)


def models_table(exps: list[ex.Experiment]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Evaluations of several experiments together: per-subject rows, summary, latents and the candidates,
    model names prefixed by the experiment when more than one experiment is shown."""
    subj, summ, lat, info = [], [], [], []
    for e in exps:
        ev = evaluation_of(e)
        if ev is None:
            continue
        name = (lambda m, e=e: f"{e.name} · {m}") if len(exps) > 1 else (lambda m: m)
        subj.append(ev.per_subject.assign(model=ev.per_subject.model.map(name)))
        summ.append(ev.summary.assign(model=ev.summary.model.map(name)))
        lat.append(ev.latents.assign(model=ev.latents.model.map(name)))
        ci = ex.candidate_info(e, ev)
        info.append(ci.assign(label=ci.model.map(name), experiment=e.name))
    if not subj:
        return (pd.DataFrame(),) * 4
    return tuple(pd.concat(x, ignore_index=True) for x in (subj, summ, lat, info))


def evaluated_tables(exps: list[ex.Experiment]) -> tuple[pd.DataFrame, ...] | None:
    """:func:`models_table` of the experiments, or None after saying what to run when none is evaluated."""
    tables = models_table(exps)
    if tables[0].empty:
        names = ", ".join(e.name for e in exps) or "(none selected)"
        st.info(f"No evaluation stored for {names} yet. Run `shapetune evaluate NAME --storage-path STORAGE "
                "[--acdc RAW_ACDC --trials all]`, then press Refresh.")
        return None
    return tables
