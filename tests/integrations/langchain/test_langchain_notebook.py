"""notebooks/10_langchain.ipynb runs offline, top to bottom, in a real kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = [pytest.mark.kernel, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "10_langchain.ipynb"


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


def test_langchain_notebook_runs_offline(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = outputs(nb)
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
