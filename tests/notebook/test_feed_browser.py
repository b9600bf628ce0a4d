"""A real browser (D6 recipe: Debian chromium driven by Playwright) watches the live decision feed in
JupyterLab: rows appear while the cell is still running, and a static snapshot stays when it ends.

Needs the JupyterLab virtual environment described in test_approval_browser.py (`/tmp/venvlab`, or
`THOTH_TEST_LAB_VENV`) for the server and frontend; the kernel is this interpreter. Skipped when the
venv, chromium or playwright is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab import diagnosis, jupyter_lab, running_cell

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CELL = """\
%load_ext thoth_nb
import time, thoth_nb
def web_search(query):
    return "results " + query
def delete_file(path):
    return "deleted " + path
tools = thoth_nb.instrument([web_search, delete_file], agent_id="browser-feed", tenant_id="t1",
                            approved_scope=["web_search"], enforcement="block")
tools[0]("first-query")
time.sleep(1.5)
try:
    tools[1]("/tmp/x")
except thoth_nb.ThothPolicyViolation:
    pass
time.sleep(10)
print("CELL DONE")
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with jupyter_lab(tmp_path, {"feed.ipynb": (CELL, "thothk")}, {"thothk": sys.executable}) as served:
        yield served


FEED_HAS = "(text) => [...document.querySelectorAll('.thoth-feed')].some(e => e.innerText.includes(text))"


def test_feed_rows_reach_the_browser_while_the_cell_runs(lab: tuple[str, str]) -> None:
    base, token = lab
    with running_cell(base, token, "lab/tree/feed.ipynb") as page:
        try:
            page.wait_for_function(FEED_HAS, arg="first-query", timeout=60_000)
            page.wait_for_function(FEED_HAS, arg="delete_file", timeout=30_000)
        except Exception as exc:
            raise AssertionError("no live feed; " + diagnosis(base, token, page)) from exc
        cell = page.locator(".jp-Cell").first
        outputs = cell.locator(".jp-OutputArea").first.inner_text()
        # the BLOCK row is on screen while the cell still sleeps: it arrived from a busy kernel
        assert "[*]" in cell.locator(".jp-InputPrompt").inner_text()
        assert "CELL DONE" not in outputs
        feed = page.locator(".thoth-feed").first.inner_text()
        assert "BLOCK" in feed and "ALLOW" in feed and "browser-feed" in feed
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea')].some(e => e.innerText.includes('CELL DONE'))",
            timeout=60_000)
        final = page.locator(".thoth-feed").first.inner_text()  # the static snapshot replaced the widget
        assert "2 governed calls" in final and "delete_file" in final
