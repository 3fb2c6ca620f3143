"""The real thing: ``shapetune dashboard`` in a subprocess, every page loaded in headless Debian Chromium.

Playwright drives the system browser at /usr/bin/chromium (``make test`` installs Debian's package; nothing is
downloaded). Screenshots of each page land in ``test-artifacts/dashboard/``. Without a browser the test is
skipped, unless ``SHAPETUNE_REQUIRE_BROWSER=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PAGES = ["Runs", "Compare", "Latent clusters", "Shapes", "Export"]


def _browser() -> str:
    path = os.environ.get("SHAPETUNE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = ""
    if not path or not Path(path).exists():
        message = "no Chromium at /usr/bin/chromium or no playwright (make test installs both)"
        if os.environ.get("SHAPETUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(dash_storage):
    """``shapetune dashboard`` on a free localhost port; yields its URL and stops it afterwards."""
    port = _free_port()
    cli = [sys.executable, "-m", "shapetune.cli", "dashboard", str(dash_storage), "--port", str(port)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"dashboard exited early:\n{proc.stdout.read().decode()}") from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("dashboard did not answer /_stcore/health within 60 s")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def _settle(page) -> None:
    """Wait until the page's script has finished running and the title is drawn."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=180_000)
    page.wait_for_selector("h1", timeout=60_000)


def test_every_page_renders_in_chromium(server, dash_storage):
    import pandas as pd
    from playwright.sync_api import sync_playwright

    executable = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    trials = pd.read_parquet(dash_storage / "lv2d" / "trials.parquet").trial_id.tolist()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        _settle(page)
        seen = {}
        for name in PAGES:
            page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True).click()
            page.wait_for_function("name => document.querySelector('h1')?.innerText.trim() === name", arg=name,
                                   timeout=120_000)
            _settle(page)
            page.wait_for_timeout(1500)  # plotly draws after the script ends
            assert page.get_by_test_id("stException").count() == 0, f"traceback on the {name} page"
            seen[name] = {"plots": page.locator(".js-plotly-plot").count(),
                          "text": page.get_by_test_id("stMain").inner_text(),
                          # st.dataframe draws on a canvas; its cells are mirrored in an accessible grid
                          "cells": page.locator("[data-testid=stDataFrame] [role=gridcell]").all_inner_texts()}
            assert "could not be drawn" not in seen[name]["text"], seen[name]["text"]
            page.screenshot(path=str(ARTIFACTS / f"{name.lower().replace(' ', '_')}.png"), full_page=True)
        # Selecting a subject in the latent scatter opens it on the Shapes page (a real plotly click).
        page.get_by_test_id("stSidebarNav").get_by_text("Latent clusters", exact=True).click()
        page.wait_for_function("() => document.querySelector('h1')?.innerText.trim() === 'Latent clusters'")
        _settle(page)
        points = page.locator(".js-plotly-plot .scatterlayer .point")
        points.first.wait_for(timeout=60_000)
        n_points = points.count()  # the subjects drawn in the latent scatter
        point = points.first
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("() => document.querySelector('h1')?.innerText.trim() === 'Shapes'", timeout=120_000)
        _settle(page)
        opened = page.get_by_test_id("stMain").inner_text()
        browser.close()
    assert not errors, errors
    assert "Input vs reconstruction" in opened
    assert n_points >= 8 + 10  # Imperial test + ACDC subjects (misclassified ones are drawn twice: ring)
    runs = seen["Runs"]
    assert set(trials) <= set(runs["cells"])  # every run's name is in the table
    assert runs["plots"] >= 3  # parallel coordinates, optimisation history, importances
    assert "no trials recorded yet" in runs["text"] and "failed" in runs["text"]
    assert seen["Compare"]["plots"] >= 2 and "McNemar" in seen["Compare"]["text"]
    assert seen["Latent clusters"]["plots"] >= 1 and "misclassified" in seen["Latent clusters"]["text"]
    assert "Input vs reconstruction" in seen["Shapes"]["text"]
    assert "Export" in seen["Export"]["text"]
    assert all((ARTIFACTS / f"{n.lower().replace(' ', '_')}.png").stat().st_size > 10_000 for n in PAGES)
