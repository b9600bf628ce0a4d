"""notebooks/12_openai.ipynb runs offline, top to bottom, in a real kernel (its cells assert what they show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_nb.testing import run_notebook

pytest.importorskip("openai")
pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "12_openai.ipynb"


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_runs_offline() -> None:
    shown = run_notebook(NOTEBOOK)  # raises CellExecutionError with the cell and traceback when a cell fails
    assert "ERROR" not in shown
    assert "blocked by policy" in shown
