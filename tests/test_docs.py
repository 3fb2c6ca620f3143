"""The documentation site: it builds strictly, a broken link fails the build, and the README's links resolve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs", reason="the docs extra (installed by make test)")


def _build(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(root / "site")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def site_copy(tmp_path: Path) -> Path:
    """What the build reads: the config, the pages, the package (API reference) and the results it includes."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "RESULTS.md", tmp_path / "benchmarks")
    return tmp_path


def test_the_site_builds_and_a_broken_link_fails_it(site_copy: Path):
    ok = _build(site_copy)
    assert ok.returncode == 0, ok.stderr
    assert (site_copy / "site" / "api" / "evaluation" / "index.html").read_text().count("pair_metrics") > 1
    page = site_copy / "docs" / "evaluation.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no_such_page.md).\n")
    broken = _build(site_copy)
    assert broken.returncode != 0 and "no_such_page.md" in broken.stderr


def test_a_page_left_out_of_the_navigation_fails_the_build(site_copy: Path):
    (site_copy / "docs" / "orphan.md").write_text("# Orphan\n")
    res = _build(site_copy)
    assert res.returncode != 0 and "orphan.md" in res.stderr


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert 120 <= len(text.splitlines()) <= 250  # what a newcomer needs first; the rest lives in docs/
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert any(t.startswith("docs/") for t in local)
    for t in local:
        assert (ROOT / t).exists(), f"README links to {t}, which does not exist"
