"""Sweeps on several Ray nodes (``ray.cluster_utils.Cluster`` on this machine): trials spread over nodes, data and
results through a storage URI (never the driver's folder), and a node killed in the middle of a sweep.

The head node has no CPU, so every trial runs on a worker node; each worker node keeps its checkpoints in its
own scratch folder (one per node id) and the bucket is the only place they meet, as on real machines.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.dashboard.common import ENV_VAR
from shapetune.dashboard.launch import environment
from shapetune.evaluation.service import checkpoint_dir, evaluate
from shapetune import storage
from shapetune.serving.export import export_model, verify_export
from shapetune.experiment.checkpoints import load_state
from shapetune.tuning.sweep import SweepSettings, run_sweep

from ..conftest import write_space


@pytest.fixture(scope="module")
def cluster(ray_local):
    """A head (0 CPUs: the driver only) and three 1-CPU worker nodes; the session's local Ray comes back after."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(3)]
    c.wait_for_nodes()
    ray.init(address=c.address, configure_logging=False, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()
    ray.init(address="local", num_cpus=2, configure_logging=False, log_to_driver=False)


@pytest.fixture()
def bucket(tmp_path, tiny_prepared, monkeypatch):
    """A ``file://`` bucket holding the dataset; the driver runs from an unrelated folder with its own cache."""
    root = f"file://{tmp_path / 'bucket'}"
    storage.upload(tiny_prepared, storage.join(root, "data", "tiny"))
    work = tmp_path / "driver_cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SHAPETUNE_CACHE", str(tmp_path / "cache"))
    return root


def _study(settings: SweepSettings) -> optuna.Study:
    local = storage.local_copy(storage.join(settings.storage_path, settings.name))
    return optuna.load_study(study_name=settings.name, storage=f"sqlite:///{local / 'optuna.db'}")


@pytest.mark.timeout(900)
def test_sweep_spreads_over_nodes_with_results_in_the_bucket(cluster, bucket, tmp_path):
    space = write_space(tmp_path / "space.yaml", epochs=2)
    settings = SweepSettings(name="multi", space=str(space), data=storage.join(bucket, "data", "tiny"), trials=4,
                             concurrency=3, storage_path=storage.join(bucket, "experiments"))
    df = run_sweep(settings)
    assert len(df) == 4 and (df.status == "completed").all()
    assert df.node_id.nunique() >= 2  # the trials ran on more than one node
    exp = storage.join(bucket, "experiments", "multi")
    for f in ("sweep.json", "space.yaml", "optuna.db", "trials.parquet"):
        assert storage.exists(storage.join(exp, f)), f
    for tid in df.trial_id:
        assert storage.exists(storage.join(exp, "trials", tid, "checkpoint_best", "checkpoint.pt"))
    states = [t.state.name for t in _study(settings).get_trials()]
    assert states == ["COMPLETE"] * 4
    remote = pd.read_parquet(storage.local_copy(exp) / "trials.parquet")
    assert set(remote.trial_id) == set(df.trial_id)
    assert not list((tmp_path / "driver_cwd").iterdir())  # nothing written where the driver was started

    # The rest of the pipeline takes the same URIs: export to the bucket, predict from it, evaluate, dashboard.
    runner = CliRunner()
    models = storage.join(bucket, "models", "best")
    r = runner.invoke(app, ["export", "multi", "--storage-path", settings.storage_path, "--out", models])
    assert r.exit_code == 0, r.output
    verify_export(storage.local_copy(models))
    r = runner.invoke(app, ["predict", models, settings.data, "--out", str(tmp_path / "pred"), "--split", "test"])
    assert r.exit_code == 0, r.output
    res = evaluate(exp, splits=("imperial_test",), baselines=(), n_boot=50)
    assert len(res.per_subject) == 8 and storage.exists(storage.join(exp, "evaluation", "summary.parquet"))
    assert res.per_subject.model.str.startswith("multi:best(").all()  # the mirror keeps the experiment's name
    env = environment([exp])  # what `shapetune dashboard file://...` opens
    assert env[ENV_VAR] == exp and (storage.mirror_path(exp) / "evaluation" / "manifest.json").exists()


def _power_off(c, node) -> None:
    """Kill a node as a machine dies: its Ray processes and, at the same instant, the workers they started.

    ``Cluster.remove_node`` alone kills the raylet, but a trial's worker process lives on until it notices (about a
    second): long enough to finish a tiny trial and upload its last checkpoint, after which the retry elsewhere only
    re-reports the dead node's last epoch (fresh-clone CI at 780f6c6, 349989a and 413f78e).
    """
    raylet = node.all_processes["raylet"][0].process.pid
    for pid in _descendants(raylet):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    c.remove_node(node, allow_graceful=False)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: Linux only, as Ray's multi-node tests are)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_node_killed_mid_sweep_is_retried_elsewhere(cluster, bucket, tmp_path):
    c, workers = cluster
    space = write_space(tmp_path / "space.yaml", epochs=6)
    settings = SweepSettings(name="killed", space=str(space), data=storage.join(bucket, "data", "tiny"), trials=2,
                             concurrency=2, storage_path=storage.join(bucket, "experiments"), max_failures=2)
    exp = storage.join(bucket, "experiments", "killed")
    killed: dict = {}

    def kill_a_busy_node() -> None:
        # Wait for a trial's first uploaded epoch, then hard-kill the node that wrote it.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            fs, path = storage.resolve(storage.join(exp, "trials"))
            found = [i.path
                     for i in fs.get_file_info(storage.pafs.FileSelector(path, allow_not_found=True, recursive=True))
                     if i.path.endswith("checkpoint_latest/checkpoint.pt")]
            for f in found:
                try:
                    state = load_state(storage.download(f"file://{f}", tmp_path / "probe" / "checkpoint.pt").parent)
                except (OSError, ValueError):
                    continue
                node_id = state["metrics"].get("node_id")
                victim = next((w for w in workers if w.node_id == node_id), None)
                if victim is not None and state["epoch"] < 4:
                    _power_off(c, victim)
                    killed.update(node_id=node_id, trial=f.split("/")[-3], epoch=state["epoch"])
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_busy_node, daemon=True)
    killer.start()
    df = run_sweep(settings)
    killer.join(timeout=5)
    workers[:] = [w for w in workers if w.node_id != killed.get("node_id")]
    workers.append(c.add_node(num_cpus=1))  # replace it, as an autoscaler would (from the main thread: signals)
    assert killed, "no node was killed (the trials finished before the killer saw a checkpoint)"
    assert len(df) == 2 and (df.status == "completed").all() and (df.epochs == 6).all()
    row = df.set_index("trial_id").loc[killed["trial"]]
    final = storage.download(storage.join(exp, "trials", killed["trial"], "checkpoint_latest", "checkpoint.pt"),
                             tmp_path / "final" / "checkpoint.pt")
    ran = [(h["epoch"], h["node_id"][:8]) for h in load_state(final.parent)["history"]]
    assert row.node_id != killed["node_id"], (  # finished on another node
        f"killed at epoch {killed['epoch']} on {killed['node_id'][:8]}; (epoch, node) ran: {ran}")
    assert row.resumed_from_epoch >= killed["epoch"]  # from the bucket's checkpoint, not from scratch
    assert [t.state.name for t in _study(settings).get_trials()] == ["COMPLETE"] * 2  # no duplicate trial


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_runs_across_nodes_write_to_the_bucket(cluster, bucket, tmp_path):
    """Ray Train with 2 workers on 2 nodes (gloo): `shapetune train` to a bucket URI, and a sweep of 2-worker
    trials whose nested Train runs persist to the bucket and export from there. (The one test of trials that nest
    a Train run: a second one on a local folder cost 37 s for the same code path.)"""
    import ray

    c, workers = cluster
    def alive_cpus() -> float:
        return sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])

    while alive_cpus() < 3:  # a 2-worker trial needs 2 CPUs + its 0.01-CPU function
        workers.append(c.add_node(num_cpus=1))
        c.wait_for_nodes()
    tiny = ["model.grid=16", "model.width=4", "model.latent_dims=[8,4,2]", "model.ladder_hidden=32",
            "optim.batch_size=4", "optim.epochs=1"]
    run = storage.join(bucket, "runs", "lvae")
    r = CliRunner().invoke(app, ["train", "--config", "lvae", "--data", storage.join(bucket, "data", "tiny"),
                                 "--out", run, "--workers", "2", *tiny])
    assert r.exit_code == 0, r.output
    assert storage.exists(storage.join(run, "summary.json")) and storage.exists(storage.join(run, "history.csv"))
    assert (checkpoint_dir(storage.local_copy(run)) / "checkpoint.pt").exists()  # usable as an --extra from the bucket

    space = write_space(tmp_path / "space.yaml", epochs=1)
    settings = SweepSettings(name="ddp", space=str(space), data=storage.join(bucket, "data", "tiny"), trials=1,
                             storage_path=storage.join(bucket, "experiments"), workers_per_trial=2)
    df = run_sweep(settings)
    assert (df.status == "completed").all()
    tid = df.trial_id.iloc[0]
    exp = storage.join(bucket, "experiments", "ddp")
    fs, path = storage.resolve(storage.join(exp, "train_runs", tid))
    names = [i.base_name for i in fs.get_file_info(storage.pafs.FileSelector(path))]
    assert any(n.startswith("checkpoint_") for n in names), names  # Ray Train persisted to the bucket
    out = export_model(exp, tmp_path / "model")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial_id"] == tid and df.epochs.iloc[0] == 1
    assert metrics["validation"]["val_dice"] == pytest.approx(df.best_val_dice.iloc[0])
