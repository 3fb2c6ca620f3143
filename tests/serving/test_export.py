"""Export of a sweep's best trial and prediction from the export without Ray."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.nifti import sha256_file
from shapetune.io import MARKER
from shapetune.serving.export import CHECKSUMS, ExportError, export_model, verify_export
from shapetune.serving.predict import predict



def test_export_then_predict_reproduces_validation_metrics(finished_sweep, tiny_prepared, tmp_path):
    out = export_model(finished_sweep, tmp_path / "model")
    names = {p.name for p in out.iterdir()}
    assert names == {"model.safetensors", "config.yaml", "template.json", "metrics.json", "MODEL_CARD.md", CHECKSUMS,
                     MARKER}
    assert not list(tmp_path.glob(".model.tmp-*"))  # the temporary folder was renamed away
    metrics = json.loads((out / "metrics.json").read_text())
    df = predict(out, tiny_prepared, tmp_path / "pred", split="val")
    v = metrics["validation"]
    # Same weights, same inputs, other batch shapes: equal to rounding (see test_train).
    assert df.dice_ed.mean() == pytest.approx(v["val_dice_ed"], abs=2e-3)
    assert df.dice_es.mean() == pytest.approx(v["val_dice_es"], abs=2e-3)
    assert ((df.p_hcm > 0.5) == (df.label == 1)).mean() == pytest.approx(v["val_acc"], abs=1e-9)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert [c for c in df.columns if c.startswith("z")][-1] == f"z{len(cfg['model']['latent_dims']) - 1}_" \
        f"{cfg['model']['latent_dims'][-1] - 1}"  # latent coordinates for every level, top last
    assert (tmp_path / "pred" / "predictions.parquet").exists()


def test_tampered_or_mismatched_exports_are_refused(finished_sweep, tmp_path):
    out = export_model(finished_sweep, tmp_path / "model")
    verify_export(out)
    w = out / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-5] ^= 0xFF
    w.write_bytes(bytes(blob))
    with pytest.raises(ExportError, match="model.safetensors: checksum mismatch"):
        verify_export(out)

    out = export_model(finished_sweep, tmp_path / "model", force=True)  # a fresh export replaces the broken one
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["model"]["latent_dims"] = [d + 1 for d in cfg["model"]["latent_dims"]]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    sums = (out / CHECKSUMS).read_text().splitlines()
    sums = [f"{sha256_file(out / 'config.yaml')}  config.yaml" if s.endswith("  config.yaml") else s for s in sums]
    (out / CHECKSUMS).write_text("\n".join(sums) + "\n")  # checksums re-signed: only the mismatch remains
    with pytest.raises(ExportError, match="weights do not match config.yaml"):
        verify_export(out)

    (out / "metrics.json").unlink()
    with pytest.raises(ExportError, match="metrics.json: missing"):
        verify_export(out)


def test_cli_export_and_predict_on_acdc_writes_subject_space_nifti(finished_sweep, acdc_raw, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(finished_sweep), "--out", str(tmp_path / "model")])
    assert r.exit_code == 0, r.output
    patient = next(p for p in sorted(acdc_raw.rglob("Info.cfg"))).parent
    r = runner.invoke(app, ["predict", str(tmp_path / "model"), str(patient), "--out", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    src = nib.load(next(patient.glob("*_frame*_gt.nii.gz")))
    rec = nib.load(tmp_path / "pred" / patient.name / "recon_ED.nii.gz")
    assert rec.shape == src.shape and np.allclose(rec.affine, src.affine)  # the subject's own grid
    assert set(np.unique(np.asarray(rec.dataobj))) <= {0, 2}  # ACDC's myocardium label
    r = runner.invoke(app, ["predict", str(tmp_path / "nowhere"), str(patient), "--out", str(tmp_path / "p2")])
    assert r.exit_code == 2 and "checksums.sha256: missing" in r.output



def test_export_a_chosen_trial_by_id(finished_sweep, tmp_path):
    import pandas as pd

    table = pd.read_parquet(finished_sweep / "trials.parquet")
    best = json.loads((export_model(finished_sweep, tmp_path / "best") / "metrics.json").read_text())["trial_id"]
    other = next(t for t in table.trial_id if t != best)
    r = CliRunner().invoke(app, ["export", str(finished_sweep), "--trial", other, "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["trial_id"] == other
    verify_export(tmp_path / "m")
    r = CliRunner().invoke(app, ["export", str(finished_sweep), "--trial", "nope", "--out", str(tmp_path / "n")])
    assert r.exit_code == 2 and "trial 'nope' has no checkpoint" in r.output

def test_choice_keeps_the_diagnosis_in_view(finished_sweep):
    """The recommended checkpoint: best validation Dice among those with validation accuracy >= the floor."""
    from shapetune.experiment.checkpoints import CHECKPOINT_FILE, load_state
    from shapetune.serving.export import choose

    cks = [(p.parent, load_state(p.parent)["metrics"]) for p in finished_sweep.rglob(CHECKPOINT_FILE)]
    accs = sorted({m["val_acc"] for _, m in cks})
    plain = choose(finished_sweep, min_val_acc=None)
    assert load_state(plain.checkpoint)["metrics"]["val_dice"] == max(m["val_dice"] for _, m in cks)
    for floor in accs:  # every floor some checkpoint reaches: the best Dice among those that reach it
        c = choose(finished_sweep, min_val_acc=floor)
        want = max(m["val_dice"] for _, m in cks if m["val_acc"] >= floor)
        got = load_state(c.checkpoint)["metrics"]
        assert got["val_dice"] == want and got["val_acc"] >= floor and f"val_acc >= {floor:g}" in c.reason
    above = choose(finished_sweep, min_val_acc=accs[-1] + 1e-6)  # none reaches it: the best overall, said so
    assert above.checkpoint == plain.checkpoint and "chosen without the floor" in above.reason
