"""A real browser (D6 recipe: Debian chromium driven by Playwright) clicks the inline Approve button in
JupyterLab while a sync agent's cell is still running, and sees the cell finish with the tool's result.

Needs a virtual environment with JupyterLab 4 (kept apart so the test's own environment is untouched):

    python -m venv /tmp/venvlab
    /tmp/venvlab/bin/pip install "jupyterlab==4.*" ipykernel ipywidgets==8.1.9 anywidget -e .

(`THOTH_TEST_LAB_VENV` points elsewhere.) Skipped when the venv, chromium or playwright is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab import LAB_VENV, diagnosis, jupyter_lab, running_cell

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CELL = """\
%load_ext thoth_nb
import time, thoth_nb
from thoth_nb.notebook import approval
approval._installed.force_http = FORCE_HTTP
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


KERNELS = {  # the kernel the notebook runs on (the server and frontend stay JupyterLab 4.6 / Notebook 7.6)
    "ipykernel-lab": str(LAB_VENV / "bin" / "python"),
    "ipykernel-7.3": "/tmp/venv73/bin/python",
    "ipykernel-6.29": "/tmp/venv629/bin/python",
}
# "http": the card's direct buttons (anywidget + fetch() to the kernel's HTTP thread); "widgets": ipywidgets
PATHS = {"widgets": False, "http": True}


def _notebook(kernel: str, path_kind: str) -> str:
    return f"approve-{kernel}-{path_kind}.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One JupyterLab for the whole matrix (each test ends its kernel): a notebook per kernel and path."""
    kernels = {name: python for name, python in KERNELS.items() if Path(python).exists()}
    notebooks = {_notebook(kernel, kind): (CELL.replace("FORCE_HTTP", str(force)), kernel)
                 for kernel in kernels for kind, force in PATHS.items()}
    with jupyter_lab(tmp_path_factory.mktemp("approve"), notebooks, kernels, files={"policy.yaml": POLICY}) as served:
        yield served


@pytest.fixture(params=list(KERNELS))
def kernel(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if not Path(KERNELS[name]).exists():
        pytest.skip(f"no virtual environment with {KERNELS[name]}")
    return name


@pytest.fixture(params=list(PATHS))
def path_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_browser_click_approves_while_the_cell_runs(lab: tuple[str, str], kernel: str, path_kind: str,
                                                    frontend: str) -> None:
    base, token = lab
    kernel_python = KERNELS[kernel]
    label = "Approve (direct)" if path_kind == "http" else "Approve once"
    if frontend == "notebook7" and not (LAB_VENV / "bin" / "jupyter-notebook").exists():
        pytest.skip("notebook 7 is not installed in the lab venv")
    notebook = _notebook(kernel, path_kind)
    path = f"lab/tree/{notebook}" if frontend == "lab" else f"notebooks/{notebook}"
    with running_cell(base, token, path) as page:
        approve = page.locator("button", has_text=label)
        try:
            approve.wait_for(timeout=60_000)
        except Exception as exc:
            raise AssertionError("no card; " + diagnosis(base, token, page)) from exc
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
