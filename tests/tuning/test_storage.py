"""Paths and storage URIs: joins that keep a query string, round trips through a file:// bucket, incremental
mirrors, and a consistent copy of an SQLite study that is being written."""

from __future__ import annotations

import sqlite3

import pytest

from shapetune import storage
from shapetune.experiment.study_storage import publish_sqlite


def test_uri_arithmetic_keeps_scheme_and_query():
    uri = "s3://bucket/exp?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(uri, "trials", "t1") == "s3://bucket/exp/trials/t1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.name_of(storage.join(uri, "run")) == "run"
    assert storage.parent_of("gs://b/a/exp") == "gs://b/a" and storage.parent_of("/x/y") == "/x"
    assert storage.is_uri("file:///tmp/x") and not storage.is_uri("/tmp/x") and not storage.is_uri("rel/dir")
    assert storage.join("/tmp/a", "b") == "/tmp/a/b"


def test_round_trip_and_incremental_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPETUNE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    bucket = f"file://{tmp_path / 'bucket'}"
    storage.upload(src, storage.join(bucket, "ds"))
    assert storage.exists(storage.join(bucket, "ds", "sub", "b.bin"))
    assert storage.read_text(storage.join(bucket, "ds", "a.txt")) == "alpha"
    mirror = storage.local_copy(storage.join(bucket, "ds"))
    assert mirror.name == "ds" and mirror.is_relative_to(tmp_path / "cache")
    assert (mirror / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    before = (mirror / "sub" / "b.bin").stat().st_ino
    storage.write_text(storage.join(bucket, "ds", "a.txt"), "changed")
    storage.local_copy(storage.join(bucket, "ds"))
    assert (mirror / "a.txt").read_text() == "changed"  # what changed is fetched again ...
    assert (mirror / "sub" / "b.bin").stat().st_ino == before  # ... what did not is left alone
    assert storage.local_copy(src) == src.resolve()  # a local path is used in place
    with pytest.raises(storage.StorageError, match="not found"):
        storage.download(storage.join(bucket, "nothing"), tmp_path / "x")


def test_study_snapshot_is_consistent_while_written(tmp_path):
    db = tmp_path / "optuna.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x integer)")
    con.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    con.commit()
    con.execute("begin")
    con.execute("insert into t values (-1)")  # an open, uncommitted write
    target = f"file://{tmp_path / 'bucket' / 'optuna.db'}"
    publish_sqlite(db, target)
    con.rollback()
    con.close()
    copy = sqlite3.connect(storage.local_copy(storage.parent_of(target)) / "optuna.db")
    assert copy.execute("select count(*), min(x) from t").fetchone() == (1000, 0)
