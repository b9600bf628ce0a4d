from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thoth_nb.testing import isolated_home


@pytest.fixture(autouse=True)
def thoth_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own $THOTH_HOME and no THOTH_* settings from the developer's shell."""
    import os

    for key in list(os.environ):
        if key.startswith("THOTH_") or key == "LOG_LEVEL":
            monkeypatch.delenv(key, raising=False)
    # no frame keeper processes behind the tests' backs (tests/analytics/test_frame_keeper.py turns it on)
    monkeypatch.setenv("THOTH_FRAME_KEEPER", "0")
    with isolated_home(tmp_path / "home") as home:
        yield home


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A DataFrame reader child of this test only (in place of `frames._READER`), stopped afterwards."""
    pytest.importorskip("adbc_driver_sqlite")
    from thoth_nb.analytics import frames

    own = frames._ReaderProcess()
    monkeypatch.setattr(frames, "_READER", own)
    try:
        yield own
    finally:
        own.close()
