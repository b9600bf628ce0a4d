"""notebooks/12_openai.ipynb runs offline, top to bottom, in a real kernel (its cells assert what they show)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openai")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOK = ROOT / "notebooks" / "12_openai.ipynb"


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_runs_offline() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError with the cell and traceback when a cell fails
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    shown = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "blocked by policy" in shown
