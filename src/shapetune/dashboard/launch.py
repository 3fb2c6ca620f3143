"""Start the dashboard: ``streamlit run`` on the app with the experiments passed through the environment.

Streamlit runs as a child in its own process group; SIGTERM, SIGINT or SIGHUP to ``shapetune dashboard`` stops that
group (SIGTERM, then SIGKILL after a grace period) before the command exits, so no server is left listening.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shapetune.dashboard.common import ENV_VAR
from shapetune.dashboard.experiments import DashboardError, discover, sync
from shapetune import storage

APP = Path(__file__).with_name("app.py")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 10.0  # how long Streamlit gets to shut down on SIGTERM before its group is killed


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


class _Stop(Exception):
    """A stop signal reached the parent while Streamlit ran."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the whole group is gone already
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def stop(proc: subprocess.Popen, grace_s: float = GRACE_S) -> int:
    """Stop ``proc`` and everything in its process group: SIGTERM, up to ``grace_s`` to exit, then SIGKILL.
    Returns ``proc``'s exit code (negative: the signal that ended it)."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # the leader's exit does not end the rest of its group: wait for that too, within the same bound
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None or _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=grace_s)  # SIGKILL cannot be ignored; the bound only guards a stuck kernel


def serve(env: dict[str, str], host: str = "127.0.0.1", port: int = 8501, grace_s: float = GRACE_S) -> int:
    """Run the dashboard with the :func:`environment` of its experiments until Streamlit exits (its exit code) or
    a SIGTERM, SIGINT or SIGHUP arrives: then Streamlit's process group is stopped (:func:`stop`) and the return
    is 128 + the signal's number, as a shell reports a process ended by it."""
    received: list[int] = []
    armed = [False]  # raise on the first signal once the child is known; only record the ones before and after

    def on_signal(signum, _frame) -> None:
        received.append(signum)
        if armed[0]:
            armed[0] = False
            raise _Stop(signum)

    # A Python-level handler (not SIG_IGN) is reset to the default in the exec'd child: Streamlit keeps its own.
    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    proc = None
    try:
        # its own session and process group: stop() reaches Streamlit and whatever it started, never this
        # process; the terminal's Ctrl-C and hangup reach this process, which passes them on
        proc = subprocess.Popen(command(host, port), env=env, start_new_session=True)
        armed[0] = True
        if received:  # a signal came while the child started
            armed[0] = False
            raise _Stop(received[0])
        return proc.wait()
    except _Stop as exc:
        stop(proc, grace_s)
        return 128 + exc.signum
    finally:
        armed[0] = False
        if proc is not None and (proc.poll() is None or _group_alive(proc.pid)):
            stop(proc, grace_s)  # any other way out of here (an exception) stops the server too
        for sig, handler in previous.items():
            signal.signal(sig, handler)
