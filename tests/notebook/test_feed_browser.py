"""A real browser (D6 recipe: Debian chromium driven by Playwright) watches the live decision feed in
JupyterLab: rows appear while the cell is still running, and a static snapshot stays when it ends.

Needs the JupyterLab virtual environment described in test_approval_browser.py (`/tmp/venvlab`, or
`THOTH_TEST_LAB_VENV`) for the server and frontend; the kernel is this interpreter. Skipped when the
venv, chromium or playwright is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

LAB_VENV = Path(os.environ.get("THOTH_TEST_LAB_VENV", "/tmp/venvlab"))

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    jupyter = LAB_VENV / "bin" / "jupyter"
    if not jupyter.exists():
        pytest.skip(f"no JupyterLab venv at {LAB_VENV}")
    if shutil.which("chromium") is None:
        pytest.skip("no chromium")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path / "lab"
    root.mkdir()
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                     "source": CELL}],
          "metadata": {"kernelspec": {"display_name": "thoth feed", "language": "python", "name": "thothfeed"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "feed.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    env.update({"THOTH_HOME": str(tmp_path / "home"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig"),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "jruntime"), "JUPYTER_PATH": str(tmp_path / "jdata")})
    spec = tmp_path / "jdata" / "kernels" / "thothfeed"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "thoth feed", "language": "python"}))
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2,
                             trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _kernel_idle(base: str, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = httpx.get(f"{base}/api/kernels", params={"token": token}, timeout=5, trust_env=False).json()
        if kernels and all(k.get("execution_state") == "idle" for k in kernels):
            return
        time.sleep(0.3)
    raise AssertionError("the notebook's kernel never became idle")


FEED_HAS = "(text) => [...document.querySelectorAll('.thoth-feed')].some(e => e.innerText.includes(text))"


def test_feed_rows_reach_the_browser_while_the_cell_runs(lab: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    base, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/feed.ipynb?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _kernel_idle(base, token, 60)
            time.sleep(1.0)
            page.click(".jp-Cell .jp-InputArea-editor")
            page.keyboard.press("Shift+Enter")
            try:
                page.wait_for_function(FEED_HAS, arg="first-query", timeout=60_000)
                page.wait_for_function(FEED_HAS, arg="delete_file", timeout=30_000)
            except Exception as exc:
                raise AssertionError("no live feed; page says: " + page.inner_text("body")[-3000:]) from exc
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
        finally:
            browser.close()
