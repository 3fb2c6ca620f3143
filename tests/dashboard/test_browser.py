"""The real thing: ``shapetune dashboard`` in a subprocess, every page loaded in headless Debian Chromium.

Playwright drives the system browser at /usr/bin/chromium (``make test`` installs Debian's package; nothing is
downloaded). Screenshots of each page land in ``test-artifacts/dashboard/``. Without a browser the test is
skipped, unless ``SHAPETUNE_REQUIRE_BROWSER=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from shapetune.dashboard.screenshots import CHROMIUM, PAGES, file_name, running_dashboard, settle, visit_all

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


def _browser() -> str:
    path = os.environ.get("SHAPETUNE_CHROMIUM", CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = ""
    if not path or not Path(path).exists():
        message = f"no Chromium at {CHROMIUM} or no playwright (make test installs both)"
        if os.environ.get("SHAPETUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_every_page_renders_in_chromium(dash_storage, fetal_study):
    executable = _browser()
    trials = pd.read_parquet(dash_storage / "lv2d" / "trials.parquet").trial_id.tolist()
    with running_dashboard([str(dash_storage), str(fetal_study[0].out)]) as url:
        seen = visit_all(url, ARTIFACTS, executable)
    assert not seen.pop("_errors")["messages"]
    for name, page in seen.items():
        assert page["exceptions"] == 0 and "could not be drawn" not in page["text"], (name, page["text"])
        assert (ARTIFACTS / file_name(name)).stat().st_size > 10_000
    assert set(seen) == set(PAGES)
    runs = seen["Runs"]
    assert set(trials) <= set(runs["cells"])  # every run's name is in the table
    assert runs["plots"] >= 1  # parallel coordinates (history and importances sit in other tabs)
    assert "no trials recorded yet" in runs["text"] and "1 trial(s) failed" in runs["text"]
    assert seen["Compare"]["plots"] >= 2 and "McNemar" in seen["Compare"]["text"]
    assert seen["Latent clusters"]["plots"] >= 1 and "misclassified" in seen["Latent clusters"]["text"]
    assert "Input vs reconstruction" in seen["Shapes"]["text"]
    assert "Export into" in seen["Export"]["text"]
    fetal = seen["Fetal skull study"]
    assert fetal["plots"] >= 4 and {"cvae", "hcvae"} <= set(fetal["cells"])  # bars, planes, case, uncertainty
    assert "Reconstruction by view subset" in fetal["text"]


def test_selecting_a_latent_point_opens_the_subject(dash_storage):
    from playwright.sync_api import sync_playwright

    executable = _browser()
    with running_dashboard([str(dash_storage / "lv2d")]) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{url}/latents")
        settle(page, "Latent clusters")
        points = page.locator(".js-plotly-plot .scatterlayer .point")
        n_points = points.count()
        box = points.first.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a real plotly click
        settle(page, "Shapes")
        text = page.get_by_test_id("stMain").inner_text()
        browser.close()
    assert n_points >= 8 + 10  # Imperial test + ACDC subjects (misclassified ones drawn twice: the ring)
    assert "Input vs reconstruction" in text and "p(HCM)" in text
