"""notebooks/11_langgraph.ipynb runs offline, top to bottom, in a real kernel (interrupt + resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "11_langgraph.ipynb"


def outputs(nb: Any) -> list[str]:
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append(out["text"])
            elif out["output_type"] == "error":
                parts.append(f"ERROR {out['ename']}: {out['evalue']}")
            else:
                parts.append(str(out.get("data", {}).get("text/plain", "")))
        texts.append("".join(parts))
    return texts


def test_langgraph_notebook_runs_offline(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = outputs(nb)
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
