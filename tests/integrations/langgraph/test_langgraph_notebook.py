"""notebooks/11_langgraph.ipynb runs offline, top to bottom, in a real kernel (interrupt + resume)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_nb.testing import run_notebook_cells

pytest.importorskip("langgraph")
pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "11_langgraph.ipynb"


def test_langgraph_notebook_runs_offline(tmp_path: Path) -> None:
    texts = run_notebook_cells(NOTEBOOK, cwd=tmp_path)
    assert not any("ERROR" in t for t in texts), texts
    everything = "\n".join(texts)
    assert "Thoth holds send_email: sending mail needs a human" in everything
    assert "pending holds: [('send_email', 'pending')]" in everything
    assert "runs so far: 0" in everything
    assert "hold: approved" in everything
    assert "Blocked by Thoth policy: denied by alice: not to the whole company" in everything
    assert "{'search_docs': 1, 'delete_file': 0, 'send_email': 2}" in everything
    assert everything.count("TOOL_CALL_POST   send_email   langgraph  ALLOW  step_up_approved") == 2
    assert "TOOL_CALL_BLOCK  send_email   langgraph  BLOCK  step_up_denied" in everything
