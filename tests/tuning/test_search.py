"""Optuna storage: several processes opening one new database at once all get it."""

from __future__ import annotations

import multiprocessing as mp


def _open(url: str, barrier, results) -> None:
    from shapetune.experiment.study_storage import open_storage

    barrier.wait()  # all at once: each finds no schema and starts creating it
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 -- the test reports what went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_openers_of_a_new_sqlite_storage_all_succeed(tmp_path):
    # Plain optuna.storages.RDBStorage fails here for 1-4 of 6 openers in most rounds (UNIQUE constraint
    # failed: alembic_version, or 'table already exists'): a sweep driver and a watcher starting together.
    ctx = mp.get_context("spawn")
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        outcomes = [results.get(timeout=5) for _ in procs]
        assert outcomes == ["ok"] * 6, outcomes

        import optuna

        study = optuna.create_study(study_name="after", storage=url)  # the schema is whole
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(study.trials) == 2
