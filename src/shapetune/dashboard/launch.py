"""Start the dashboard: ``streamlit run`` on the app with the experiments passed through the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shapetune.dashboard.common import ENV_VAR
from shapetune.dashboard.experiments import DashboardError, discover, sync
from shapetune.platform import storage

APP = Path(__file__).with_name("app.py")


def command(host: str, port: int) -> list[str]:
    """The Streamlit command line: headless, bound to ``host``, no usage statistics, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


def environment(paths: list[str]) -> dict[str, str]:
    """The environment for the app, after checking that every path holds an experiment."""
    try:
        sync(paths)  # experiments at a storage URI: a fresh local mirror to read
    except OSError as exc:
        raise DashboardError(f"cannot read from storage: {exc}") from exc
    discover(paths)  # raises DashboardError with the bad path
    return {**os.environ, ENV_VAR: "\n".join(dict.fromkeys(map(storage.normalise, paths)))}


def serve(env: dict[str, str], host: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the dashboard with the :func:`environment` of its experiments until interrupted; Streamlit's exit code."""
    return subprocess.call(command(host, port), env=env)
