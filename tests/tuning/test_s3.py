"""The S3 protocol end to end, against a local S3 server (moto's ThreadedMotoServer on 127.0.0.1): a sweep whose
data, Tune state, checkpoints, study and summary all live in ``s3://`` (reached through pyarrow, as Ray does),
then export to S3, predict from it, and the dashboard's mirror.

The URIs carry the endpoint in their query (``?endpoint_override=127.0.0.1:PORT&scheme=http``), which is how
ShapeTune and Ray address any S3-compatible store (MinIO, Ceph, a cloud bucket through a private endpoint).
"""

from __future__ import annotations

import os

import optuna
import pandas as pd
import pytest

from shapetune import storage
from shapetune.serving.export import export_model, verify_export
from shapetune.serving.predict import predict
from shapetune.tuning.sweep import SweepSettings, run_sweep

from ..conftest import S3_TEST_CREDENTIALS, write_space



@pytest.fixture(scope="module")
def s3(ray_local):
    """A local S3 server with a bucket. The session's Ray workers already hold its (dummy) credentials: conftest
    sets them before any Ray starts (restarting Ray here to hand them over cost ~20 s)."""
    import boto3
    from moto.server import ThreadedMotoServer

    assert all(os.environ.get(k) == v for k, v in S3_TEST_CREDENTIALS.items())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="shapetune")
    yield lambda *parts: storage.join("s3://shapetune", *parts) + f"?endpoint_override={host}:{port}&scheme=http"
    server.stop()


def test_sweep_export_and_predict_through_s3(s3, tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    storage.upload(tiny_prepared, s3("data", "tiny"))
    space = write_space(tmp_path / "space.yaml", epochs=2)
    settings = SweepSettings(name="s3sweep", space=str(space), data=s3("data", "tiny"), trials=2, concurrency=2,
                             storage_path=s3("experiments"))
    df = run_sweep(settings)
    assert len(df) == 2 and (df.status == "completed").all()
    exp = s3("experiments", "s3sweep")
    fs, path = storage.resolve(exp)
    assert path == "shapetune/experiments/s3sweep" and type(fs).__name__ == "S3FileSystem"
    for f in ("sweep.json", "space.yaml", "optuna.db", "trials.parquet"):
        assert storage.exists(storage.join(exp, f)), f
    assert any(i.base_name.startswith("experiment_state") for i in fs.get_file_info(storage.pafs.FileSelector(path)))
    for tid in df.trial_id:
        assert storage.exists(storage.join(exp, "trials", tid, "checkpoint_best", "checkpoint.pt"))
    mirror = storage.local_copy(exp)
    study = optuna.load_study(study_name="s3sweep", storage=f"sqlite:///{mirror / 'optuna.db'}")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 2
    assert set(pd.read_parquet(mirror / "trials.parquet").trial_id) == set(df.trial_id)

    model = s3("models", "best")
    export_model(exp, model)
    verify_export(storage.local_copy(model))
    pred = predict(model, s3("data", "tiny"), tmp_path / "pred", split="test", write_nifti=False)
    assert len(pred) == 8 and pred.p_hcm.between(0, 1).all()
