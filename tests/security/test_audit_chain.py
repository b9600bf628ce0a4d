"""Tamper evidence: edit, insert and delete rows of the SQLite file directly and check that
`thoth-nb audit verify` says so, and where; an exported bundle verifies after being copied away."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from thoth_nb.cli import main
from thoth_nb.engine.audit import AuditReport, export_bundle, verify_bundle, verify_store
from thoth_nb.engine.store import SQLiteStore

# read at import: the autouse fixture in tests/conftest.py clears THOTH_* before each test
PG_URL = os.environ.get("THOTH_TEST_DATABASE_URL", "")
TENANTS = ("acme", "globex")
SESSIONS = ("s-1", "s-2")
PER_SESSION = 6


def _event(tenant: str, session: str, i: int) -> dict[str, object]:
    return {
        "event_id": f"{tenant}-{session}-{i}", "tenant_id": tenant, "session_id": session,
        "agent_id": "agent", "user_id": "u", "tool_name": "transfer", "event_type": "TOOL_CALL_PRE",
        "occurred_at": f"2026-11-25T10:00:{i:02d}.000000Z", "content": {"amount": i},
        "metadata": {"authorization_decision": "ALLOW"},
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "thoth.db"
    store = SQLiteStore(path)
    for i in range(PER_SESSION):  # interleave sessions and tenants, as concurrent agents would
        store.ingest_events([_event(t, s, i) for t in TENANTS for s in SESSIONS])
    store.close()
    return path


def _verify(path: Path, tenant: str | None = None, **kwargs: object) -> AuditReport:
    store = SQLiteStore(path)
    try:
        return verify_store(store, tenant, **kwargs)  # type: ignore[arg-type]
    finally:
        store.close()


def _sql(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute(sql, params)
    con.close()


def _row(path: Path, event_id: str) -> dict[str, object]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM events WHERE event_id=?", (event_id,)).fetchone())
    con.close()
    return row


def test_an_untouched_store_verifies(db: Path) -> None:
    report = _verify(db)
    assert report.ok, report.findings
    assert (report.events, report.chains, report.tenants) == (24, 4, set(TENANTS))


def test_an_edited_body_is_found_at_its_position(db: Path) -> None:
    row = _row(db, "acme-s-1-3")
    body = str(row["body"]).replace('"amount":3', '"amount":3000')
    assert body != row["body"]
    _sql(db, "UPDATE events SET body=? WHERE event_id='acme-s-1-3'", (body,))
    report = _verify(db)
    assert not report.ok
    [finding] = report.findings
    assert (finding.kind, finding.tenant_id, finding.session_id, finding.position, finding.event_id) == \
        ("edited", "acme", "s-1", 3, "acme-s-1-3")
    assert "does not match its stored hash" in finding.detail


def test_an_edited_column_is_found(db: Path) -> None:
    _sql(db, "UPDATE events SET decision='BLOCK' WHERE event_id='globex-s-2-1'")
    [finding] = _verify(db).findings
    assert (finding.kind, finding.event_id, finding.position) == ("edited", "globex-s-2-1", 1)
    assert "decision is 'BLOCK'" in finding.detail


def test_a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link(db: Path) -> None:
    """An editor who knows the algorithm rehashes the record; the next record no longer links to it."""
    row = _row(db, "acme-s-2-2")
    body = str(row["body"]).replace('"amount":2', '"amount":2000')
    digest = hashlib.sha256((str(row["previous_hash"]) + body).encode()).hexdigest()
    _sql(db, "UPDATE events SET body=?, hash=? WHERE event_id='acme-s-2-2'", (body, digest))
    [finding] = _verify(db).findings
    assert (finding.kind, finding.event_id, finding.position) == ("edited", "acme-s-2-2", 2)
    assert "replaced or rewritten" in finding.detail and "acme-s-2-3" in finding.detail


def test_an_inserted_record_is_found(db: Path) -> None:
    """A forged record claiming position 2 of a chain (copied from a real one, new id)."""
    row = _row(db, "acme-s-1-2")
    body = json.loads(str(row["body"]))
    body["event_id"] = "forged"
    text = json.dumps(body)
    digest = hashlib.sha256((str(row["previous_hash"]) + text).encode()).hexdigest()
    columns = [c for c in row if c != "seq"]
    values = {**row, "event_id": "forged", "body": text, "hash": digest}
    _sql(db, f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
         tuple(values[c] for c in columns))
    [finding] = _verify(db).findings
    assert (finding.kind, finding.event_id, finding.position, finding.session_id) == ("inserted", "forged", 2, "s-1")


def test_a_deleted_record_is_found_where_the_gap_is(db: Path) -> None:
    _sql(db, "DELETE FROM events WHERE event_id='globex-s-1-4'")
    [finding] = _verify(db).findings
    assert (finding.kind, finding.tenant_id, finding.session_id, finding.position) == ("deleted", "globex", "s-1", 4)
    assert finding.event_id == "globex-s-1-5"  # the record after the gap
    assert "globex-s-1-3" in finding.detail  # and the one before it


def test_a_deleted_first_record_is_found_unless_pruning_is_allowed(db: Path) -> None:
    _sql(db, "DELETE FROM events WHERE event_id='acme-s-1-0'")
    [finding] = _verify(db).findings
    assert (finding.kind, finding.position, finding.event_id) == ("deleted", 0, "acme-s-1-1")
    pruned = _verify(db, allow_pruned=True)
    assert pruned.ok and pruned.notes


def test_tail_deletion_is_found_against_an_earlier_export(db: Path, tmp_path: Path) -> None:
    """Dropping the last records leaves no gap; the head anchored by an export is then missing."""
    store = SQLiteStore(db)
    manifest, _ = export_bundle(store, tmp_path / "anchor")
    store.close()
    _sql(db, "DELETE FROM events WHERE event_id IN ('acme-s-2-5', 'acme-s-2-4')")
    assert _verify(db).ok  # the documented limit of a keyless chain
    [finding] = _verify(db, anchors=manifest["chains"]).findings
    assert (finding.kind, finding.session_id, finding.position, finding.event_id) == ("deleted", "s-2", 5, "acme-s-2-5")


def test_tenant_filter_checks_only_that_tenant(db: Path) -> None:
    _sql(db, "DELETE FROM events WHERE event_id='globex-s-2-2'")
    assert _verify(db, "acme").ok
    assert [f.tenant_id for f in _verify(db, "globex").findings] == ["globex"]


def test_cli_verify_prints_where_and_exits_1(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert "intact (24 events in 4 chains of 2 tenants)" in capsys.readouterr().out
    _sql(db, "UPDATE events SET tool_name='delete_all' WHERE event_id='acme-s-1-5'")
    assert main(["audit", "verify", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "EDITED" in out and "position 5 event acme-s-1-5" in out
    assert main(["audit", "verify", "--db", str(db), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["findings"][0]["event_id"] == "acme-s-1-5"


@pytest.mark.parametrize("name", ["bundle", "bundle.zip"])
def test_a_bundle_verifies_after_copying_without_the_store(db: Path, tmp_path: Path, name: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export" / name
    assert main(["audit", "export", "--db", str(db), "--out", str(out)]) == 0
    fingerprint = capsys.readouterr().out.split("manifest fingerprint: ")[1].split()[0]
    elsewhere = tmp_path / "elsewhere" / name
    elsewhere.parent.mkdir()
    (shutil.copytree if out.is_dir() else shutil.copy2)(out, elsewhere)
    db.unlink()  # no store any more
    assert main(["audit", "verify", "--bundle", str(elsewhere)]) == 0
    text = capsys.readouterr().out
    assert fingerprint in text and "intact (24 events in 4 chains of 2 tenants)" in text


def _tamper_bundle_line(bundle: Path, event_id: str, change: str) -> None:
    lines = (bundle / "events.jsonl").read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if json.loads(line)["event_id"] == event_id)
    if change == "delete":
        del lines[index]
    else:
        row = json.loads(lines[index])
        row["body"] = row["body"].replace('"amount":', '"amount":9')
        lines[index] = json.dumps(row) + "\n"
    (bundle / "events.jsonl").write_text("".join(lines))


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_a_tampered_bundle_says_where(db: Path, tmp_path: Path, change: str) -> None:
    store = SQLiteStore(db)
    export_bundle(store, tmp_path / "b", tenant_id="globex")
    store.close()
    assert verify_bundle(tmp_path / "b")[1].ok
    _tamper_bundle_line(tmp_path / "b", "globex-s-1-2", change)
    _, report = verify_bundle(tmp_path / "b")
    assert not report.ok
    kinds = {(f.kind, f.position, f.event_id) for f in report.findings}
    if change == "edit":
        assert ("edited", 2, "globex-s-1-2") in kinds
    else:
        assert ("deleted", 2, "globex-s-1-3") in kinds
    assert any("SHA-256 does not match the manifest" in f.detail for f in report.findings)


def test_export_refuses_to_overwrite_and_bad_bundles_get_clear_errors(db: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["audit", "export", "--db", str(db), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["audit", "verify", "--bundle", str(tmp_path / "nothing")]) == 2
    assert "no audit bundle" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    assert main(["audit", "verify", "--bundle", str(tmp_path / "other.zip")]) == 2
    assert "is not an audit bundle" in capsys.readouterr().err


@pytest.mark.postgres
def test_postgres_store_tampering_is_found_the_same_way(tmp_path: Path) -> None:
    """The verifier reads both stores through `iter_event_rows`; PostgreSQL returns datetimes for the
    time columns, which must still compare equal to the hashed text."""
    import uuid

    base = PG_URL
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI is set but THOTH_TEST_DATABASE_URL is not")
        pytest.skip("PostgreSQL tests need THOTH_TEST_DATABASE_URL=postgresql://... (.ci/start-postgres sets it)")
    psycopg = pytest.importorskip("psycopg")
    from thoth_nb.engine.store import open_store

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        store = open_store(url)
        try:
            for i in range(PER_SESSION):
                store.ingest_events([_event(t, s, i) for t in TENANTS for s in SESSIONS])
            assert verify_store(store).ok
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("UPDATE events SET tool_name='x' WHERE event_id='acme-s-1-2'")
                conn.execute("DELETE FROM events WHERE event_id='globex-s-2-4'")
            found = {(f.kind, f.event_id, f.position) for f in verify_store(store).findings}
            assert found == {("edited", "acme-s-1-2", 2), ("deleted", "globex-s-2-5", 4)}
            manifest, report = export_bundle(store, tmp_path / "pg.zip")
            assert report.total_findings == 2 and manifest["events"] == 23
        finally:
            store.close()
        assert {(f.kind, f.event_id) for f in verify_bundle(tmp_path / "pg.zip")[1].findings} == {
            ("edited", "acme-s-1-2"), ("deleted", "globex-s-2-5")}
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_failed_export_leaves_no_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store (or disk) that fails mid-export leaves nothing that looks like a bundle."""

    class Broken:
        def iter_event_rows(self, tenant_id: str | None = None) -> Any:
            yield [{"event_id": "e", "tenant_id": "t", "session_id": "s", "chain_index": 0, "hash": "h",
                    "previous_hash": "", "body": "{}"}]
            raise OSError(28, "No space left on device")

    for out in (tmp_path / "b", tmp_path / "b.zip"):
        with pytest.raises(OSError, match="No space left"):
            export_bundle(Broken(), out)
        assert not (out / "events.jsonl").exists() and not (out / "manifest.json").exists()
        assert not out.with_name(out.name + ".partial").exists() and not (out.suffix == ".zip" and out.exists())
    assert main(["audit", "verify", "--bundle", str(tmp_path / "b"), "--tenant", "acme"]) == 2
    assert "drop --db/--anchor/--tenant" in capsys.readouterr().err
