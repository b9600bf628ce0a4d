"""Fixtures for the fault tests (helpers live in _faults.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _faults import ServeProcess


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    folder = tmp_path / "serve"
    folder.mkdir()
    found = ServeProcess(folder)
    yield found
    found.kill()
