"""Every dashboard page driven by Streamlit's AppTest on a real (tiny) evaluated sweep."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from tests.dashboard.conftest import snapshot


def _page(at, name: str):
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "could not be drawn" in e.value]  # guard caught a page failure
    return at


def _texts(at) -> str:
    parts = [*(m.value for m in at.markdown), *(m.value for m in at.info), *(m.value for m in at.warning),
             *(m.value for m in at.error), *(m.value for m in at.caption), *(m.value for m in at.success)]
    return "\n".join(map(str, parts))


def _plots(at) -> list[dict]:
    return [json.loads(p.proto.spec) for p in at.get("plotly_chart")]


def _array(value) -> np.ndarray:
    """A plotly trace array: a plain list, or plotly 7's base64 typed array ``{"dtype", "bdata"}``."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


@pytest.fixture()
def lv2d_app(app_for, dash_storage):
    return app_for(dash_storage / "lv2d")


def test_runs_page_lists_trials_filters_and_plots_the_search(lv2d_app, dash_storage):
    trials = pd.read_parquet(dash_storage / "lv2d" / "trials.parquet")
    at = _page(lv2d_app.run(), "runs")
    table = at.dataframe[0].value
    assert set(table.trial_id) == set(trials.trial_id) and len(table) == 3
    assert {"test_dice_ed", "test_acc", "acdc_acc", "best_val_dice", "latents"} <= set(table.columns)
    assert table.best_val_dice.is_monotonic_decreasing  # best first
    plots = _plots(at)
    kinds = {d.get("type") for p in plots for d in p["data"]}
    assert "parcoords" in kinds  # parallel coordinates
    titles = " ".join(str(p["layout"].get("title", {}).get("text", "")) for p in plots)
    assert "Optimization History" in titles and "Hyperparameter Importances" in titles
    at.main.multiselect[0].set_value(["failed"]).run()
    assert at.dataframe[0].value.empty
    at.main.multiselect[0].set_value(["completed"]).run()
    at.text_input[0].set_value("epochs > 100").run()
    assert at.dataframe[0].value.empty
    at.text_input[0].set_value("this is not a query").run()
    assert "filter 'this is not a query'" in _texts(at) and not at.exception


def test_partial_experiments_show_clear_messages(app_for, dash_storage):
    at = app_for(dash_storage).run()  # the storage folder: all three experiments
    assert set(at.sidebar.multiselect[0].value) == {"lv2d", "pareto", "broken", "starting"}
    text = _texts(_page(at, "runs"))
    assert "**starting**: no trials recorded yet" in text
    assert "**broken**: 1 trial(s) failed" in text and "RuntimeError" in text  # the injected fault's message
    for page in ("compare", "latents", "shapes"):
        at.sidebar.multiselect[0].set_value(["broken"]).run()
        assert "No evaluation stored for broken" in _texts(_page(at, page))
    at.sidebar.multiselect[0].set_value(["starting"]).run()
    assert "no trials yet: nothing to export" in _texts(_page(at, "export"))


def test_runs_page_draws_the_pareto_front_of_a_two_objective_sweep(app_for, dash_storage):
    at = _page(app_for(dash_storage / "pareto").run(), "runs")
    assert len(at.dataframe[0].value) == 2
    plots = _plots(at)
    titles = [str(p["layout"].get("title", {}).get("text", "")) for p in plots]
    assert "Pareto-front Plot" in titles
    front = plots[titles.index("Pareto-front Plot")]
    axes = (front["layout"]["xaxis"]["title"]["text"], front["layout"]["yaxis"]["title"]["text"])
    assert axes == ("val_dice", "val_acc")


def test_compare_page_tables_tests_distributions_and_curves(lv2d_app):
    at = _page(lv2d_app.run(), "compare")
    chosen = at.main.multiselect[0].value
    assert any(m.startswith("lv2d:") for m in chosen) and "clinical_indices+LR" in chosen
    text = _texts(at)
    assert "| model | DC ED | DC ES |" in text and "acc ACDC [95 % CI]" in text  # seed-style table with CIs
    assert "McNemar p (accuracy)" in text and "acdc_test" in text  # paired tests on both splits
    plots = _plots(at)
    assert any(d.get("type") == "violin" for p in plots for d in p["data"])
    curves = [d for p in plots for d in p["data"] if d.get("mode") == "lines+markers"]
    assert curves and list(_array(curves[0]["x"])) == [1, 2, 3]  # 3 epochs of validation Dice
    at.main.multiselect[0].set_value(chosen[:1]).run()
    assert "Choose at least two models" in _texts(at)


def test_latent_page_draws_2d_top_latent_with_boundary_and_opens_a_subject(lv2d_app):
    at = _page(lv2d_app.run(), "latents")
    assert at.radio[0].options[0] == "top latent z_L"  # the top latent is 2D: shown directly
    fig = _plots(at)[0]
    contours = [d for d in fig["data"] if d["type"] == "contour"]
    assert contours and contours[1]["contours"]["start"] == 0.5  # the decision boundary
    scatter = [d for d in fig["data"] if d["type"] == "scatter"]
    n = sum(len(_array(d["x"])) for d in scatter)
    assert n == 8 + 10  # 8 Imperial test + 10 ACDC subjects
    assert {s["marker"]["symbol"] for s in scatter} == {"circle", "diamond"}
    assert {s["name"].split(" · ")[1] for s in scatter} == {"Imperial test", "ACDC"}  # the splits' display names
    assert any("p(HCM)" in s["hovertemplate"] for s in scatter)
    at.radio[0].set_value("tsne").run()
    assert _plots(at)[0]["layout"]["xaxis"]["title"]["text"] == "tsne_x"
    subject = at.selectbox[1].options[3]
    at.selectbox[1].set_value(subject)
    [b for b in at.button if b.label == "Open on Shapes page"][0].click().run()
    assert at.title[0].value == "Shapes"
    assert at.selectbox[2].value == subject.split(" · ")[0]


def test_shapes_page_reconstruction_prefixes_means_and_walk(lv2d_app):
    at = _page(lv2d_app.run(), "shapes")
    assert at.title[0].value == "Shapes" and len(at.get("image")) >= 3
    heads = [s.value for s in at.subheader]
    assert heads == ["Input vs reconstruction", "Reconstruction from each prefix of the hierarchy",
                     "Class-mean shapes and wall thickness", "Latent path from healthy to HCM"]
    labels = [m.label for m in at.metric]
    assert labels[:3] == ["diagnosis", "p(HCM)", "Dice ED / ES"]
    bull = [p for p in _plots(at) if any(d["type"] == "scatterpolar" for d in p["data"])]
    assert bull and len(bull[0]["data"]) == 2  # healthy and HCM mean shapes
    meshes = [[d for d in p["data"] if d["type"] == "mesh3d"] for p in _plots(at)]
    meshes = [m for m in meshes if m]
    # subject: input (translucent) + reconstruction per phase; class means: a figure per class, ED and ES; walk:
    # start and step, ED and ES
    assert [len(m) for m in meshes] == [4, 2, 2, 4]
    rec = [d for d in meshes[0] if "intensity" in d]
    assert len(rec) == 2 and all(len(_array(d["intensity"])) == len(_array(d["x"])) > 100 for d in rec)
    wall = _array(meshes[1][0]["intensity"])
    assert 0 < np.median(wall) < 30  # mm
    assert {b.label for b in at.get("download_button")} == {"Download"} and len(at.get("download_button")) == 3
    start = _texts(at)
    walk = [s for s in at.slider if s.label.startswith("Step along")][0]
    walk.set_value(walk.max).run()
    assert "p(HCM) at this step" in _texts(at) and _texts(at) != start
    at.selectbox[1].set_value("acdc_test").run()
    assert at.selectbox[2].value.startswith("patient") and not at.exception


def test_export_page_exports_the_selected_trial_and_shows_the_card(lv2d_app, dash_storage, tmp_path):
    from shapetune.serving.export import verify_export

    at = _page(lv2d_app.run(), "export")
    trial = at.selectbox[1].options[-1].split(" · ")[0]  # the worst: the page exports what is chosen, not the best
    at.selectbox[1].set_value(trial)
    at.text_input[0].set_value(str(tmp_path)).run()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert f"exported trial {trial}" in _texts(at)
    assert "checksums and weights verified" in _texts(at) and "# " in _texts(at)
    _, _, _, metrics = verify_export(tmp_path / f"lv2d-{trial}")
    assert metrics["trial_id"] == trial
    [b for b in at.button if b.label == "Export"][0].click().run()  # again: an earlier export is there
    assert "Replace an earlier export there" in " ".join(e.value for e in at.error)
    at.checkbox(key="export_replace").check().run()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert f"exported trial {trial}" in _texts(at) and not at.error
    verify_export(tmp_path / f"lv2d-{trial}")


def test_dashboard_never_writes_into_experiments(app_for, dash_storage):
    before = snapshot(dash_storage)
    at = app_for(dash_storage).run()
    for page in ("runs", "compare", "latents", "shapes", "export"):
        _page(at, page)
    assert snapshot(dash_storage) == before


def test_fetal_study_page(app_for, fetal_study):
    """The study's table by view subset, the metric bars, a case with its planes and the uncertainty overlay."""
    res, _ = fetal_study
    snap = snapshot(res.out)
    at = _page(app_for(res.out).run(), "fetal")
    rows = at.dataframe[0].value
    assert set(rows.model) == {"cvae", "hcvae"} and len(rows) == 6 and rows.DC.str.contains("±").all()
    size = rows["|size error| length / width / height"]
    t3 = res.table.set_index(["model", "views"]).loc[("cvae", "3v")]
    assert size.iloc[0] == (f"{100 * t3.abs_ofd_err_mean:.1f} / {100 * t3.abs_bpd_err_mean:.1f} / "
                            f"{100 * t3.abs_height_err_mean:.1f} %")
    assert "size error length" in _texts(at)
    plots = _plots(at)
    bars = [d for d in plots[0]["data"] if d["type"] == "bar"]
    assert len(bars) == 6  # 2 models x (Dice, HD, |RVD|)
    dice_hcvae = _array(next(b for b in bars if b["name"] == "hcvae")["y"])
    t = res.table[res.table.model == "hcvae"].set_index("views")
    np.testing.assert_allclose(dice_hcvae, t.loc[["3v", "2v", "1v"], "dice_mean"], rtol=1e-6)
    titles = [a["text"] for a in plots[1]["layout"]["annotations"]]
    assert titles == ["axial", "sagittal", "coronal"]  # all three planes acquired in the 3-view subset
    kinds = [d["type"] for d in plots[2]["data"]]
    assert kinds.count("heatmap") == 6 and kinds.count("contour") == 3  # truth + uncertainty, prediction contour
    meshes = [p for p in plots if any(d["type"] == "mesh3d" for d in p["data"])]
    # 3D: the prediction coloured by its distance to the truth (translucent behind it), and by the uncertainty
    assert [len(p["data"]) for p in meshes] == [2, 1]
    dist, unc = _array(meshes[0]["data"][1]["intensity"]), _array(meshes[1]["data"][0]["intensity"])
    # (a 2-epoch model's skull is a rough blob, so its distances to the true shell are large: only their presence)
    assert np.isfinite(dist).all() and unc.max() > 0 and len(dist) == len(unc)
    assert len(_array(meshes[0]["data"][0]["x"])) > 100  # the truth, translucent
    at.radio[0].set_value("1v").run()
    titles = [a["text"] for a in _plots(at)[1]["layout"]["annotations"]]
    assert titles == ["axial", "sagittal (not acquired)", "coronal (not acquired)"]
    at.toggle[0].set_value(False).run()
    assert [d["type"] for d in _plots(at)[2]["data"]].count("heatmap") == 3  # overlay off
    assert "Dice lost from 3 views to 1 view, paired per test subject (95 % CI): cvae" in _texts(at)
    assert snapshot(res.out) == snap  # read-only


def test_fetal_case_of_a_deterministic_model(app_for, fetal_study, tmp_path):
    """A model scored without samples (TL-Net, the GAN: NaN uncertainty) is not what the case opens on, and
    its case says it has no map instead of printing nan."""
    import shutil

    import pandas as pd

    res, _ = fetal_study
    study = tmp_path / "study"
    shutil.copytree(res.out, study)
    per_case = pd.read_parquet(study / "per_case.parquet")
    per_case.loc[per_case.model == "cvae", ["uncertainty", "uncertainty_auc"]] = float("nan")  # as if deterministic
    per_case.to_parquet(study / "per_case.parquet")
    at = _page(app_for(study).run(), "fetal")
    model_box = next(s for s in at.selectbox if s.label == "Model")
    assert model_box.value == "hcvae" and "mean variance near the skull" in _texts(at)
    model_box.set_value("cvae").run()
    assert "deterministic model: no uncertainty map" in _texts(at) and "nan" not in _texts(at).split("·")[-1]


def test_fetal_page_without_a_study(lv2d_app):
    at = _page(lv2d_app.run(), "fetal")
    assert "No fetal-skull study here" in _texts(at)
