"""The driver's Ray: starting (or joining) it, and what a person sees while it runs: ShapeTune's own lines once,
Ray's lines in a log file.

Ray forwards every worker's stdout and stderr to the driver, prefixed with the actor's name. Under Ray Train V2 a
worker's ``print`` reaches the driver twice (Train patches ``print`` into its logger, which writes to stderr, and
tees to stdout), and the controller's banners ("Requesting resources", "Reporting training result …",
"Checkpoint successfully created at …") come with it: a 2-epoch ``shapetune train`` showed each epoch line twice
among some 50 lines of Ray's. :func:`route_ray_output` routes the forwarded lines instead: every line into a log
file, the lines ShapeTune marks (:data:`MARK`) once to the console without Ray's prefix.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY_LOG = "ray.log"  # in the run or experiment folder
MARK = "[shapetune] "  # a worker line that starts with it is for the person at the console


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start (or reuse) a local Ray instance."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            # Ray starts its workers at nice 15 by default, below its own daemons; on a small machine that
            # made the training workers lose ~10 points of throughput to them (benchmarks/RESULTS.md).
            os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address=address or None, num_cpus=None if address else num_cpus, log_to_driver=True,
                 configure_logging=False)


def marked(line: str) -> str:
    """``line`` marked for the console (a worker's print that :func:`route_ray_output` shows)."""
    return MARK + line


class LineRouter:
    """A handler for Ray's forwarded worker output: all lines appended to ``log_path``, marked lines once to
    ``echo``. It opens the file per batch, so it can stay installed after its run: lines Ray delivers late (its log
    monitor lags the workers) still reach that run's log."""

    def __init__(self, log_path: Path, echo: Callable[[str], None]):
        self.log_path, self.echo = log_path, echo
        self.seen: set[tuple[Any, str]] = set()
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def __call__(self, data: dict[str, Any]) -> None:
        self.last = time.monotonic()
        who = f"({data.get('actor_name') or data.get('task_name') or 'worker'} pid={data.get('pid')}"
        who += f", ip={data.get('ip')})" if data.get("ip") and data.get("ip") != data.get("localhost") else ")"
        stream = "err" if data.get("is_err") else "out"
        lines = data.get("lines") or []
        with self.lock:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.writelines(f"{who} [{stream}] {line}\n" for line in lines)
            for line in lines:
                if line.startswith(MARK) and (data.get("pid"), line) not in self.seen:
                    # Train V2 sends a print on both streams; once is enough
                    self.seen.add((data.get("pid"), line))
                    self.echo(line[len(MARK):])


def _echo(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


HANDLER = "shapetune_console"
_router: LineRouter | None = None  # the latest routing's, while it routes
_routed: dict[str, list[logging.Handler]] = {}  # a routed logger's name -> the handlers it had before


def route_logger(name: str, log_path: str | Path | None) -> None:
    """A library's logger (``ray``, ``optuna``) into ``log_path``, its errors to the console as well; None puts
    back the handlers it had."""
    logger = logging.getLogger(name)
    if name in _routed:
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        for h in _routed.pop(name):
            logger.addHandler(h)
    if log_path is None:
        return
    _routed[name] = list(logger.handlers)
    for h in _routed[name]:
        logger.removeHandler(h)
    logger.addHandler(_file_handler(Path(log_path)))
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    logger.addHandler(errors)


def _file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("(driver) %(levelname)s %(name)s: %(message)s"))
    return handler


def route_ray_output(log_path: str | Path | None, echo: Callable[[str], None] = _echo) -> Path | None:
    """Start (or reuse) Ray, with its forwarded worker output and the driver's Ray warnings appended to
    ``log_path`` and ShapeTune's marked lines sent to ``echo``; ``log_path`` None (``--verbose``) leaves Ray's own
    printing as it is.

    The routing stays in place until the next call (the process's next run), so lines Ray delivers after a run
    has returned (its log monitor lags the workers) still go to that run's log instead of the console.

    Returns:
        The log file's path (None when Ray prints).
    """
    import ray  # noqa: F401  (before touching the "ray" logger: importing Ray configures it)

    global _router
    path = None if log_path is None else Path(log_path).resolve()
    if path is None:
        _router = None
        route_logger("ray", None)
        ensure_ray()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # ray.init(configure_logging=False) clears the "ray" logger's handlers, so its own warnings (e.g. "Token
        # authentication is enabled ...") fell to Python's last-resort handler on stderr: that handler is the file
        # while Ray starts.
        last_resort, logging.lastResort = logging.lastResort, _file_handler(path)
        try:
            ensure_ray()
        finally:
            logging.lastResort.close()
            logging.lastResort = last_resort
        route_logger("ray", path)
    dispatcher = _dispatcher()
    dispatcher.remove_handler(HANDLER)
    if path is None:
        if "ray_print_logs" not in {name for name, _ in dispatcher.handlers}:  # an earlier routing removed it
            from ray._private.worker import print_to_stdstream

            dispatcher.add_handler("ray_print_logs", functools.partial(print_to_stdstream, ignore_prefix=False))
    else:
        dispatcher.remove_handler("ray_print_logs")
        _router = LineRouter(path, echo)
        dispatcher.add_handler(HANDLER, _router)
    return path


def settle(quiet_s: float = 0.5, timeout_s: float = 5.0) -> None:
    """Wait until Ray has forwarded nothing for ``quiet_s`` (at most ``timeout_s``): a run's last epoch line reaches
    the driver a moment after the run returns (Ray's log monitor polls the workers' files), and should print before
    the summary under it."""
    if _router is None:
        return
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and time.monotonic() - _router.last < quiet_s:
        time.sleep(0.05)


def _dispatcher():
    # Private to Ray (ray._private.ray_logging, Ray 2.60): the one place the driver sees the forwarded lines before
    # they are printed; Ray's own printer is the handler named "ray_print_logs".
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    return global_worker_stdstream_dispatcher
