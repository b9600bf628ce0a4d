"""The step-up approvals example notebook runs headless: nobody clicks, holds time out to deny, and
the bulk deny of a pending-approvals DataFrame resolves the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_step_up_approvals.ipynb"


def _text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append(f"ERROR {out['ename']}: {out['evalue']}")
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_notebook_runs_headless_and_times_out_to_deny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("JPY_SESSION_NAME", "VSCODE_PID", "THOTH_DEMO_TIMEOUT_MINUTES"):
        monkeypatch.delenv(key, raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    texts = [_text(c) for c in code]
    assert not any("ERROR" in t for t in texts), texts
    assert "interactive: False" in texts[0]
    single = texts[3]
    assert "search: 3 results" in single and "is held for approval (apr_" in single
    assert "pay: NOT RUN (step-up approval timed out" in single
    assert "send_email: mail to billing@example.com" in single  # the agent carried on
    several = texts[4]
    assert "bulk-denied 2 held calls" in several
    assert several.count("NOT RUN (denied by notebook-demo: Mallory is not a supplier)") == 2
    assert "send_email: NOT RUN (step-up approval timed out" in several
    table = texts[5]
    assert table.count("notebook-demo") == 2 and "expired" in table
    cards = [o for c in code for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(cards) == 4  # one card per held call
