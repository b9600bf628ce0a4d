"""A store a later thoth-nb has migrated is refused by this one, with one clear line, and left as it was:
this version's code does not know what the later migrations changed, so writing into it could break it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import thoth_nb
from thoth_nb._exceptions import ThothConfigError
from thoth_nb.engine.store import MIGRATION_NAMES, SQLiteStore, open_store

FUTURE = "m999_from_a_later_release"


def _stored_event(store: object, tenant: str) -> None:
    store.ingest_events([{"event_id": f"{tenant}:e1", "tenant_id": tenant, "agent_id": "a", "session_id": "s",  # type: ignore[attr-defined]
                          "event_type": "TOOL_CALL_PRE", "tool_name": "t", "timestamp": "2026-11-26T10:00:00Z"}])


def test_sqlite_store_migrated_by_a_newer_release_is_refused_and_kept(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "thoth.db"
    store = SQLiteStore(path)
    _stored_event(store, "t1")
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (FUTURE, "2027-01-01T00:00:00Z"))
    before = path.read_bytes()
    with pytest.raises(ThothConfigError, match=f"newer thoth-nb.*{FUTURE}.*upgrade thoth-nb"):
        open_store(path)
    monkeypatch.setenv("THOTH_DB", str(path))  # the SDK's embedded store
    with pytest.raises(ThothConfigError, match="newer thoth-nb"):
        thoth_nb.instrument([lambda: None], agent_id="a", tenant_id="t1", approved_scope=["x"])
    with sqlite3.connect(path) as db:  # nothing applied, nothing lost
        names = {row[0] for row in db.execute("SELECT name FROM schema_migrations")}
        assert names == {*MIGRATION_NAMES, FUTURE}
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert path.read_bytes() == before
    for argv in (["db", "upgrade", "--db", str(path)], ["serve", "--db", str(path), "--port", "1"]):
        cli = subprocess.run([sys.executable, "-m", "thoth_nb", *argv], capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0, (argv, cli.stdout, cli.stderr)
        assert "newer thoth-nb" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr


@pytest.mark.postgres
def test_postgres_store_migrated_by_a_newer_release_is_refused(pg_url: str) -> None:
    import psycopg

    store = open_store(pg_url)
    _stored_event(store, "t1")
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (FUTURE, "2027-01-01T00:00:00Z"))
    with pytest.raises(ThothConfigError, match=f"newer thoth-nb.*{FUTURE}"):
        open_store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
