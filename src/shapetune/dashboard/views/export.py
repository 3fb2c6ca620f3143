"""Export: write the selected run's checkpoint as a verified model folder (as `shapetune export`) and show its card."""

from pathlib import Path

import streamlit as st

from shapetune.dashboard import common
from shapetune.dashboard import experiments as ex
from shapetune.serving.export import CARD, ExportError, export_model, verify_export


def _card(path: Path) -> None:
    try:
        verify_export(path)
    except ExportError as exc:
        st.error(f"{path}: {exc}")
        return
    st.success(f"{path}: checksums and weights verified")
    st.markdown((path / CARD).read_text())


def render() -> None:
    st.title("Export")
    exps = common.selected_experiments()
    if not exps:
        st.info("No experiment selected (sidebar).")
        return
    run = st.session_state.get("run", "")
    names = [e.name for e in exps]
    exp_name = st.selectbox("Experiment", names,
                            index=names.index(run.split("/")[0]) if run.split("/")[0] in names else 0)
    e = next(x for x in exps if x.name == exp_name)
    t = common.trials_of(e)
    if t.empty:
        st.info(f"**{e.name}** has no trials yet: nothing to export.")
        return
    metric, mode = ex.objectives(e)[0]
    col = f"best_{metric}" if f"best_{metric}" in t else metric
    t = t[t.status != "failed"].sort_values(col, ascending=mode == "min", na_position="last")
    if t.empty:
        st.warning(f"**{e.name}**: every trial failed; nothing to export.")
        return
    ids = t.trial_id.tolist()
    chosen = run.split("/")[1] if run.startswith(f"{e.name}/") else ids[0]
    score = dict(zip(t.trial_id, t[col], strict=True))
    tid = st.selectbox(f"Trial (best {col} first)", ids, index=ids.index(chosen) if chosen in ids else 0,
                       format_func=lambda i: f"{i} · {col} {score[i]:.4f}")
    # A stable key: the folder the user typed survives choosing another trial.
    parent = Path(st.text_input("Export into", value=str(Path.cwd() / "exports"), key="export_parent"))
    out = parent.expanduser() / f"{e.name}-{tid}"
    st.caption(f"writes `{out}`")
    # As `shapetune export --force`: only an earlier export is ever replaced, never a folder of someone else's.
    replace = st.checkbox("Replace an earlier export there", value=False, key="export_replace")
    if st.button("Export", type="primary"):
        with st.spinner(f"exporting trial {tid} ..."):
            try:
                export_model(e.path, out, trial_id=tid, force=replace)
            except (ExportError, ValueError, OSError) as exc:
                hint = " (tick 'Replace an earlier export there')" if "--force replaces it" in str(exc) else ""
                st.error(f"export failed: {exc}{hint}")
                return
        st.success(f"exported trial {tid} to {out}")
    if (out / CARD).exists():
        st.subheader("Model card")
        _card(out)
    else:
        st.caption("The same code as `shapetune export NAME --trial ID --out DIR`: safetensors weights, config, "
                   "template, metrics, MODEL_CARD.md and sha256 checksums, written atomically.")


common.guard(render)
