"""The fetal-skull study end to end: Ray Train per fold, the sweep, the table by view subset, reproducibility."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.errors import DataError
from shapetune.evaluation.fetal.scoring import load_maps, score_fold
from shapetune.data.fetal.folds import fold_data
from shapetune.evaluation.fetal.study import StudyError, _checkpoint, run_study, table_markdown
from shapetune.training.tasks import load_task_data
from tests.conftest import FETAL_TINY, fetal_config


@pytest.fixture()
def study(fetal_study):
    return fetal_study


def test_table_by_view_subset_over_folds(study, fetal_prepared):
    res, _ = study
    t = res.table
    assert sorted(res.trained) == sorted(f"{m}/fold{k}" for m in ("cvae", "hcvae") for k in range(2))
    assert set(zip(t.model, t.views, strict=True)) == {(m, v) for m in ("cvae", "hcvae") for v in ("3v", "2v", "1v")}
    assert (t.folds == 2).all() and t.dice_sd.notna().all()
    assert ((t.dice_mean >= 0) & (t.dice_mean <= 1)).all() and (t.hd_mean > 0).all()
    pc = res.per_case
    assert len(pc) == 2 * 2 * 3 * 3  # models x folds x 3 test subjects x view subsets
    manifest = pd.read_parquet(fetal_prepared / "manifest.parquet")
    for k in range(2):  # every fold is scored on its own test subjects only
        assert set(pc[pc.fold == k].subject) == set(manifest.subject[manifest[f"fold{k}"] == "test"])
    md = (res.out / "table.md").read_text()
    assert "3 views" in md and "HCVAE | 0.91 / 4.12 / 0.03" in md and md.startswith(table_markdown(t))
    effects = pd.read_csv(res.out / "view_effects.csv")  # Dice lost per model and between models, paired
    assert set(effects.what) == {"cvae", "hcvae", "cvae − hcvae"} and (effects.n == 6).all()
    assert "Dice lost when views go missing" in md and "| cvae − hcvae |" in md
    for f in ("dice_by_views.png", "uncertainty_cvae.png", "uncertainty_hcvae.png"):
        assert (res.out / "figures" / f).stat().st_size > 5_000
    assert {"ofd_err", "bpd_err", "height_err"} <= set(pc.columns) and t.abs_bpd_err_mean.notna().all()
    subjects, pred, var = load_maps(res.out / "scores" / "hcvae_fold0.npz", "1v")
    assert pred.shape == var.shape == (3, 32, 32, 32) and var.max() > 0  # sampled priors differ


def test_view_effects_pair_subjects_within_and_between_models():
    from shapetune.evaluation.fetal.view_effects import effects_markdown, view_effects

    rng = np.random.default_rng(0)
    rows = []
    for model, drop in (("a", 0.08), ("b", 0.02)):
        for fold in range(2):
            for i in range(12):
                base = rng.uniform(0.7, 0.95)  # subjects differ far more than the views' effect
                for views, d in (("3v", 0.0), ("2v", drop / 4), ("1v", drop)):
                    rows.append({"model": model, "fold": fold, "subject": f"s{fold}_{i}", "views": views,
                                 "dice": base - d + rng.normal(0, 0.005)})
    e = view_effects(pd.DataFrame(rows))
    loss = e[(e.kind == "loss") & (e["from"] == "3v") & (e["to"] == "1v")].set_index("what")
    assert loss.loc["a", "mean"] == pytest.approx(0.08, abs=0.005) and loss.loc["a", "ci_lo"] > 0.07
    assert loss.loc["a", "p_value"] < 1e-3 and loss.loc["a", "n"] == 24
    con = e[e.kind == "contrast"].set_index(["what", "from", "to"])
    assert con.loc[("a − b", "3v", "1v"), "mean"] == pytest.approx(0.06, abs=0.005)  # b degrades less
    assert con.loc[("a − b", "3v", "1v"), "ci_lo"] > 0.05
    md = effects_markdown(e)
    assert "| a | " in md and "| a − b | " in md and "3v → 1v" in md


def test_size_errors_read_the_heads_length_width_and_height():
    import dataclasses

    from shapetune.data.fetal.skull import render_skull, sample_skull
    from shapetune.evaluation.fetal.scoring import size_errors

    p = max((sample_skull("s", i) for i in range(20)), key=lambda q: q.ga_weeks)  # a big head: ~50 voxels long
    truth = render_skull(p, 64).astype(bool)
    longer = render_skull(dataclasses.replace(p, ofd_mm=p.ofd_mm * 1.1), 64).astype(bool)
    e = size_errors(longer, truth)
    assert e["ofd_err"] == pytest.approx(0.1, abs=0.03) and abs(e["bpd_err"]) < 0.02 and abs(e["height_err"]) < 0.02
    assert size_errors(truth, truth) == {"ofd_err": 0.0, "bpd_err": 0.0, "height_err": 0.0}
    assert np.isnan(size_errors(np.zeros_like(truth), truth)["bpd_err"])


def test_table_reproduces_from_the_saved_study(study, fetal_prepared):
    res, configs = study
    again = run_study(configs, fetal_prepared, res.out, folds=[0, 1], samples=3)
    assert again.trained == [] and again.scored == []  # nothing retrained, nothing rescored
    rescored = run_study(configs, fetal_prepared, res.out, folds=[0, 1], samples=3, force=True)
    assert rescored.trained == [] and len(rescored.scored) == 4
    pd.testing.assert_frame_equal(rescored.table, res.table)  # from the checkpoints alone, the same table


def test_cli_study_and_bad_requests(study, fetal_prepared, tiny_prepared, tmp_path):
    res, _ = study
    runner = CliRunner()
    out = tmp_path / "copy"  # a copy: this run rewrites the table with one model, the session's study stays whole
    shutil.copytree(res.out, out)
    args = ["study", "--data", str(fetal_prepared), "--out", str(out), "--model", "hcvae", "--folds", "0,1",
            "--samples", "3", "model.grid=32", "optim.epochs=2", *FETAL_TINY]
    r = runner.invoke(app, [*args, "model.latent_dims=[8,8,4]"])  # the study's own configuration: reused
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())  # rich wraps the table and the last line at the terminal's width
    assert "hcvae" in flat and "trained 0 run(s), scored 0" in flat
    assert "Dice lost 3 views -> 1 view, hcvae:" in flat and "paired over 6 subjects" in flat
    r = runner.invoke(app, [*args, "model.latent_dims=[8,4]"])  # another configuration under the same name
    assert r.exit_code == 2 and "another configuration" in " ".join(r.output.split())
    r = runner.invoke(app, ["study", "--data", str(tiny_prepared), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "not a fetal-skull dataset" in " ".join(r.output.split())
    r = runner.invoke(app, ["study", "--data", str(fetal_prepared), "--out", str(tmp_path / "s"), "--folds", "5"])
    assert r.exit_code == 2 and "no fold(s) [5]" in " ".join(r.output.split())
    with pytest.raises(StudyError, match="not a fetal-skull model"):
        from shapetune.config import load_config

        run_study({"lvae": load_config(None, ["model.grid=32"])}, fetal_prepared, tmp_path / "s2")


def test_model_and_dataset_must_match(fetal_prepared, tiny_prepared):
    with pytest.raises(DataError, match="fetal model but this is a cardiac dataset"):
        load_task_data(tiny_prepared, fetal_config("hcvae"))
    from shapetune.config import load_config

    with pytest.raises(DataError, match="cardiac model but this is a fetal dataset"):
        load_task_data(fetal_prepared, load_config(None, ["model.grid=32"]))
    with pytest.raises(DataError, match="no fold 4"):
        load_task_data(fetal_prepared, fetal_config("hcvae", 2, "data.fold=4"))


@pytest.mark.slow
def test_sweep_then_evaluate_cross_validates_the_best_trial(fetal_prepared, ray_local, tmp_path):
    """``shapetune tune`` over the HCVAE space, then ``shapetune evaluate``: the best trial's checkpoint is its
    fold-0 run, folds 1 and 2 are trained with its configuration, and the study table comes out."""
    from shapetune.search_spaces import load_space

    space = load_space("hcvae_fetal")
    text = (tmp_path / "space.yaml")
    text.write_text(open(space.source).read().replace("base: hcvae", f"base: {space.base_path()}")
                    .replace("optim.epochs: 40", "optim.epochs: 2\n  model.grid: 32\n  model.ladder_hidden: 32\n"
                             "  optim.batch_size: 4")
                    .replace("choices: [4, 8]", "choices: [4]").replace("grace_period: 10", "grace_period: 1"))
    runner = CliRunner()
    r = runner.invoke(app, ["tune", "--space", str(text), "--data", str(fetal_prepared), "--trials", "2",
                            "--name", "fs", "--storage-path", str(tmp_path / "exp"), "--scheduler", "none"])
    assert r.exit_code == 0, r.output
    trials = pd.read_parquet(tmp_path / "exp" / "fs" / "trials.parquet")
    assert trials.val_dice_1v.notna().all() and (trials.status == "completed").all()
    r = runner.invoke(app, ["evaluate", "fs", "--storage-path", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "exp" / "fs" / "evaluation" / "fetal"
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 3 and (table.folds == 3).all()
    runs = json.loads((out / "runs.json").read_text())
    best = trials.sort_values("best_val_dice", ascending=False).trial_id.iloc[0]
    fold0 = next(r["run"] for r in runs if r["fold"] == 0)
    assert best in fold0 and "evaluation" not in fold0  # the sweep's own checkpoint, not retrained
    assert all("evaluation/fetal/runs" in r["run"] for r in runs if r["fold"] > 0)
    r = runner.invoke(app, ["export", "fs", "--storage-path", str(tmp_path / "exp"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "serve the cardiac models" in " ".join(r.output.split())


# In this process: fetal runs through Ray Train are the size-frame DDP test's (tests/training) and the folds the
# sweep test's evaluate trains; each Ray Train run here costs 15-20 s of start-up.
@pytest.mark.parametrize("name", ["hcvae", "cgan"])
def test_cli_train_a_fetal_model_on_a_fold(name, fetal_prepared, tmp_path):
    r = CliRunner().invoke(app, ["train", "--config", name, "--data", str(fetal_prepared), "--out",
                                 str(tmp_path / "run"), "--workers", "0", "model.grid=32", "optim.epochs=1",
                                 *FETAL_TINY, "data.fold=2"])
    assert r.exit_code == 0, r.output
    assert "val_dice_1v" in " ".join(r.output.split())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["data"]["fold"] == 2 and "val_dice_3v" in summary["best_metrics"]
    assert (tmp_path / "run" / "learning_curves.png").exists()
    if name == "cgan":  # both players trained from the one loss, and the study scores the generator
        history = pd.read_csv(tmp_path / "run" / "history.csv")
        assert {"train_adv", "train_disc"} <= set(history.columns) and history.train_disc.notna().all()
        planes, truth, subjects, spacing = fold_data(fetal_prepared, 2)
        df, _ = score_fold(_checkpoint(tmp_path / "run"), planes[:2], truth[:2], subjects[:2], spacing, samples=2)
        assert len(df) == 6 and df.dice.between(0, 1).all() and df.uncertainty.isna().all()  # deterministic


def test_a_saved_run_config_is_read_through_todays_schema():
    from shapetune.evaluation.fetal.study import same_config

    cfg = fetal_config("cvae")
    saved = cfg.model_dump(mode="json")
    assert same_config(saved, cfg)
    older = json.loads(json.dumps(saved))
    del older["loss"]["adv_weight"]  # written before the field existed: its default, the same run
    assert same_config(older, cfg)
    changed = json.loads(json.dumps(saved))
    changed["loss"]["lambda_kl"] = 0.5
    assert not same_config(changed, cfg)
    gone = json.loads(json.dumps(saved))
    gone["loss"]["retired_knob"] = 1.0  # a field since removed: not comparable
    assert not same_config(gone, cfg)
