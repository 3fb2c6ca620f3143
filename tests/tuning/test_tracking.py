"""``--tracking mlflow=URI``: a real sweep, training run and evaluation tracked into a real MLflow store (SQLite),
read back with ``mlflow.search_runs``."""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.evaluation.service import evaluate
from shapetune.experiment.tracking import KIND_TAG, TRACKING_FILE, TRIAL_TAG, make_tracker, read_tracking
from shapetune.tuning.sweep import SweepSettings, run_sweep
from shapetune.tuning.tracking import TrackTrials

from ..conftest import write_space

mlflow = pytest.importorskip("mlflow")  # the tracking extra, installed by `make test`

EPOCHS = 2


@pytest.fixture(scope="module")
def tracked(tiny_prepared, ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = SweepSettings(name="tracked", space=str(write_space(root / "tiny.yaml", epochs=EPOCHS)),
                             data=str(tiny_prepared), trials=2, concurrency=2, storage_path=str(root / "experiments"),
                             tracking=f"mlflow={uri}")
    table = run_sweep(settings)
    return settings, uri, table


def _runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["tracked"], output_format="list")


def test_a_parent_run_per_sweep_and_a_nested_run_per_trial(tracked):
    settings, uri, table = tracked
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == "sweep"]
    trials = [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]
    assert len(parents) == 1 and len(trials) == len(table) == 2
    parent = parents[0]
    assert read_tracking(settings.exp_dir)["parent_run"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.trials"] == "2"
    assert parent.data.metrics["trials"] == 2 and "best_val_dice" in parent.data.metrics
    client = mlflow.tracking.MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {"sweep/trials.parquet",
                                                                                    "sweep/sweep.json"}
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        tid = run.data.tags[TRIAL_TAG]
        row = table[table.trial_id == tid].iloc[0]
        sampled = {c.removeprefix("param:"): v for c, v in row.items() if c.startswith("param:") and v == v}
        assert set(sampled) <= set(run.data.params) and "hierarchy.depth" in run.data.params
        history = client.get_metric_history(run.info.run_id, "val_dice")
        assert [m.step for m in history] == list(range(1, row.epochs + 1))  # every epoch, by epochs done
        assert run.data.metrics["best.val_dice"] == pytest.approx(row.best_val_dice)
        assert run.info.status == "FINISHED"


def test_a_resumed_sweep_reuses_its_runs(tracked):
    settings, uri, _ = tracked
    before = {r.info.run_id for r in _runs(uri)}
    run_sweep(settings, resume=True)
    assert {r.info.run_id for r in _runs(uri)} == before
    # a trial the callback meets again (restarted on another node, resumed) finds its run rather than a new one
    rec = read_tracking(settings.exp_dir)
    tracker = make_tracker(rec["spec"], rec["experiment"])
    known = next(r for r in _runs(uri) if r.data.tags.get(KIND_TAG) == "trial")
    trial = Trial("shapetune_trial", stub=True, trial_id=known.data.tags[TRIAL_TAG], config={})
    cb = TrackTrials(tracker, rec["parent_run"], settings.exp_dir, 1, "val_dice", "max")
    cb.on_trial_start(0, [], trial)
    assert cb.runs[trial.trial_id] == known.info.run_id
    assert {r.info.run_id for r in _runs(uri)} == before


def test_evaluate_logs_to_the_sweeps_parent_run(tracked):
    settings, uri, _ = tracked
    evaluate(settings.exp_dir, splits=("imperial_test",), baselines=(), use_ray=False, n_boot=50)
    client = mlflow.tracking.MlflowClient(uri)
    paths = {a.path for a in client.list_artifacts(read_tracking(settings.exp_dir)["parent_run"], "evaluation")}
    assert {"evaluation/summary.parquet", "evaluation/report.md"} <= paths


def test_train_tracking_logs_a_finished_run(tiny_prepared, tmp_path):
    """A run trained in this process (--workers 0: tracking is the same for either kind of run)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = CliRunner().invoke(app, ["train", "--config", "lvae", "--data", str(tiny_prepared), "--out",
                                 str(tmp_path / "run"), "--workers", "0", "--tracking", f"mlflow={uri}",
                                 "model.grid=16", "model.width=4", "model.ladder_hidden=16",
                                 "model.latent_dims=[8,4,2]", "optim.batch_size=8", f"optim.epochs={EPOCHS}",
                                 "augment.enabled=false"])
    assert r.exit_code == 0, r.output
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["shapetune-train"], output_format="list")
    assert run.data.params["model.grid"] == "16" and "best.val_dice" in run.data.metrics
    client = mlflow.tracking.MlflowClient(uri)
    assert len(client.get_metric_history(run.info.run_id, "val_dice")) == EPOCHS
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"summary.json", "learning_curves.png"}


@pytest.mark.parametrize("spec", ["mlflow", "neptune=proj", "mlflow="])
def test_a_malformed_tracking_value_is_refused(spec, tmp_path):
    r = CliRunner().invoke(app, ["tune", "--space", "lvae_hcm", "--data", str(tmp_path), "--name", "s",
                                 "--storage-path", str(tmp_path), "--tracking", spec])
    assert r.exit_code == 2 and "BACKEND=TARGET" in r.output
    assert not (tmp_path / "s" / TRACKING_FILE).exists()


@pytest.fixture(scope="module")
def tracked_wandb(tiny_prepared, ray_local, tmp_path_factory):
    pytest.importorskip("wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # nothing leaves the machine (the default when WANDB_MODE is unset, too)
    mp.setenv("WANDB_SILENT", "true")
    root = tmp_path_factory.mktemp("wandb")
    settings = SweepSettings(name="wb", space=str(write_space(root / "tiny.yaml", epochs=EPOCHS)),
                             data=str(tiny_prepared), trials=2, concurrency=2, storage_path=str(root / "experiments"),
                             tracking="wandb=shapetune-tests")
    table = run_sweep(settings)
    yield settings, table
    mp.undo()


def _offline_runs(exp_dir):
    """{run id: [its offline run folders]} that W&B wrote under EXP/wandb."""
    runs: dict[str, list] = {}
    for d in (exp_dir / "wandb").glob("offline-run-*"):
        runs.setdefault(d.name.split("-", 3)[-1], []).append(d)
    return runs


def test_wandb_offline_writes_a_run_per_trial_and_one_for_the_sweep(tracked_wandb):
    settings, table = tracked_wandb
    runs = _offline_runs(settings.exp_dir)
    assert set(runs) == {"wb-wb", *(f"wb-{t}" for t in table.trial_id)}
    for run_id, folders in runs.items():
        assert any((d / f"run-{run_id}.wandb").stat().st_size > 0 for d in folders)
    assert any((d / "files" / "trials.parquet").is_file() for d in runs["wb-wb"])
    assert read_tracking(settings.exp_dir)["parent_run"] == "wb-wb"


def test_wandb_resumed_sweep_logs_into_the_same_runs(tracked_wandb):
    settings, _ = tracked_wandb
    before = set(_offline_runs(settings.exp_dir))
    run_sweep(settings, resume=True)
    assert set(_offline_runs(settings.exp_dir)) == before
