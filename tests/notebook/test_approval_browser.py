"""A real browser (D6 recipe: Debian chromium driven by Playwright) clicks the inline Approve button in
JupyterLab while a sync agent's cell is still running, and sees the cell finish with the tool's result.

Needs a virtual environment with JupyterLab 4 (kept apart so the test's own environment is untouched):

    python -m venv /tmp/venvlab
    /tmp/venvlab/bin/pip install "jupyterlab==4.*" ipykernel ipywidgets==8.1.9 anywidget -e .

(`THOTH_TEST_LAB_VENV` points elsewhere.) Skipped when the venv, chromium or playwright is missing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

LAB_VENV = Path(os.environ.get("THOTH_TEST_LAB_VENV", "/tmp/venvlab"))

CELL = """\
%load_ext thoth_nb
import os, time, thoth_nb
from thoth_nb.notebook import approval
approval._installed.force_http = bool(os.environ.get("THOTH_TEST_FORCE_HTTP"))
def pay(amount: int, to: str) -> str:
    print("RESUMED_AT", repr(time.time()))
    return f"paid {amount} to {to}"
pay_g = thoth_nb.governed(pay, agent_id="browser-agent", approved_scope=["pay"], tenant_id="t1",
                          policy="policy.yaml", enforcement="step_up", step_up_timeout_minutes=2)
print("RESULT", pay_g(5, to="bob"))
print("AFTER THE WAIT")
"""

POLICY = """\
version: 1
default: allow
rules:
  - id: pay-needs-human
    tool: pay
    decision: step_up
    reason: payments need a human
    severity: high
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


KERNELS = {  # the kernel the notebook runs on (the server and frontend stay JupyterLab 4.6 / Notebook 7.6)
    "ipykernel-lab": str(LAB_VENV / "bin" / "python"),
    "ipykernel-7.3": "/tmp/venv73/bin/python",
    "ipykernel-6.29": "/tmp/venv629/bin/python",
}


@pytest.fixture(params=list(KERNELS))
def kernel_python(request: pytest.FixtureRequest) -> str:
    python = KERNELS[request.param]
    if not Path(python).exists():
        pytest.skip(f"no virtual environment with {python}")
    return python


@pytest.fixture(params=["widgets", "http"])
def server(tmp_path: Path, request: pytest.FixtureRequest, kernel_python: str) -> Iterator[tuple[str, str, str]]:
    jupyter = LAB_VENV / "bin" / "jupyter"
    if not jupyter.exists():
        pytest.skip(f"no JupyterLab venv at {LAB_VENV}")
    if shutil.which("chromium") is None:
        pytest.skip("no chromium")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "policy.yaml").write_text(POLICY)
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                     "source": CELL}],
          "metadata": {"kernelspec": {"display_name": "thoth test", "language": "python", "name": "thothk"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "approve.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    env["THOTH_HOME"] = str(tmp_path / "home")
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jconfig")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "jruntime")
    spec = tmp_path / "jdata" / "kernels" / "thothk"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [kernel_python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "thoth test", "language": "python"}))
    env["JUPYTER_PATH"] = str(tmp_path / "jdata")
    if request.param == "http":  # the card's direct buttons: anywidget + fetch() to the kernel's HTTP thread
        env["THOTH_TEST_FORCE_HTTP"] = "1"
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 150  # a loaded CI machine starts JupyterLab slowly
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
        yield f"http://127.0.0.1:{port}", token, request.param
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _kernel_idle(base: str, token: str, timeout: float) -> None:
    """Wait until the server has a kernel for the notebook and it reports idle (frontend-independent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = httpx.get(f"{base}/api/kernels", params={"token": token}, timeout=5, trust_env=False).json()
        if isinstance(kernels, list) and kernels and all(k.get("execution_state") == "idle" for k in kernels):
            return
        time.sleep(0.3)
    raise AssertionError("the notebook's kernel never became idle")


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_browser_click_approves_while_the_cell_runs(server: tuple[str, str, str], frontend: str,
                                                    kernel_python: str) -> None:
    from playwright.sync_api import sync_playwright

    base, token, path_kind = server
    label = "Approve (direct)" if path_kind == "http" else "Approve once"
    if frontend == "notebook7" and not (LAB_VENV / "bin" / "jupyter-notebook").exists():
        pytest.skip("notebook 7 is not installed in the lab venv")
    path = "lab/tree/approve.ipynb" if frontend == "lab" else "notebooks/approve.ipynb"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/{path}?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _kernel_idle(base, token, 60)
            time.sleep(1.0)  # let the frontend finish connecting to the kernel
            page.click(".jp-Cell .jp-InputArea-editor")
            page.keyboard.press("Shift+Enter")
            approve = page.locator("button", has_text=label)
            try:
                approve.wait_for(timeout=60_000)
            except Exception as exc:
                raise AssertionError("no card; page says: " + page.inner_text("body")[-3000:]) from exc
            time.sleep(0.5)  # the agent is now waiting
            assert "[*]" in page.locator(".jp-Cell").first.locator(".jp-InputPrompt").inner_text()
            page.evaluate("() => document.addEventListener('click', () => { window.__clickedAt = Date.now() / 1000 },"
                          " true)")
            approve.click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-OutputArea')]"
                ".some(e => e.innerText.includes('AFTER THE WAIT'))",
                timeout=30_000)
            text = page.locator(".jp-Cell").first.locator(".jp-OutputArea").first.inner_text()
            assert "RESULT paid 5 to bob" in text
            page.wait_for_function(  # the card turns into the record of the decision
                "() => [...document.querySelectorAll('.jp-OutputArea')]"
                ".some(e => e.innerText.includes('Approved once'))",
                timeout=10_000)
            match = re.search(r"RESUMED_AT ([0-9.]+)", text)
            assert match is not None
            latency = float(match.group(1)) - float(page.evaluate("() => window.__clickedAt"))
            how = ""
            if path_kind == "http":  # which URL answered: through jupyter-server-proxy or straight to 127.0.0.1
                how = page.evaluate("() => document.querySelector('[data-resolved-via]')?.dataset.resolvedVia || ''")
                assert how in ("(direct)", "(via proxy)"), how
            print(f"{frontend} (browser, {kernel_python}, {path_kind} {how}) click -> resume {latency * 1000:.0f} ms")
            assert latency < 2.0
        finally:
            browser.close()
