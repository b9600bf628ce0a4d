from __future__ import annotations

import os
import uuid
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


#: read at import: the autouse `thoth_home` fixture clears THOTH_* before each test
PG_URL = os.environ.get("THOTH_TEST_DATABASE_URL", "")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards. Skips without
    THOTH_TEST_DATABASE_URL; fails under CI, where `.ci/start-postgres` must have set it."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI is set but THOTH_TEST_DATABASE_URL is not: .ci/start-postgres did not start PostgreSQL")
        pytest.skip("PostgreSQL tests need THOTH_TEST_DATABASE_URL=postgresql://... (.ci/start-postgres sets it)")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
