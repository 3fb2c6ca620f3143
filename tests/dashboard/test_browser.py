"""The real thing: ``shapetune dashboard`` in a subprocess, every page loaded in headless Debian Chromium.

Playwright drives the system browser at /usr/bin/chromium (``make test`` installs Debian's package; nothing is
downloaded). Screenshots of each page land in ``test-artifacts/dashboard/``. Without a browser the test is
skipped, unless ``SHAPETUNE_REQUIRE_BROWSER=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import os
import time
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


# The latent scatter's first point once plotly has drawn every point of the figure's scatter traces and the point
# has stayed put between two polls (Streamlit re-renders the chart as it lays it out) inside the viewport:
# its box, else false.
POINT_READY = """() => {
  const gd = document.querySelector('[data-testid=stPlotlyChart] .js-plotly-plot');
  if (!gd || !gd._fullLayout || !gd.calcdata || getComputedStyle(gd).visibility !== 'visible') return false;
  const points = gd.querySelectorAll('.scatterlayer .point');
  const expected = gd.calcdata.filter(cd => cd[0] && cd[0].trace.type === 'scatter')
                              .reduce((n, cd) => n + cd.length, 0);
  if (!points.length || points.length !== expected) return false;
  const r = points[0].getBoundingClientRect();
  const box = {x: r.x, y: r.y, width: r.width, height: r.height};
  const key = JSON.stringify([box, points.length, gd._fullLayout.width, gd._fullLayout.height]);
  const steady = gd.__pointKey === key;
  gd.__pointKey = key;
  const inside = r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
  return steady && inside && gd._fullLayout.clickmode.includes('select') && box;
}"""
# What plotly hovers at the mouse, which its click-to-select uses: the subject under the pointer, else false.
HOVERED = """() => {
  const gd = document.querySelector('[data-testid=stPlotlyChart] .js-plotly-plot');
  const h = gd && gd._hoverdata;
  return !!(h && h.length && h[0].customdata) && h[0].customdata[0];
}"""


def _hover_a_point(page, timeout_ms: int = 60_000) -> str:
    """Put the mouse on the scatter's first point once it is drawn and hit-testable: plotly selects on click what
    it hovers, so wait until it hovers a subject there (moving again if a redraw ate the first hover).
    Returns that subject."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator("[data-testid=stPlotlyChart]").first.scroll_into_view_if_needed(timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        box = page.wait_for_function(POINT_READY, timeout=timeout_ms, polling=100).json_value()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 1, y - 1)
        page.mouse.move(x, y)
        try:
            return page.wait_for_function(HOVERED, timeout=5_000, polling=50).json_value()
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise


def test_selecting_a_latent_point_opens_the_subject(dash_storage):
    from playwright.sync_api import sync_playwright

    executable = _browser()
    with running_dashboard([str(dash_storage / "lv2d")]) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{url}/latents")
            settle(page, "Latent clusters")  # the script has ended and the scatter is drawn
            subject = _hover_a_point(page)
            n_points = page.locator(".js-plotly-plot .scatterlayer .point").count()
            page.mouse.down()  # a real plotly click where it hovers the point
            page.mouse.up()
            settle(page, "Shapes")  # the selection reruns the page, which switches to Shapes
            text = page.get_by_test_id("stMain").inner_text()
            shown = page.get_by_role("combobox", name="Subject").input_value()
            scenes = _show_3d(page)
        finally:
            browser.close()
    assert n_points >= 8 + 10  # Imperial test + ACDC subjects (misclassified ones drawn twice: the ring)
    assert "Input vs reconstruction" in text and "p(HCM)" in text
    assert shown == subject  # the Shapes page opened on the subject that was clicked
    # The 3D tab: two WebGL scenes (ED, ES) drawn with the reconstruction in colour over the translucent input.
    assert scenes["webgl"] >= 2 and scenes["colours"] > 200, scenes


# Per WebGL canvas of the first 3D chart: whether it holds a WebGL context, and its size.
WEBGL = """() => [...document.querySelectorAll('[data-testid=stPlotlyChart] .gl-container canvas')]
  .filter(c => c.offsetParent !== null && c.width > 0)
  .map(c => !!(c.getContext('webgl2') || c.getContext('webgl')))"""


def _show_3d(page) -> dict:
    """Open the first "3D surfaces" tab, wait for its WebGL scenes, screenshot the chart; the number of live WebGL
    canvases and of distinct colours in the chart's screenshot."""
    import io

    from PIL import Image

    page.get_by_role("tab", name="3D surfaces").first.click()
    page.wait_for_function(f"() => ({WEBGL})().length >= 2", timeout=60_000, polling=200)
    page.wait_for_timeout(1500)  # plotly draws the scenes after creating their canvases
    chart = page.locator("[data-testid=stPlotlyChart]:has(.gl-container)").first
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = chart.screenshot(path=str(ARTIFACTS / "shapes_3d.png"))
    colours = len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20) or [])
    return {"webgl": sum(page.evaluate(WEBGL)), "colours": colours}
