"""Drive a running dashboard in headless Chromium (Playwright on the system browser): visit every page, record
what is visible, save full-page screenshots. Used by the browser test and for the screenshots in the README and docs/:

    python -m shapetune.dashboard.screenshots EXPERIMENTS... --out docs/screenshots
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

PAGES = ["Runs", "Compare", "Latent clusters", "Shapes", "Export", "Fetal skull study"]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright never downloads a browser here


def file_name(page: str) -> str:
    return page.lower().replace(" ", "_") + ".png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_dashboard(paths: list[str], timeout_s: float = 60, extra: tuple[str, ...] = (),
                      health: str = "/_stcore/health"):
    """``shapetune dashboard PATHS [EXTRA]`` on a free localhost port; yields its URL once ``health`` answers, stops
    it on exit."""
    port = free_port()
    cli = [sys.executable, "-m", "shapetune.cli", "dashboard", *map(str, paths), *extra, "--port", str(port)]
    # the server's log goes to a file: a pipe nobody reads would block Streamlit once 64 KiB of log filled it
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cli, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if urllib.request.urlopen(f"{url}{health}", timeout=2).status == 200:
                        break
                except OSError:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"dashboard exited early:\n{log.read().decode(errors='replace')}") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"dashboard did not answer on {url} within {timeout_s:.0f} s") from None
                    time.sleep(0.5)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # `shapetune dashboard` stops its Streamlit server, then exits
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise


# True once what the page shows is drawn. Streamlit loads an element's code lazily and shows a skeleton meanwhile
# (widgets, metrics, charts), after the script has ended; a plotly chart is hidden until Streamlit has measured its
# width, and plotly draws it after that. A data frame draws on a canvas and mirrors its cells in an accessible
# <table role=grid> only once its width is measured: the browser test once read no cells on a page whose charts had
# been drawn (fresh-clone CI at 413f78e). Elements out of sight (an inactive tab) are not waited for.
DRAWN = """() => {
  const main = document.querySelector('[data-testid=stMain]');
  if (!main) return false;
  const shown = el => el.checkVisibility();
  if ([...main.querySelectorAll('[data-testid=stSkeleton]')].some(shown)) return false;
  const plotted = c => {
    const gd = c.querySelector('.js-plotly-plot');
    return !!(gd && gd._fullLayout && gd.querySelector('.main-svg') && getComputedStyle(gd).visibility === 'visible');
  };
  return [...main.querySelectorAll('[data-testid=stPlotlyChart]')].filter(shown).every(plotted)
    && [...main.querySelectorAll('[data-testid=stDataFrame]')].filter(shown).every(d => d.querySelector('[role=grid]'))
    && [...main.querySelectorAll('img')].filter(shown).every(img => img.complete);
}"""


def settle(page, title: str | None = None, timeout_ms: int = 180_000) -> None:
    """Wait until the page shows ``title`` as its heading, its script has finished and what it shows is drawn
    (:data:`DRAWN`); each wait bounded by ``timeout_ms``."""
    if title is not None:
        page.wait_for_function("t => document.querySelector('h1')?.innerText.trim() === t", arg=title,
                               timeout=timeout_ms)
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout_ms)
    page.wait_for_function(DRAWN, timeout=timeout_ms, polling=100)


def open_page(page, name: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True).click()
    settle(page, name)


def visit_all(url: str, out_dir: Path | None, executable: str = CHROMIUM,
              viewport: tuple[int, int] = (1400, 2400)) -> dict[str, dict]:
    """Per page: the number of plotly charts, the visible text, the data-grid cells and any exception shown;
    with ``out_dir``, a full-page screenshot ``<page>.png`` each. Browser-side errors under ``"_errors"``."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, dict] = {}
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            settle(page)
            for name in PAGES:
                open_page(page, name)
                seen[name] = {
                    "plots": page.locator(".js-plotly-plot").count(),
                    "text": page.get_by_test_id("stMain").inner_text(),
                    # st.dataframe draws on a canvas; its cells are mirrored in an accessible grid
                    "cells": page.locator("[data-testid=stDataFrame] [role=gridcell]").all_inner_texts(),
                    "exceptions": page.get_by_test_id("stException").count(),
                }
                if out_dir is not None:
                    Path(out_dir).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(Path(out_dir) / file_name(name)), full_page=True)
        finally:
            browser.close()
    seen["_errors"] = {"messages": errors}
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description="Screenshots of every dashboard page")
    ap.add_argument("experiments", nargs="+")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1600)
    args = ap.parse_args()
    with running_dashboard(args.experiments) as url:
        seen = visit_all(url, Path(args.out), viewport=(args.width, args.height))
    for name in PAGES:
        print(f"{name}: {seen[name]['plots']} plot(s), {seen[name]['exceptions']} exception(s) -> "
              f"{Path(args.out) / file_name(name)}")


if __name__ == "__main__":
    main()
