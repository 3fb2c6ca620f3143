"""Shapes: a subject's input vs reconstruction, reconstructions per hierarchy prefix, class means, latent walk."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from scipy.ndimage import center_of_mass  # noqa: E402

from shapetune.dashboard import common  # noqa: E402
from shapetune.dashboard import decode  # noqa: E402
from shapetune.dashboard import experiments as ex  # noqa: E402
from shapetune.dashboard.figures import mesh_figure, mosaic, slices_figure, thickness_bullseye  # noqa: E402
from shapetune.evaluation.fetal.files import slug  # noqa: E402
from shapetune.evaluation.meshes import MESH_FORMATS, MeshError, mesh_bytes  # noqa: E402
from shapetune.evaluation.navigation import latent_levels  # noqa: E402

CARDIAC_SLICES = ("short-axis slice (apex → base)", "long-axis slice 1", "long-axis slice 2")


@st.cache_data(show_spinner="decoding ...", max_entries=32)
def _subject(checkpoint: str, data: str, subject: str, _stamp: int):
    s = decode.load_subject(data, subject)
    m = common.model_of(checkpoint)
    rec, prob = decode.reconstruct(m, s.masks)
    return s, rec, prob, decode.prefix_reconstructions(m, s.masks)


@st.cache_data(show_spinner="decoding the class means ...", max_entries=16)
def _means(checkpoint: str, _lat, spacing: float, key: tuple, wall_thickness: bool = True):
    return decode.class_means(common.model_of(checkpoint), latent_levels(_lat), _lat.label.to_numpy(), spacing,
                              wall_thickness)


@st.cache_data(show_spinner="walking the latent path ...", max_entries=32)
def _walk(checkpoint: str, _lat, index: int, key: tuple):
    return decode.latent_walk(common.model_of(checkpoint), latent_levels(_lat), _lat.label.to_numpy(), index)


@st.cache_data(show_spinner="meshing ...", max_entries=64)
def _meshes(key: tuple, _vol, spacing: float, _reference=None, wall_thickness: bool = True):
    """One mesh per phase of a shape (cached per model, subject and view: ``key``); None when a phase is empty."""
    try:
        return decode.phase_meshes(_vol, spacing, _reference, wall_thickness)
    except MeshError:
        return None


def _wall_scale(*groups) -> float:
    """One wall-thickness colour scale for the meshes shown together: the 99th percentile over all of them."""
    values = [m.values["wall_thickness_mm"] for g in groups if g for m in g]
    return max([float(np.percentile(v, 99)) for v in values if len(v)] + [1.0])


def _download(panels: list[tuple[str, object]], key: str) -> None:
    """One download button for a chosen mesh of ``panels`` as .ply or .vtk (per-vertex values included)."""
    c1, c2, c3 = st.columns([3, 1, 1])
    names = [n for n, _ in panels]
    name = c1.selectbox("Mesh for ParaView", names, key=f"{key}_mesh")
    suffix = c2.radio("Format", list(MESH_FORMATS), horizontal=True, key=f"{key}_fmt")
    mesh = dict(panels)[name]
    c3.download_button("Download", mesh_bytes(mesh, suffix), file_name=f"{slug(name)}{suffix}",
                       mime="application/octet-stream", key=f"{key}_dl")


def _show(fig) -> None:
    st.pyplot(fig, clear_figure=True, width="content")
    plt.close(fig)


def render() -> None:
    st.title("Shapes")
    exps = common.selected_experiments()
    tables = common.evaluated_tables(exps)
    if tables is None:
        return
    subj, _, lat, info = tables
    decoders = info[info.checkpoint.notna()]
    if decoders.empty:
        st.info("No evaluated model with a checkpoint: the baselines have no decoder to draw shapes with.")
        return
    target = st.session_state.get("shapes_target", {})
    labels = decoders.label.tolist()
    c1, c2, c3 = st.columns([2, 1, 2])
    label = c1.selectbox("Model", labels, index=labels.index(target["model"]) if target.get("model") in labels else 0)
    row = decoders[decoders.label == label].iloc[0]
    e = next(x for x in exps if x.name == row.experiment)
    mlat = lat[lat.model == label]
    splits, split_names = list(dict.fromkeys(mlat.split)), ex.split_labels(subj)
    split = c2.selectbox("Split", splits, index=splits.index(target["split"]) if target.get("split") in splits else 0,
                         format_func=lambda s: split_names.get(s, s))
    slat = mlat[mlat.split == split].reset_index(drop=True)
    subjects = slat.subject.tolist()
    subject = c3.selectbox("Subject", subjects,
                           index=subjects.index(target["subject"]) if target.get("subject") in subjects else 0)
    ev = common.evaluation_of(e)
    data = ex.split_data(e, ev, split)
    ck_stamp = (Path(row.checkpoint) / "checkpoint.pt").stat().st_mtime_ns
    s, rec, prob, prefixes = _subject(row.checkpoint, data, subject, ck_stamp)
    scores = subj[(subj.model == label) & (subj.split == split) & (subj.subject == subject)]
    phases = [p.upper() for p in s.phases]
    healthy, positive = s.class_names
    m = st.columns(4)
    m[0].metric("diagnosis", positive if s.label else healthy)
    m[1].metric(f"p({positive})", f"{prob:.3f}",
                delta="correct" if (prob > 0.5) == bool(s.label) else "misclassified",
                delta_color="normal" if (prob > 0.5) == bool(s.label) else "inverse")
    if not scores.empty and all(f"dice_{p}" in scores for p in s.phases):
        r = scores.iloc[0]
        m[2].metric(f"Dice {' / '.join(phases)}", " / ".join(f"{r[f'dice_{p}']:.3f}" for p in s.phases))
        m[3].metric(f"HD {' / '.join(phases)} (mm)", " / ".join(f"{r[f'hd_{p}']:.1f}" for p in s.phases))

    com = ([int(round(c)) for c in center_of_mass(s.masks[0])] if s.masks[0].any()
           else [d // 2 for d in s.masks.shape[1:]])
    st.subheader("Input vs reconstruction")
    sl = st.columns(3)
    slice_names = CARDIAC_SLICES if s.cardiac else ("slice across axis 0", "axis 1", "axis 2")
    centre = tuple(sl[a].slider(name, 0, s.masks.shape[1 + a] - 1, com[a], key=f"slice_{a}")
                   for a, name in enumerate(slice_names))
    flat, solid = st.tabs(["slices", "3D surfaces"])
    with flat:
        _show(slices_figure(s.masks, rec, centre, f"{subject} · {label}", phases))
    with solid:
        meshes = _meshes((row.checkpoint, ck_stamp, split, subject, "rec"), rec, s.spacing, s.masks, s.cardiac)
        if meshes is None:
            st.info("The reconstruction is empty in a phase: no surface to draw.")
        else:
            span = max(float(np.percentile(np.abs(np.concatenate([m.values["distance_mm"] for m in meshes])), 99)),
                       s.spacing)
            st.caption("The reconstruction coloured by its signed distance to the input's surface (red: outside the "
                       "input, blue: inside); the input in translucent grey.")
            inputs = _meshes(("input", data, subject), s.masks, s.spacing, None, s.cardiac)
            st.plotly_chart(mesh_figure([(f"reconstruction {p}", m) for p, m in zip(phases, meshes, strict=True)],
                                        "distance_mm", -span, span, ghosts=inputs), width="stretch")
            _download([(f"{subject} reconstruction {p}", m) for p, m in zip(phases, meshes, strict=True)]
                      + [(f"{subject} input {p}", m) for p, m in zip(phases, inputs or [], strict=False)], "rec")

    st.subheader("Reconstruction from each prefix of the hierarchy")
    st.caption("Left to right: more levels read from the input (top first); the others follow the prior means. "
               "Overlay against the input: red missed, blue added.")
    rows = ("ED short axis", "ED long axis") if s.cardiac else (f"{phases[0]} across axis 0", "across axis 1")
    _show(mosaic([(f"reads {name}", v) for name, v in prefixes], centre, ref=s.masks, rows=rows))

    key = (label, split, len(slat))
    names = {0: healthy, 1: positive}
    if not s.cardiac:
        _generic_means_and_walk(row, ck_stamp, slat, s, key, subjects.index(subject), centre, phases, names, rows)
        return
    st.subheader("Class-mean shapes and wall thickness")
    means = _means(row.checkpoint, slat, s.spacing, key)
    if len(means) < 2:
        st.info("Both classes are needed for class means (this split has one).")
    else:
        flat, solid = st.tabs(["slices and bull's-eye", "3D wall thickness"])
        with flat:
            _show(mosaic([(f"mean {'HCM' if c else 'healthy'}", means[c]["volume"]) for c in sorted(means)],
                         centre))
            st.plotly_chart(thickness_bullseye(means), width="stretch")
        with solid:
            meshes = {c: _meshes((row.checkpoint, ck_stamp, key, "mean", c), means[c]["volume"], s.spacing)
                      for c in sorted(means)}
            top = _wall_scale(*meshes.values())
            st.caption("Decoded class-mean shapes, wall thickness in mm at every vertex (one colour scale).")
            panels = []
            for c, ms in meshes.items():
                if ms is None:
                    st.info(f"The mean {names[c]} shape is empty in a phase: no surface to draw.")
                    continue
                row_panels = [(f"mean {names[c]} {p}", m) for p, m in zip(phases, ms, strict=True)]
                st.plotly_chart(mesh_figure(row_panels, "wall_thickness_mm", 0.0, top, height=360), width="stretch")
                panels += row_panels
            if panels:
                _download(panels, "means")

    st.subheader("Latent path from healthy to HCM")
    if len(set(slat.label)) < 2:
        st.info("The walk is scaled by the gap between the class means, so it needs both classes in the split.")
        return
    vols, probs = _walk(row.checkpoint, slat, subjects.index(subject), key)
    step = st.slider("Step along the classifier gradient", 0, len(vols) - 1, 0, key="walk_step")
    st.caption(f"p(HCM) at this step: {probs[step]:.3f} (start {probs[0]:.3f}, end {probs[-1]:.3f}); "
               "the subject's lower levels are kept, the overlay compares with the start.")
    flat, solid = st.tabs(["slices", "3D wall thickness"])
    with flat:
        _show(mosaic([("start", vols[0]), (f"step {step}", vols[step])], centre, ref=None))
        _show(mosaic([(f"step {step} vs start", vols[step])], centre, ref=vols[0]))
    with solid:
        start = _meshes((row.checkpoint, ck_stamp, key, subject, "walk", 0), vols[0], s.spacing)
        here = _meshes((row.checkpoint, ck_stamp, key, subject, "walk", step), vols[step], s.spacing)
        if start is None or here is None:
            st.info("The decoded shape is empty in a phase at this step: no surface to draw.")
        else:
            top = _wall_scale(start, here)
            panels = [(f"start {p}", m) for p, m in zip(phases, start, strict=True)]
            panels += [(f"step {step} {p}", m) for p, m in zip(phases, here, strict=True)]
            st.plotly_chart(mesh_figure(panels, "wall_thickness_mm", 0.0, top, height=340), width="stretch")
            _download(panels, "walk")


def _generic_means_and_walk(row, ck_stamp: int, slat, s, key: tuple, index: int, centre: tuple, phases: list[str],
                            names: dict[int, str], rows: tuple[str, str]) -> None:
    """Anatomy other than the LV: the class means coloured by their distance to each other, and the walk coloured
    by its distance to the start (no wall thickness: that is the myocardium's)."""
    st.subheader("Class-mean shapes")
    means = _means(row.checkpoint, slat, s.spacing, key, False)
    if len(means) < 2:
        st.info("Both classes are needed for class means (this split has one).")
    else:
        flat, solid = st.tabs(["slices", "3D surfaces"])
        with flat:
            _show(mosaic([(f"mean {names[c]}", means[c]["volume"]) for c in sorted(means)], centre, rows=rows))
        with solid:
            st.caption(f"The mean {names[1]} shape coloured by its signed distance (mm) to the mean {names[0]} "
                       f"surface (blue: inside it, where {names[1]} has lost volume); the mean {names[0]} in grey.")
            ms = _meshes((row.checkpoint, ck_stamp, key, "mean", 1), means[1]["volume"], s.spacing,
                         means[0]["volume"], False)
            ref = _meshes((row.checkpoint, ck_stamp, key, "mean", 0), means[0]["volume"], s.spacing, None, False)
            if ms is None or ref is None:
                st.info("A mean shape is empty in a phase: no surface to draw.")
            else:
                span = max(float(np.percentile(np.abs(np.concatenate([m.values["distance_mm"] for m in ms])), 99)),
                           s.spacing)
                panels = [(f"mean {names[1]} {p}", m) for p, m in zip(phases, ms, strict=True)]
                st.plotly_chart(mesh_figure(panels, "distance_mm", -span, span, ghosts=ref, height=360),
                                width="stretch")
                _download(panels + [(f"mean {names[0]} {p}", m) for p, m in zip(phases, ref, strict=True)], "means")
    st.subheader(f"Latent path from {names[0]} to {names[1]}")
    if len(set(slat.label)) < 2:
        st.info("The walk is scaled by the gap between the class means, so it needs both classes in the split.")
        return
    vols, probs = _walk(row.checkpoint, slat, index, key)
    step = st.slider("Step along the classifier gradient", 0, len(vols) - 1, 0, key="walk_step")
    st.caption(f"p({names[1]}) at this step: {probs[step]:.3f} (start {probs[0]:.3f}, end {probs[-1]:.3f}); the "
               "subject's lower levels are kept, the overlay compares with the start.")
    _show(mosaic([("start", vols[0]), (f"step {step}", vols[step])], centre, ref=None, rows=rows))
    _show(mosaic([(f"step {step} vs start", vols[step])], centre, ref=vols[0], rows=rows))


common.guard(render)
