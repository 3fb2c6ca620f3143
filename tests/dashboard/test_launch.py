"""``shapetune dashboard`` stops its Streamlit server when it is stopped: SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the
command leaves no process behind and nothing listening on the port. Real processes, a real port; /proc to look."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from shapetune.dashboard.launch import stop
from shapetune.dashboard.screenshots import free_port
from shapetune.tuning.sweep import SweepSettings

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of ``pid`` from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., starttime is field 22
    return int(fields[1]), fields[0], fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``: pid -> start time (to tell it from a later process given the same pid)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
            starts[int(entry.name)] = st[2]
    found, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found[p] = starts[p]
        todo.extend(children.get(p, []))
    return found


def _alive(pid: int, start: str) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A sweep that has just started (settings written, no trial yet): the cheapest folder the command accepts."""
    root = tmp_path_factory.mktemp("launch")
    exp = root / "experiments" / "starting"
    exp.mkdir(parents=True)
    settings = SweepSettings(name="starting", space="lvae_hcm", data=str(root / "data"),
                             storage_path=str(root / "experiments"))
    (exp / "sweep.json").write_text(settings.model_dump_json())
    return exp


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_stopping_the_command_stops_streamlit(experiment, sig):
    port = free_port()
    cli = [sys.executable, "-m", "shapetune.cli", "dashboard", str(experiment), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        # a session of its own, as a terminal gives a command; the test signals the command's pid only
        proc = subprocess.Popen(cli, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started: dict[int, str] = {}
        try:
            deadline = time.monotonic() + 120
            while True:  # until the server answers HTTP
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"the dashboard did not come up (exit {proc.poll()}):\n{log.read().decode()}")
                time.sleep(0.25)
            started = _descendants(proc.pid)
            assert started, "no Streamlit child under the command"
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 128 + sig  # the command exits, after its child, as a shell reports a signal
            _wait_until(lambda: not _accepts(port), 30, f"port {port} still accepts connections")
            _wait_until(lambda: not any(_alive(p, s) for p, s in started.items()), 30,
                        f"processes left behind: {[p for p, s in started.items() if _alive(p, s)]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            for pid, start in started.items():  # only what this test started, by pid
                if _alive(pid, start):
                    os.kill(pid, signal.SIGKILL)
        log.seek(0)
        assert "Traceback" not in log.read().decode(errors="replace")


CHILD = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a server that does not stop on SIGTERM
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(grandchild.pid, flush=True)
time.sleep(120)
"""


def test_stop_kills_a_group_that_ignores_sigterm_within_its_grace():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(proc.stdout.readline())
        start = _stat(grandchild)[2]
        t0 = time.monotonic()
        assert stop(proc, grace_s=1.0) == -signal.SIGKILL
        assert time.monotonic() - t0 < 10
        _wait_until(lambda: not _alive(grandchild, start), 10, "the grandchild outlived its group")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
