"""SQLiteStore's ingest path: idempotence, the per-session hash chain, bad events, and the background
checkpointer the server turns on (commits stay durable, the WAL is still checkpointed)."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _chain import verify_chain
from hypothesis import given, settings
from hypothesis import strategies as st

from thoth_nb import _json
from thoth_nb.engine.audit import verify_store
from thoth_nb.engine.store import SQLiteStore, format_ts, normalize_ts, parse_ts


def event(session: str = "s1", n: int = 0, tenant: str = "t", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "agent_id": "a",
        "user_id": "u", "tool_name": f"tool{n % 3}", "event_type": "TOOL_CALL_PRE",
        "occurred_at": f"2026-01-01T00:00:{n % 60:02d}Z", "hash": "", "previous_hash": "", "signature": "",
        "chain_index": None, "metadata": {"authorization_decision": "ALLOW", "n": n},
    }
    body.update(over)
    return body




def test_batches_chain_per_session_and_store_each_id_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    first = [event("s1", n) for n in range(4)] + [event("s2", n) for n in range(3)]
    result = store.ingest_events(first)
    assert (result.accepted, result.duplicates, result.rejected) == (7, 0, [])
    before = store.events("t", session_id="s1")[0]
    # a replayed id (also twice in one batch) is counted, stored once, and takes no chain position
    again = [{**first[0], "tool_name": "changed"}, event("s1", 10), first[1], event("s2", 11)]
    twice = event("s1", 12)
    result = store.ingest_events([*again, twice, dict(twice)])
    assert (result.accepted, result.duplicates) == (3, 3)
    s1 = store.events("t", session_id="s1")
    assert [r["metadata"]["n"] for r in s1] == [0, 1, 2, 3, 10, 12]
    verify_chain(s1)
    verify_chain(store.events("t", session_id="s2"))
    assert s1[0] == before  # the stored copy of a replayed id is untouched
    assert "signature" not in before and before["ingested_at"].endswith("Z")
    assert store.count_events("t") == 10
    store.close()


def test_columns_and_timestamps_are_normalised(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.ingest_events([event(occurred_at="2026-01-01T01:00:00+01:00", violation_id="v1",
                               metadata={"authorization_decision": "BLOCK"}),
                         event(occurred_at="2026-01-01T00:30:00")])  # naive: UTC (PROTOCOL §5)
    rows = store.query("SELECT occurred_at, decision, violation_id FROM events ORDER BY seq")
    assert rows == [
        {"occurred_at": "2026-01-01T00:00:00.000000Z", "decision": "BLOCK", "violation_id": "v1"},
        {"occurred_at": "2026-01-01T00:30:00.000000Z", "decision": "ALLOW", "violation_id": None},
    ]
    assert [e["occurred_at"] for e in store.events("t")] == [r["occurred_at"] for r in rows]
    store.close()


def test_bad_events_are_rejected_by_index_and_the_rest_stored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    good = event()
    batch: list[Any] = ["nope", {"tenant_id": "t", "session_id": "s"}, good, event(occurred_at="yesterday-ish")]
    result = store.ingest_events(batch)
    assert result.accepted == 1 and result.duplicates == 0
    assert [r["index"] for r in result.rejected] == [0, 1, 3]
    assert "event must be an object" in result.rejected[0]["error"]
    assert "missing required field(s): event_id" in result.rejected[1]["error"]
    assert [e["event_id"] for e in store.events("t")] == [good["event_id"]]
    assert store.ingest_events([]).accepted == 0
    store.close()


def test_concurrent_batches_keep_one_chain(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.checkpoint_in_background(interval=0.01)
    batches = [[event("s1", n) for n in range(50)] for _ in range(6)]
    threads = [threading.Thread(target=store.ingest_events, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = store.events("t", session_id="s1")
    assert len(rows) == 300
    verify_chain(rows)
    store.close()


def test_a_batch_larger_than_one_insert_statement_keeps_order_columns_and_chains(tmp_path: Path) -> None:
    """Rows go in 64 per INSERT: a batch of 131 (two full statements and a remainder) interleaving three
    sessions must keep input order (seq), every column, and each session's chain across the statements."""
    store = SQLiteStore(tmp_path / "s.db")
    batch = [event(f"s{n % 3}", n, violation_id=f"v{n}" if n % 7 == 0 else None) for n in range(131)]
    assert store.ingest_events(batch).accepted == 131
    rows = store.query("SELECT seq, event_id, session_id, tool_name, decision, violation_id, body FROM events "
                       "ORDER BY seq")
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in batch]
    for row, sent in zip(rows, batch, strict=True):
        assert (row["session_id"], row["tool_name"], row["decision"], row["violation_id"]) == (
            sent["session_id"], sent["tool_name"], "ALLOW", sent["violation_id"])
        assert _json.loads(row["body"])["metadata"]["n"] == sent["metadata"]["n"]
    for session in ("s0", "s1", "s2"):
        verify_chain(store.events("t", session_id=session))
    store.close()


def test_a_stored_id_late_in_a_long_batch_rolls_the_pass_back_and_counts_exactly(tmp_path: Path) -> None:
    """The pass inserts 64 rows at a time assuming no id is stored yet; a stored id at index 150 fails its
    statement after two have gone in. Nothing of that pass may remain: counts, chain and the stored copy
    are exactly what a lookup first would give."""
    store = SQLiteStore(tmp_path / "s.db")
    stored = [event(f"s{n % 2}", n) for n in range(10)]
    assert store.ingest_events(stored).accepted == 10
    before = store.query("SELECT seq, hash, body FROM events WHERE event_id=?", (stored[3]["event_id"],))
    fresh = [event(f"s{n % 3}", 100 + n) for n in range(200)]
    batch: list[Any] = [*fresh[:150], {**stored[3], "tool_name": "replayed"}, *fresh[150:], dict(fresh[7]),
                        {"tenant_id": "t"}]
    result = store.ingest_events(batch)
    assert (result.accepted, result.duplicates) == (200, 2)
    assert result.rejected == [{"index": 202, "error": "missing required field(s): event_id, session_id"}]
    assert store.count_events("t") == 210
    assert store.query("SELECT seq, hash, body FROM events WHERE event_id=?", (stored[3]["event_id"],)) == before
    rows = store.query("SELECT event_id FROM events ORDER BY seq")
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in stored + fresh]
    for session in ("s0", "s1", "s2"):
        verify_chain(store.events("t", session_id=session))
    # the same batch again: all duplicates, nothing changes
    again = store.ingest_events(batch)
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 202, 1)
    assert store.count_events("t") == 210
    store.close()


def test_stored_body_is_the_reference_encoding_byte_for_byte(tmp_path: Path) -> None:
    """What is hashed must not change: `_json.dumps_bytes` of the event with the chain fields set, `hash`
    and `signature` dropped, in the event's own key order. Covers what plain orjson refuses (int keys, a
    Decimal) and what it encodes (unicode, floats, nesting, a key order with the chain fields in it)."""
    store = SQLiteStore(tmp_path / "s.db")
    odd = [
        event(n=1, metadata={"authorization_decision": "BLOCK", 7: "int key", "nested": {"x": [1.5, None, True]}}),
        event(n=2, content=decimal.Decimal("1.10"), tool_args={"name": "caf\u00e9 \u2603 \U0001f600"}),
        {"chain_index": 99, "previous_hash": "forged", **event(n=3), "ingested_at": "earlier", "extra": 1e300},
        event(n=4, occurred_at="2026-01-01T00:00:04+02:00"),
    ]
    assert store.ingest_events(odd).accepted == 4
    rows = store.query("SELECT event_id, occurred_at, ingested_at, chain_index, hash, previous_hash, body FROM events "
                       "ORDER BY seq")
    for sent, row in zip(odd, rows, strict=True):
        reference = {**sent, "occurred_at": row["occurred_at"], "ingested_at": row["ingested_at"],
                     "chain_index": row["chain_index"], "previous_hash": row["previous_hash"]}
        reference.pop("hash", None)
        reference.pop("signature", None)
        assert row["body"].encode() == _json.dumps_bytes(reference)
        assert row["hash"] == hashlib.sha256(row["previous_hash"].encode() + row["body"].encode()).hexdigest()
    assert verify_store(store).ok
    store.close()


def test_prepare_turns_items_into_events_rejects_on_value_error_and_aborts_on_anything_else(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    items = [f"raw-{n}" for n in range(100)]
    made = {item: event("s1", n) for n, item in enumerate(items)}
    calls: list[int] = []

    def prepare(index: int, item: Any) -> dict[str, Any]:
        calls.append(index)
        if index == 5:
            raise ValueError("event_id: must be a non-empty string")
        if index == 6:
            raise TypeError("not an event")
        return made[item]

    result = store.ingest_events(items, prepare=prepare)
    assert (result.accepted, result.duplicates) == (98, 0)
    assert result.rejected == [{"index": 5, "error": "event_id: must be a non-empty string"},
                               {"index": 6, "error": "not an event"}]
    assert calls == list(range(100))  # one pass, in order
    verify_chain(store.events("t", session_id="s1"))

    class Forbidden(Exception):
        pass

    def refuse_late(index: int, item: Any) -> dict[str, Any]:
        if index == 90:  # after the first 64 rows went into the transaction
            raise Forbidden
        return event("s2", index)

    with pytest.raises(Forbidden):
        store.ingest_events(items, prepare=refuse_late)
    assert store.count_events("t") == 98  # nothing of the aborted batch
    assert store.events("t", session_id="s2") == []
    one_shot = iter([made["raw-0"], event("s3", 1)])  # any iterable, even with a stored id in it
    assert (store.ingest_events(one_shot).accepted, store.count_events("t")) == (1, 99)
    store.close()


def test_new_store_gets_16k_pages_and_an_existing_store_keeps_its_own(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "new.db")
    assert store.query("PRAGMA page_size") == [{"page_size": 16384}]
    store.close()
    old = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE unrelated (x)")
    store = SQLiteStore(old)
    assert store.query("PRAGMA page_size") == [{"page_size": 4096}]
    store.ingest_events([event(n=n) for n in range(100)])
    verify_chain(store.events("t", session_id="s1"))
    store.close()


def test_background_checkpointer_checkpoints_and_stops_on_close(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.checkpoint_in_background(interval=0.01)
    store.checkpoint_in_background(interval=0.01)  # idempotent: still one thread
    assert sum(t.name == "thoth-sqlite-checkpoint" for t in threading.enumerate()) == 1
    assert store.query("PRAGMA wal_autocheckpoint") == [{"wal_autocheckpoint": 2_560}]  # 40 MiB of 16 KiB pages
    store.ingest_events([event(n=n) for n in range(200)])
    # committed means readable from another connection at once, checkpointed or not
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM events").fetchone() == (200,)
    other.close()
    # the thread copies the WAL into the database file: the file alone (no -wal) soon holds every row
    deadline = time.monotonic() + 5
    while _rows_in_main_file(path, tmp_path / "copy.db") != 200:
        assert time.monotonic() < deadline, "the background checkpointer never checkpointed the WAL"
        time.sleep(0.02)
    store.close()
    assert not any(t.name == "thoth-sqlite-checkpoint" for t in threading.enumerate())
    assert SQLiteStore(path).count_events("t") == 200


def _rows_in_main_file(path: Path, copy: Path) -> int:
    copy.write_bytes(path.read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.DatabaseError:  # caught mid-checkpoint: the copy is not a consistent file
            return -1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_writes_through_its_own_connection_and_the_parent_keeps_checkpointing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.checkpoint_in_background(interval=0.01)
    store.ingest_events([event(n=n) for n in range(10)])
    pid = os.fork()
    if pid == 0:  # child: the checkpointer thread did not survive; the store must still work and close
        code = 1
        try:
            result = store.ingest_events([event("child", n) for n in range(10)])
            code = 0 if result.accepted == 10 and store._checkpointer is None else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.ingest_events([event("parent", n) for n in range(10)])
    assert store.count_events("t") == 30
    verify_chain(store.events("t", session_id="child"))
    assert store._checkpointer is not None
    store.close()


def _reference_normalize_ts(value: Any) -> str:
    """normalize_ts before its fast path: the full regex, then the datetime parser as the check."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value):
        dt.datetime.fromisoformat(value[:-1])
        return value
    return format_ts(parse_ts(str(value)))


@settings(max_examples=500, deadline=None)
@given(st.tuples(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
                 st.integers(0, 61), st.integers(0, 999_999)),
       st.sampled_from(["Z", "Z", "Z", "z", "+00:00", ""]), st.integers(0, 40), st.sampled_from(["\u0663", "\uff12"]))
def test_normalize_ts_fast_path_agrees_with_the_full_parse(parts: tuple[int, ...], zone: str, swap: int,
                                                           foreign: str) -> None:
    """Every value the fast path returns unchanged, the full parse returned unchanged, and the reverse
    (ranges straddle the valid ones; now and then one digit is not ASCII)."""
    y, mo, d, h, mi, s, f = parts
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{f:06d}{zone}"
    if swap < 26 and text[swap].isdigit():
        text = text[:swap] + foreign + text[swap + 1 :]
    try:
        expected: str | type[Exception] = _reference_normalize_ts(text)
    except ValueError:
        expected = ValueError
    try:
        got: str | type[Exception] = normalize_ts(text)
    except ValueError:
        got = ValueError
    assert got == expected, text
