"""A user's own cohort, any anatomy, end to end through the `shapetune` command: a one-phase, non-cardiac
manifest-table cohort (hippocampus-like tubes with a local atrophy) synthesised, prepared, swept, evaluated,
shown in the dashboard, exported and predicted on a raw label map."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from shapetune.cli import app

pytestmark = pytest.mark.slow


def _st(*args: str, rc: int = 0) -> Result:
    """One `shapetune` command in this process (the session's Ray, in the current folder): a fresh interpreter per
    command cost ~3 s each, a third of this test. The first command runs as its own process (`python -m
    shapetune.cli`)."""
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    assert res.exit_code == rc, res.output
    return res


def test_a_one_phase_table_cohort_from_prepare_to_prediction(tmp_path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    synth = subprocess.run([sys.executable, "-m", "shapetune.cli", "data", "synth", "--cohort", "tubes", "--out", "raw",
                            "--n-per-group", "12", "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert synth.returncode == 0, synth.stdout + synth.stderr
    res = _st("data", "prepare", "raw/manifest.csv", "--format", "table", "--out", "prep", "--grid", "16",
              "--spacing", "5", "--structure-label", "17", "--positive", "AD", "--workers", "2")
    assert "prepared 24 subjects" in res.output
    shown = _st("data", "show", "prep").output
    assert "phases mask" in shown and "AD" in shown and "CN" in shown

    # One channel without being told (model.in_channels from the dataset); the epoch line has the mean Dice only.
    res = _st("tune", "--space", "lvae_hcm", "--data", "prep", "--trials", "2", "--concurrency", "2", "--name", "t",
              "--storage-path", "exp", "--grace-period", "1", "--seed", "0", "optim.epochs=2", "model.grid=16",
              "model.bottleneck=4")
    trials = pd.read_parquet(tmp_path / "exp" / "t" / "trials.parquet")
    assert (trials.status == "completed").all() and trials.best_val_dice.notna().all()
    assert trials.val_dice_ed.isna().all()  # no ED/ES here: the cohort's one phase
    recorded = json.loads((tmp_path / "exp" / "t" / "sweep.json").read_text())["overrides"]
    assert "model.in_channels=1" in recorded and "added model.in_channels=1" in res.output  # said and recorded

    res = _st("evaluate", "t", "--storage-path", "exp", "--no-ray")
    assert "acdc_test left out" in res.output and "clinical baseline is left out" in res.output
    assert "Dice MASK" in res.output
    ev = tmp_path / "exp" / "t" / "evaluation"
    per_subject = pd.read_parquet(ev / "per_subject.parquet")
    assert {"dice_mask", "hd_mask", "nsd_mask"} <= set(per_subject.columns) and "dice_ed" not in per_subject
    assert set(per_subject.split) == {"imperial_test"} and len(set(per_subject.model)) == 2  # the best + PCA
    report = (ev / "report.md").read_text()
    assert "DC MASK" in report and "DC ED" not in report

    # The dashboard: every page draws; the Shapes page shows the table cohort's classes, no wall thickness.
    from streamlit.testing.v1 import AppTest

    from shapetune.dashboard.common import ENV_VAR
    from shapetune.dashboard.launch import APP

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "exp" / "t"))
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    for page in ("runs", "compare", "latents", "shapes", "export"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not [e.value for e in at.error if "could not be drawn" in e.value], page
        shown = [*(str(m.value) for m in [*at.markdown, *at.caption]), *(t.label for t in at.tabs),
                 *(str(o) for s in at.selectbox for o in s.options)]
        assert not [s for s in shown if "Imperial" in s], page  # the internal split shows as "test" here
        if page == "latents":
            names = {d.get("name", "") for p in at.get("plotly_chart") for d in json.loads(p.proto.spec)["data"]}
            assert any(n.startswith("AD") for n in names) and not any("HCM" in n for n in names)
            assert "AD · test" in names and not any("imperial" in n.lower() for n in names)
        if page == "compare":
            assert not [i.value for i in at.info if "reconstructs" in i.value]  # the per-subject plots, per phase
        if page == "shapes":
            text = " ".join(str(m.value) for m in [*at.markdown, *at.caption, *at.subheader, *at.metric])
            assert "Class-mean shapes" in text and "wall thickness" not in text.lower()
            assert "Dice MASK" in " ".join(m.label for m in at.metric)

    _st("export", "t", "--storage-path", "exp", "--out", "model")
    template = json.loads((tmp_path / "model" / "template.json").read_text())
    assert template["cohort"] == "table" and template["phases"] == ["mask"] and template["structure_label"] == 17
    assert "structure labelled 17" in (tmp_path / "model" / "MODEL_CARD.md").read_text()
    res = _st("export", "t", "--storage-path", "exp", "--out", "bundle", "--format", "monai-bundle", rc=2)
    assert "exports as --format shapetune only" in " ".join(res.output.split())
    # A dataset prepared another way (here: another alignment) is refused, not predicted in the wrong frame.
    _st("data", "prepare", "raw/manifest.csv", "--format", "table", "--out", "prep_c", "--grid", "16",
        "--spacing", "5", "--structure-label", "17", "--positive", "AD", "--align", "centroid")
    res = _st("predict", "model", "prep_c", "--out", "pred_c", rc=2)
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "prepared unlike the model's training data: alignment centroid (model: principal)" in said
    res = _st("predict", "model", "raw/masks/sub-0003.nii.gz", "--out", "pred")
    pred = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert {"p_positive", "dice_mask"} <= set(pred.columns) and pred.predicted.iloc[0] in ("AD", "CN")
    src = nib.load(str(tmp_path / "raw" / "masks" / "sub-0003.nii.gz"))
    rec = nib.load(str(tmp_path / "pred" / "sub-0003" / "recon_MASK.nii.gz"))
    assert rec.shape == src.shape and np.allclose(rec.affine, src.affine)  # back on the subject's own grid
    a, b = np.asarray(src.dataobj) == 17, np.asarray(rec.dataobj) == 17
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.6  # a 16³ model at 5 mm, mapped back to 1 mm voxels
    # The whole manifest table at once: every subject aligned the same way, labelled from the table's groups.
    _st("predict", "model", "raw/manifest.csv", "--out", "pred_all")
    table = pd.read_parquet(tmp_path / "pred_all" / "predictions.parquet").set_index("subject")
    assert len(table) == 24 and table.label.notna().all()
    assert table.loc["sub-0003", "dice_mask"] == pytest.approx(pred.dice_mask.iloc[0])
    assert (tmp_path / "pred_all" / "sub-0020" / "recon_MASK.nii.gz").exists()
