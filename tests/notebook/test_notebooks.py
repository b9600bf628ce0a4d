"""The example notebooks run offline, top to bottom, in a real kernel (nbclient), within a bounded time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _run(name: str, tmp_path: Path) -> Any:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _outputs(nb: Any) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(parts)


def test_quickstart_runs_offline(tmp_path: Path) -> None:
    nb = _run("01_quickstart.ipynb", tmp_path)
    text = _outputs(nb)
    assert "governing agent as agent 'quickstart' in block mode" in text
    assert "REFUSED: tool 'delete_file' is not in the approved scope" in text
    assert "ALLOW (observe: BLOCK)" in text  # the feed's snapshot of the observe-mode run
    assert "TOOL_CALL_BLOCK" in text and "why: " in text
    assert "widget-view" not in text  # saved feeds are static snapshots, readable without JavaScript


def test_auditing_notebook_runs_offline(tmp_path: Path) -> None:
    nb = _run("02_auditing_events.ipynb", tmp_path)
    text = _outputs(nb)
    assert "datetime64[us, UTC]" in text and "category" in text
    assert "SELECT * FROM customers" in text
    assert "calls  allowed  blocked" in text
