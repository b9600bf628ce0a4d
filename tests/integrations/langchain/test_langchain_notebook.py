"""notebooks/10_langchain.ipynb runs offline, top to bottom, in a real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_nb.testing import run_notebook_cells

pytest.importorskip("langchain_core")
pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "10_langchain.ipynb"


def test_langchain_notebook_runs_offline(tmp_path: Path) -> None:
    texts = run_notebook_cells(NOTEBOOK, cwd=tmp_path)
    assert not any("ERROR" in t for t in texts), texts
    everything = "\n".join(texts)
    assert "ToolMessage(content=\"Blocked by Thoth policy: tool 'delete_file' is not in the approved" in everything
    assert "status='error'" in everything
    assert "raised: tool 'delete_file' is not in the approved scope" in everything
    assert "mail sent to ops@example.com" in everything
    assert "Blocked by Thoth policy: denied by alice" in everything
    assert "{'search_docs': 4, 'delete_file': 0, 'send_email': 1}" in everything
    assert "TOOL_CALL_POST   send_email   langchain  ALLOW  step_up_approved" in everything
    assert texts[-1].strip() == "deleted /tmp/scratch"  # after teardown the tool is ungoverned again
