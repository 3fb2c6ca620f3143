"""optuna-dashboard on a ShapeTune sweep's study (``shapetune dashboard EXP --optuna``).

A sweep's default study is a SQLite file the running sweep writes at every ask and tell; optuna-dashboard opening
that live file can fail or lock the writer (optuna-dashboard #545). So the dashboard serves a consistent snapshot
made with SQLite's online backup (the source opened read-only), in a temporary folder that is removed when the
server stops; a PostgreSQL study (``--optuna-storage``) is served directly, read by optuna-dashboard as it is.
The evaluation's report and figures are attached to each evaluated trial of the snapshot as Optuna artifacts, so
they show on the trial's page. Nothing in the experiment folder is written or unpickled.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import signal
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shapetune.dashboard.experiments import DashboardError
from shapetune.experiment.settings import read_settings
from shapetune.experiment.table import TUNE_TRIAL_ATTR

EVALUATION_FILES = ("report.md",)  # beside every figure in evaluation/figures/


def snapshot_sqlite(source: Path, dest: Path) -> None:
    """Copy the SQLite database ``source`` to ``dest`` as of one moment, while a sweep may be writing it."""
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def attach_evaluation(storage_url: str, study_name: str, exp_dir: Path, artifacts: Path) -> int:
    """Attach ``EXP/evaluation``'s report and figures to every evaluated trial of the SQLite study at
    ``storage_url`` (a snapshot), with their files in the artifact store at ``artifacts``. Returns how many trials
    got them.

    Optuna's ``upload_artifact`` refuses a finished trial (its system attributes are frozen with it), and every
    evaluated trial is finished; so the artifact records, in Optuna's own format (``artifacts:<id>`` -> the
    artifact's metadata), are written into the snapshot's ``trial_system_attributes`` table directly. Only the
    snapshot is written, never the sweep's study.
    """
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    ev = exp_dir / "evaluation"
    manifest = ev / "manifest.json"
    if not manifest.is_file() or not storage_url.startswith("sqlite:///"):
        return 0
    evaluated = {c.get("trial_id") for c in json.loads(manifest.read_text()).get("candidates", [])} - {None}
    files = [ev / f for f in EVALUATION_FILES if (ev / f).is_file()]
    files += sorted((ev / "figures").glob("*.png")) if (ev / "figures").is_dir() else []
    if not evaluated or not files:
        return 0
    artifacts.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifacts))
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    targets = [t._trial_id for t in study.get_trials(deepcopy=False)
               if t.user_attrs.get(TUNE_TRIAL_ATTR) in evaluated]
    del study
    rows = []
    for trial_id in targets:
        for f in files:
            meta = {"artifact_id": str(uuid.uuid4()), "filename": f.name,
                    "mimetype": mimetypes.guess_type(f.name)[0] or "application/octet-stream", "encoding": None}
            with f.open("rb") as fh:
                store.write(meta["artifact_id"], fh)
            # Optuna stores an attribute as the JSON of its value, and an artifact's value is the JSON of its meta
            rows.append((trial_id, f"artifacts:{meta['artifact_id']}", json.dumps(json.dumps(meta))))
    db = sqlite3.connect(storage_url.removeprefix("sqlite:///"))
    try:
        with db:
            db.executemany("INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, ?, ?)", rows)
    finally:
        db.close()
    return len(targets)


@contextmanager
def optuna_dashboard_storage(exp_dir: Path) -> Iterator[tuple[str, Path | None, str]]:
    """The storage URL optuna-dashboard should open for the sweep at ``exp_dir``, the artifact folder (None for a
    PostgreSQL study) and the study name; a SQLite study is a snapshot, removed on exit.

    Raises:
        DashboardError: ``exp_dir`` is not a sweep, or its study does not exist yet.
    """
    try:
        settings = read_settings(exp_dir)
    except Exception as exc:
        raise DashboardError(f"{exp_dir}: not a sweep ({exc})") from exc
    if settings.optuna_storage:
        yield settings.optuna_storage, None, settings.name
        return
    db = exp_dir / "optuna.db"
    if not db.is_file():
        raise DashboardError(f"{db}: no Optuna study yet (the sweep has not started a trial)")
    tmp = Path(tempfile.mkdtemp(prefix="shapetune-optuna-"))
    try:
        snapshot_sqlite(db, tmp / "optuna.db")
        yield f"sqlite:///{tmp / 'optuna.db'}", tmp / "artifacts", settings.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def serve_optuna(exp_dir: Path, host: str, port: int) -> None:
    """Run optuna-dashboard on the sweep's study until interrupted (see the module's docstring).

    Raises:
        DashboardError: not a sweep, no study yet, or optuna-dashboard not installed.
    """
    try:
        from optuna_dashboard import run_server
    except ImportError as exc:
        raise DashboardError("--optuna needs optuna-dashboard: pip install 'shapetune[optuna-dashboard]'") from exc
    from optuna.artifacts import FileSystemArtifactStore

    # SIGTERM (a service manager, the tests) ends the server through Python, so the snapshot folder is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with optuna_dashboard_storage(Path(exp_dir)) as (url, artifacts, name):
        store = None
        if artifacts is not None:
            attach_evaluation(url, name, Path(exp_dir), artifacts)
            artifacts.mkdir(parents=True, exist_ok=True)
            store = FileSystemArtifactStore(str(artifacts))
        run_server(url, host=host, port=port, artifact_store=store)
