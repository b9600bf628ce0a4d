"""PostgresStore against a real PostgreSQL: the same methods and answers as SQLiteStore, concurrent
ingest, and engines sharing decision state through the store (issue 10).

Needs THOTH_TEST_DATABASE_URL (`.ci/start-postgres` sets it). Each test runs in its own schema."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _chain import verify_chain

from thoth_nb._models import DecisionType
from thoth_nb.engine import Engine, HoldConflict, SQLiteStore, parse_policy
from thoth_nb.engine.store import MIGRATION_NAMES, open_store

# read at import: the autouse fixture in tests/conftest.py clears THOTH_* before each test
PG_URL = os.environ.get("THOTH_TEST_DATABASE_URL", "")


@pytest.fixture
def pg(pg_url: str) -> Iterator[Any]:
    store = open_store(pg_url)
    try:
        yield store
    finally:
        store.close()


POLICY = """
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: big, tool: pay, when: {amount: {gt: 100}}, decision: step_up}
  - {id: seq, tool: send_email, after: [{tool: read_file, when: {path: {contains: secrets}}}], decision: block}
rate_limits:
  - {id: burst, tool: search, max_calls: 3, per_seconds: 60, decision: block}
"""
SCOPE = ["read_file", "pay", "search", "send_email"]


def request(tool: str, args: dict[str, Any] | None = None, mode: str = "block", session: str = "s") -> dict[str, Any]:
    return {"agent_id": "a", "tenant_id": "t", "user_id": "u", "tool_name": tool, "session_id": session,
            "approved_scope": SCOPE, "enforcement_mode": mode, "tool_args": args or {}}


def event(session: str = "s1", tenant: str = "t", n: int = 0, **over: Any) -> dict[str, Any]:
    body = {"event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "agent_id": "a",
            "user_id": "u", "tool_name": f"tool{n % 3}", "event_type": "TOOL_CALL_PRE" if n % 2 else "TOOL_CALL_POST",
            "occurred_at": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "metadata": {"authorization_decision": "ALLOW"}}
    body.update(over)
    return body




def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_same_public_methods_as_sqlite() -> None:
    from thoth_nb.engine.store_pg import PostgresStore

    lite, pg = public(SQLiteStore), public(PostgresStore)
    # replicas push hold resolutions to each other and release request-id claims (probed with getattr)
    pg_only = {"subscribe_holds", "dedupe_release"}
    # SQLite moves WAL checkpoints off the commit path, maybe to another process's connection
    # (PostgreSQL checkpoints on its own)
    lite_only = {"checkpoint_in_background", "defer_checkpoints"}
    assert pg - pg_only == lite - lite_only, (
        f"only SQLite: {lite - lite_only - pg}; only PostgreSQL: {pg - lite - pg_only}")


@pytest.mark.postgres
def test_same_named_migrations(pg: Any, tmp_path: Path, pg_url: str) -> None:
    lite = SQLiteStore(tmp_path / "x.db")
    assert pg.migrations() == lite.migrations() == sorted(MIGRATION_NAMES)
    assert pg.migrate() == [] and lite.migrate() == []
    assert pg.shared_state is True and lite.shared_state is False


@pytest.mark.postgres
def test_replicas_migrating_together(pg_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[Any] = []

    def start() -> None:
        try:
            stores.append(open_store(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(stores) == 4
    assert stores[0].migrations() == sorted(MIGRATION_NAMES)
    for s in stores:
        s.close()


@pytest.mark.postgres
def test_same_answers_as_sqlite(pg: Any, tmp_path: Path) -> None:
    """One script of store calls against both stores: the same rows come back (ids and clocks aside)."""
    lite = SQLiteStore(tmp_path / "same.db")
    events = [event("s1", n=n) for n in range(5)] + [event("s2", n=n) for n in range(3)] + [event("s1", "other")]
    for store in (pg, lite):
        first = store.ingest_events(events)
        again = store.ingest_events([*events[:2], {"tenant_id": "t"}, "nope"])
        assert (first.accepted, first.duplicates, first.rejected) == (9, 0, [])
        assert (again.accepted, again.duplicates) == (0, 2) and [r["index"] for r in again.rejected] == [2, 3]

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("hash", "previous_hash", "ingested_at")} for r in rows]

    for kwargs in ({}, {"session_id": "s1"}, {"tool_name": "tool1"}, {"event_type": "TOOL_CALL_PRE"},
                   {"since": "2026-01-01T00:00:02Z", "until": "2026-01-01T00:00:04Z"}, {"after_seq": 3, "limit": 2}):
        assert strip(pg.events("t", **kwargs)) == strip(lite.events("t", **kwargs)), kwargs
    verify_chain(pg.events("t", session_id="s1"))
    assert pg.count_events("t") == lite.count_events("t") == 8
    assert pg.count_events("other") == 1
    assert pg.sessions("t") == lite.sessions("t")
    assert pg.sessions("t", since="2026-01-01T00:00:03Z") == lite.sessions("t", since="2026-01-01T00:00:03Z")
    assert pg.session_summary("t", "s1") == lite.session_summary("t", "s1")
    assert pg.session_summary("t", "nope") is None

    for store in (pg, lite):
        store.record_violation({"violation_id": "v1", "tenant_id": "t", "session_id": "s1", "agent_id": "a",
                                "user_id": "u", "tool_name": "pay", "decision": "STEP_UP", "reason": "r",
                                "decision_reason_code": "c", "risk_score": 50, "matched_rule_ids": ["big"],
                                "tool_args": {"amount": 500}, "request": {"x": 1},
                                "created_at": "2026-01-01T00:00:00Z"})
        store.record_violation({"violation_id": "v1", "tenant_id": "t", "session_id": "s1", "agent_id": "a",
                                "user_id": "u", "tool_name": "x", "decision": "BLOCK", "reason": "dup ignored",
                                "decision_reason_code": "c", "risk_score": 1})
        hold = {"approval_id": "apr_1", "hold_token": "hold_1", "tenant_id": "t", "agent_id": "a", "user_id": "u",
                "session_id": "s1", "tool_name": "pay", "args_hash": "h", "tool_args": {"amount": 500},
                "reason": "r", "decision_reason_code": "c", "risk_score": 50.0, "matched_rule_ids": ["big"],
                "violation_id": "v1", "allow_modify": True, "created_at": "2026-01-01T00:00:00.000000Z",
                "expires_at": "2999-01-01T00:00:00.000000Z"}
        store.create_hold(hold)
        store.create_hold({**hold, "approval_id": "apr_2", "hold_token": "hold_2"})
    assert pg.violations("t") == lite.violations("t") and pg.violations("other") == []
    assert pg.get_hold("hold_1") == lite.get_hold("hold_1")
    assert pg.get_hold("apr_1", "other") is None
    assert pg.holds("t") == lite.holds("t")
    resolved = [s.resolve_hold("apr_1", status="approved", reviewer="r", grant_scope="session") for s in (pg, lite)]
    for r in resolved:
        r.pop("resolved_at")
    assert resolved[0] == resolved[1]
    for store in (pg, lite):
        with pytest.raises(HoldConflict):
            store.resolve_hold("hold_1", status="denied", reviewer="r")
        assert store.has_grant("t", "s1", "pay", "h") == "apr_1" and store.has_grant("t", "s2", "pay", "h") is None
        assert store.expire_holds("3000-01-01T00:00:00.000000Z") == 1
    assert [h["status"] for h in pg.holds("t", status="all")] == [h["status"] for h in lite.holds("t", status="all")]
    assert pg.sessions("t") == lite.sessions("t")

    for store in (pg, lite):
        assert store.save_policy("t", "version: 1", "e1") == 1 and store.save_policy("t", "version: 2", "e2") == 2
        store.upsert_inventory("t", "a", [{"name": "x", "description": "d", "input_schema": {"type": "object"}},
                                          {"name": "y"}, {"description": "no name"}])
        store.upsert_inventory("t", "a", [{"name": "x", "description": "d2"}])
    strip_time = lambda rows: [{k: v for k, v in r.items() if k not in ("created_at", "updated_at")} for r in rows]  # noqa: E731
    assert strip_time(pg.policy_versions("t")) == strip_time(lite.policy_versions("t"))
    assert pg.latest_policy("t")["version"] == 2 and pg.latest_policy("nobody") is None
    assert strip_time(pg.inventory("t")) == strip_time(lite.inventory("t"))

    record, secret = pg.create_api_key("t", "agent", "ci")
    assert pg.api_key_for(secret)["key_id"] == record["key_id"] and pg.api_key_for(secret + "x") is None
    assert [k["key_id"] for k in pg.api_keys("t")] == [record["key_id"]] and pg.count_api_keys() == 1
    assert not pg.revoke_api_key(record["key_id"], "other") and pg.revoke_api_key(record["key_id"])
    assert pg.api_key_for(secret) is None and pg.count_api_keys() == 0 and pg.api_keys("t", include_revoked=False) == []
    with pytest.raises(ValueError):
        pg.create_api_key("t", "root")
    assert pg.query("SELECT ? AS one", (1,)) == [{"one": 1}]


@pytest.mark.postgres
def test_concurrent_ingest_lands_once_with_one_chain(pg: Any, pg_url: str) -> None:
    """Eight writers (two store objects, as two replicas) retry overlapping batches of one session."""
    other = open_store(pg_url)
    events = [event("hot", n=n) for n in range(200)]
    results: list[Any] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        store = pg if i % 2 else other
        try:
            for start in range(0, 200, 50):
                results.append(store.ingest_events(events[start: start + 50 + 10 * (i % 3)]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()
    assert not errors
    assert sum(r.accepted for r in results) == 200
    rows = pg.events("t", session_id="hot")
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)
    verify_chain(rows)


@pytest.mark.postgres
def test_engines_share_state_through_the_store(pg: Any, pg_url: str) -> None:
    """Two engines on two store objects decide like one: rate limits, sequences, progressive, holds, dedupe."""
    other = open_store(pg_url)
    policy = parse_policy(POLICY)
    one, two = Engine(pg, policy), Engine(other, policy)
    try:
        assert one.shared and two.shared
        decisions = [(one if i % 2 else two).decide(request("search", {"q": i}, session="r")).decision
                     for i in range(5)]
        assert decisions == [DecisionType.ALLOW] * 3 + [DecisionType.BLOCK] * 2
        assert one.decide(request("search", {}, session="elsewhere")).decision is DecisionType.ALLOW

        assert two.decide(request("send_email", {"to": "x"}, session="q")).decision is DecisionType.ALLOW
        one.decide(request("read_file", {"path": "/home/secrets/key"}, session="q"))
        blocked = two.decide(request("send_email", {"to": "x"}, session="q"))
        assert blocked.decision is DecisionType.BLOCK and blocked.matched_rule_ids == ["seq"]

        first = one.decide(request("read_file", {"path": "/etc/a"}, "progressive", "p"))
        second = two.decide(request("read_file", {"path": "/etc/b"}, "progressive", "p"))
        assert first.decision is DecisionType.STEP_UP and second.decision is DecisionType.BLOCK

        for i in range(50):  # progressive risk: the agent's tool counts are shared too
            assert one.decide(request("read_file", {"path": "/home/x"}, "progressive", f"w{i}")).decision is (
                DecisionType.ALLOW)
        rare = two.decide(request("pay", {"amount": 5}, "progressive", "w-rare"))
        assert rare.decision is DecisionType.STEP_UP and "risk:rare_tool" in rare.matched_rule_ids

        held = one.decide(request("pay", {"amount": 500}, "step_up", "h"))
        assert held.hold_token
        waiter: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: waiter.update(one.wait_hold(held.hold_token, 10)))
        thread.start()
        two.resolve(held.hold_token, approve=True, reviewer="bob")
        thread.join(10)
        assert waiter["resolved"] and waiter["decision"] == "ALLOW" and waiter["reviewer"] == "bob"

        body = {**request("pay", {"amount": 900}, "step_up", "d"), "request_id": "req-1"}
        a = one.decide(body, dedupe=True)
        b = two.decide(body, dedupe=True)
        assert a.hold_token and a.hold_token == b.hold_token and a.violation_id == b.violation_id
        assert len([h for h in pg.holds("t") if h["session_id"] == "d"]) == 1
        assert b.raw == a.raw
    finally:
        other.close()


@pytest.mark.postgres
def test_rate_window_slides_with_the_engine_clock(pg: Any) -> None:
    now = [1000.0]
    engine = Engine(pg, parse_policy(POLICY), clock=lambda: now[0])
    for _ in range(3):
        assert engine.decide(request("search", session="w")).decision is DecisionType.ALLOW
    assert engine.decide(request("search", session="w")).decision is DecisionType.BLOCK
    now[0] += 61.0
    assert engine.decide(request("search", session="w")).decision is DecisionType.ALLOW


def test_sqlite_shared_state_path_matches(tmp_path: Path) -> None:
    """The store-backed engine path also runs on SQLite (several kernels on one file)."""
    stores = [SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")]
    for store in stores:
        store.shared_state = True
    one, two = (Engine(store, parse_policy(POLICY)) for store in stores)
    assert one.shared and two.shared
    decisions = [(one if i % 2 else two).decide(request("search", session="r")).decision for i in range(4)]
    assert decisions == [DecisionType.ALLOW] * 3 + [DecisionType.BLOCK]
    one.decide(request("read_file", {"path": "/srv/secrets"}, session="q"))
    assert two.decide(request("send_email", session="q")).decision is DecisionType.BLOCK


@pytest.mark.postgres
def test_prune_and_export(pg: Any, tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from thoth_nb.cli_db import export_parquet

    old = [event("old", n=n, occurred_at="2020-01-01T00:00:00Z") for n in range(5)]
    new = [event("new", n=n, occurred_at="2999-01-01T00:00:00Z") for n in range(7)]
    pg.ingest_events(old + new)
    target = tmp_path / "events.parquet"
    assert export_parquet(pg, target, batch=4) == 12
    table = pq.read_table(target)
    assert table.num_rows == 12 and table.schema.field("occurred_at").type == pyarrow.timestamp("us", tz="UTC")
    assert sorted(set(table.column("session_id").to_pylist())) == ["new", "old"]
    counts = pg.prune("2021-01-01T00:00:00Z")
    assert counts["events"] == 5
    assert [e["session_id"] for e in pg.events("t")] == ["new"] * 7


@pytest.mark.postgres
def test_an_id_racing_in_for_another_session_is_a_duplicate_and_the_chain_stays_whole(pg: Any, pg_url: str) -> None:
    """The same event id, sent for session a and session b at once (different advisory locks), lands once:
    b's batch meets the unique index, is redone after a's commit, counts the id as a duplicate and chains
    its other events without a gap."""
    import psycopg

    shared = event("a")
    batch = [event("b", n=1), {**event("b", n=2), "event_id": shared["event_id"]}, event("b", n=3)]
    result: list[Any] = []
    with psycopg.connect(pg_url) as other:  # a's writer: inserted, not yet committed
        other.execute(
            "INSERT INTO events (event_id, tenant_id, session_id, event_type, occurred_at, ingested_at, chain_index, "
            "hash, previous_hash, body) VALUES (%s, 't', 'a', 'TOOL_CALL_PRE', now(), now(), 0, 'h', '', '{}')",
            (shared["event_id"],))
        writer = threading.Thread(target=lambda: result.append(pg.ingest_events(batch)))
        writer.start()
        writer.join(1.0)
        assert writer.is_alive(), "b's COPY should wait on the uncommitted duplicate id"
        other.commit()
    writer.join(30)
    assert len(result) == 1
    assert (result[0].accepted, result[0].duplicates) == (2, 1)
    rows = pg.events("t", session_id="b")
    assert [r["event_id"] for r in rows] == [batch[0]["event_id"], batch[2]["event_id"]]
    verify_chain(rows)
    assert pg.count_events("t") == 3


@pytest.mark.postgres
def test_stored_duplicates_meet_the_unique_index_and_count_as_on_sqlite(pg: Any, tmp_path: Path) -> None:
    """A batch is COPied without looking its ids up: one holding stored ids fails the unique index, is
    redone with a lookup and counts them as duplicates exactly as SQLite does; the stored copies stay as
    they were, the chain stays whole, and the next few batches look up first."""
    from thoth_nb.engine.store_pg import _LOOKUP_AFTER_DUPLICATES

    lite = SQLiteStore(tmp_path / "dup.db")
    first = [event("s", n=n) for n in range(4)]
    later = event("s", n=11)
    batches = [
        first,
        [event("s", n=10), {**first[1], "tool_name": "changed"}, later, first[0], later, event("s2", n=12)],
        [event("s", n=13)],
        list(first),
    ]
    results = {}
    for store in (pg, lite):
        results[store] = [store.ingest_events(b) for b in batches]
        if store is pg:
            lookups = pg._lookup_batches
    assert [(r.accepted, r.duplicates, r.rejected) for r in results[pg]] == [
        (r.accepted, r.duplicates, r.rejected) for r in results[lite]] == [(4, 0, []), (3, 3, []), (1, 0, []),
                                                                           (0, 4, [])]
    assert lookups == _LOOKUP_AFTER_DUPLICATES
    rows = pg.events("t", session_id="s")
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in first] + [
        batches[1][0]["event_id"], later["event_id"], batches[2][0]["event_id"]]
    assert rows[1]["tool_name"] == "tool1"  # the stored copy, not the changed resend
    verify_chain(rows)
    verify_chain(pg.events("t", session_id="s2"))
    pg._lookup_batches = 1
    assert pg.ingest_events([event("s", n=14)]).accepted == 1 and pg._lookup_batches == 0  # back to COPY first
    verify_chain(pg.events("t", session_id="s"))


@pytest.mark.postgres
def test_two_batches_waiting_for_each_others_ids_both_land_once(pg: Any, pg_url: str) -> None:
    """Batches for two sessions (different advisory locks) that share ids in crossed order wait for each
    other: PostgreSQL aborts one as a deadlock, which is redone and counts the shared ids as duplicates."""
    import psycopg

    one, two = event("a"), event("a", n=1)
    batch = [event("b", n=2), {**event("b", n=3), "event_id": one["event_id"]},
             {**event("b", n=4), "event_id": two["event_id"]}, event("b", n=5)]
    result: list[Any] = []
    with psycopg.connect(pg_url) as other:  # a's writer holds `two`, then wants `one`, which b's COPY holds
        insert = ("INSERT INTO events (event_id, tenant_id, session_id, event_type, occurred_at, ingested_at, "
                  "chain_index, hash, previous_hash, body) VALUES (%s, 't', 'a', 'TOOL_CALL_PRE', now(), now(), %s, "
                  "'h', '', '{}')")
        other.execute(insert, (two["event_id"], 0))
        writer = threading.Thread(target=lambda: result.append(pg.ingest_events(batch)))
        writer.start()
        time.sleep(0.5)  # b's COPY has inserted `one` and waits for `two`
        assert writer.is_alive()
        other.execute(insert, (one["event_id"], 1))  # waits for b: a deadlock, b is aborted (it waited first)
        other.commit()
    writer.join(30)
    assert len(result) == 1 and (result[0].accepted, result[0].duplicates) == (2, 2)
    rows = pg.events("t", session_id="b")
    assert [r["event_id"] for r in rows] == [batch[0]["event_id"], batch[3]["event_id"]]
    verify_chain(rows)
    assert pg.count_events("t") == 4


@pytest.mark.postgres
def test_ingest_keeps_odd_ids_and_values(pg: Any) -> None:
    """Ids with the separator character, a numeric violation id and offset timestamps go through the
    binary COPY as the text COPY took them."""
    odd = event("s", n=1, event_id="t:with\x1fsep", violation_id=42,
                occurred_at="2026-01-01T01:00:00+01:00")
    result = pg.ingest_events([odd, event("s", n=2)])
    assert (result.accepted, result.duplicates) == (2, 0)
    assert pg.ingest_events([odd]).duplicates == 1
    rows = pg.events("t", session_id="s")
    assert rows[0]["event_id"] == odd["event_id"] and rows[0]["occurred_at"] == "2026-01-01T00:00:00.000000Z"
    assert pg.query("SELECT violation_id FROM events WHERE event_id = %s", (odd["event_id"],)) == [
        {"violation_id": "42"}]
    verify_chain(rows)


@pytest.mark.postgres
def test_database_url_env_selects_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb.engine.store_pg import PostgresStore

    monkeypatch.setenv("THOTH_DATABASE_URL", pg_url)
    store = open_store()
    try:
        assert isinstance(store, PostgresStore) and store.migrations() == sorted(MIGRATION_NAMES)
    finally:
        store.close()
    monkeypatch.delenv("THOTH_DATABASE_URL")
    assert isinstance(open_store(), SQLiteStore)


@pytest.mark.postgres
def test_db_cli_upgrade_prune_export(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from thoth_nb.cli import main

    for target in (pg_url, str(tmp_path / "cli.db")):
        assert main(["db", "upgrade", "--db", target]) == 0
        n = len(MIGRATION_NAMES)
        assert f"{n}/{n} migrations applied (now: m001_initial" in capsys.readouterr().out
        assert main(["db", "upgrade", "--db", target]) == 0
        assert "(up to date)" in capsys.readouterr().out
        store = open_store(target)
        store.ingest_events([event("old", n=1, occurred_at="2000-01-01T00:00:00Z"), event("new", n=2,
                             occurred_at="2999-01-01T00:00:00Z")])
        store.close()
        out = tmp_path / "e.parquet"
        assert main(["db", "export", "--parquet", str(out), "--db", target]) == 0
        assert pq.read_table(out).num_rows == 2
        assert main(["db", "export", "--parquet", str(out), "--db", target, "--since", "2500-01-01T00:00:00Z"]) == 0
        assert pq.read_table(out).column("session_id").to_pylist() == ["new"]
        capsys.readouterr()
        assert main(["db", "prune", "--older-than", "90d", "--db", target]) == 0
        assert "pruned 1 rows" in capsys.readouterr().out
        assert main(["db", "prune", "--older-than", "soon", "--db", target]) == 2
        assert "90d" in capsys.readouterr().err


@pytest.mark.postgres
def test_seq_pages_wait_for_a_lower_seq_still_committing(pg: Any, pg_url: str) -> None:
    """A batch committing late with a lower seq is not skipped by a reader paging by seq."""
    import psycopg

    slow = psycopg.connect(pg_url)  # a replica's ingest, in flight: its seq is allocated, not committed
    try:
        slow.execute("INSERT INTO events (event_id, tenant_id, session_id, event_type, occurred_at, ingested_at, "
                     "chain_index, hash, previous_hash, body) VALUES ('t:slow', 't', 'x', 'TOOL_CALL_PRE', now(), "
                     "now(), 0, 'h', '', '{\"event_id\": \"t:slow\"}')")
        pg.ingest_events([event("y")])  # another replica commits a higher seq meanwhile
        assert [e["session_id"] for e in pg.events("t")] == ["y"]  # a plain read sees what is committed
        assert pg.events("t", limit=10) == []  # a page would end past the pending lower seq: wait
        slow.commit()
        page = pg.events("t", limit=10)
        assert [e["event_id"] for e in page][:1] == ["t:slow"] and len(page) == 2
    finally:
        slow.close()


def _hold(approval_id: str, expires_at: str = "2999-01-01T00:00:00.000000Z") -> dict[str, Any]:
    return {"approval_id": approval_id, "hold_token": f"tok_{approval_id}", "tenant_id": "t", "agent_id": "a",
            "user_id": "u", "session_id": "s1", "tool_name": "pay", "args_hash": "h", "tool_args": None, "reason": "r",
            "decision_reason_code": "c", "risk_score": 50.0, "matched_rule_ids": [], "violation_id": None,
            "allow_modify": False, "created_at": "2026-01-01T00:00:00.000000Z", "expires_at": expires_at}


@pytest.mark.postgres
def test_hold_resolutions_are_pushed_to_every_store_and_survive_a_lost_listener(pg: Any, pg_url: str) -> None:
    """A resolution or expiry through one store (replica) calls the subscribers of another at once; a
    killed LISTEN connection is re-opened and its subscribers are called once (they re-read)."""
    import psycopg

    other = open_store(pg_url)
    woke = threading.Event()
    unsubscribe = other.subscribe_holds(woke.set)
    try:
        pg.create_hold(_hold("apr_a"))
        assert not woke.wait(0.3)  # creating a hold wakes no one
        pg.resolve_hold("apr_a", status="approved", reviewer="r")
        resolved_at = time.monotonic()
        assert woke.wait(2.0)
        assert time.monotonic() - resolved_at < 0.25  # pushed as it arrives, not at the listener's timeout
        woke.clear()
        pg.create_hold(_hold("apr_b", expires_at="2000-01-01T00:00:00.000000Z"))
        assert pg.expire_holds() == 1
        assert woke.wait(2.0)
        woke.clear()
        with psycopg.connect(PG_URL, autocommit=True) as admin:  # PostgreSQL drops the listener's connection
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN thoth_holds%'"
                " AND pid <> pg_backend_pid()").fetchone()
        assert killed and killed[0] >= 1
        assert woke.wait(5.0)  # after the reconnect: resolutions meanwhile may have been missed
        woke.clear()
        pg.create_hold(_hold("apr_c"))
        pg.resolve_hold("tok_apr_c", status="denied", reviewer="r")
        assert woke.wait(5.0)
        unsubscribe()
        woke.clear()
        pg.create_hold(_hold("apr_d"))
        pg.resolve_hold("apr_d", status="denied", reviewer="r")
        assert not woke.wait(0.5)
    finally:
        other.close()


@pytest.mark.postgres
def test_a_store_without_hold_notifications_offers_none(pg_url: str) -> None:
    from thoth_nb.engine.store_pg import PostgresStore

    store = PostgresStore(pg_url, hold_notifications=False)
    try:
        assert store.subscribe_holds(lambda: None) is None
    finally:
        store.close()


@pytest.mark.postgres
def test_request_id_claim_makes_a_duplicate_wait_and_a_stale_claim_passes_on(pg: Any, pg_url: str) -> None:
    """The first dedupe_get claims the id; a second caller waits for the first's decision; a claim whose
    holder never stores a decision passes to a caller that waited out the claim time."""
    other = open_store(pg_url)
    try:
        assert pg.dedupe_get("t", "r1", 600.0) is None  # claimed
        waited: list[Any] = []
        waiter = threading.Thread(target=lambda: waited.append(other.dedupe_get("t", "r1", 600.0)))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive(), "the duplicate should wait for the claim holder's decision"
        assert pg.dedupe_put("t", "r1", {"decision": "first"}, 600.0) == {"decision": "first"}
        waiter.join(5)
        assert waited == [{"decision": "first"}]
        assert other.dedupe_put("t", "r1", {"decision": "second"}, 600.0) == {"decision": "first"}

        other._dedupe_claim_seconds = 0.2
        assert pg.dedupe_get("t", "r2", 600.0) is None  # claimed, and its holder fails to decide
        assert other.dedupe_get("t", "r2", 600.0) is None  # taken over after 0.2 s
        assert other.dedupe_put("t", "r2", {"decision": "mine"}, 600.0) == {"decision": "mine"}
        assert pg.dedupe_put("t", "r2", {"decision": "late"}, 600.0) == {"decision": "mine"}
        assert pg.dedupe_get("t", "r2", 600.0) == {"decision": "mine"}
        assert pg.dedupe_get("t", "r2", 600.0, now=time.time() + 601) is None  # too old: claimed anew
    finally:
        other.close()


@pytest.mark.postgres
def test_a_failed_decision_releases_its_request_id_claim(pg: Any, pg_url: str) -> None:
    """A decision that raises frees the id at once: the retry through another replica decides without
    waiting out the claim time, and decides once."""
    broken = {"now": True}

    class StoreGone(Exception):
        pass

    def policy_for(tenant_id: str) -> Any:  # the tenant's policy lookup fails while `broken`
        if broken["now"]:
            raise StoreGone("the policy table went away mid-decision")
        return None

    engine = Engine(pg, parse_policy(POLICY), policy_for=policy_for)
    other_store = open_store(pg_url)
    other_store._dedupe_claim_seconds = 30.0
    other = Engine(other_store, parse_policy(POLICY))
    body = {**request("pay", {"amount": 500}, mode="step_up"), "request_id": "r-1"}
    try:
        with pytest.raises(StoreGone):
            engine.decide(body, dedupe=True)
        started = time.monotonic()
        first = other.decide(body, dedupe=True)
        assert time.monotonic() - started < 5.0 and first.decision is DecisionType.STEP_UP
        broken["now"] = False
        assert engine.decide(body, dedupe=True).hold_token == first.hold_token
        assert len(pg.holds("t")) == 1
    finally:
        other_store.close()


@pytest.mark.postgres
def test_engine_wait_hold_is_woken_by_a_resolution_through_another_store(pg: Any, pg_url: str) -> None:
    """The engine's hold board listens to the store: a waiter resumes on another replica's approval
    long before its fallback re-read (set to 30 s here)."""
    waiting = Engine(pg, parse_policy(POLICY))
    assert waiting.board.recheck == 1.0  # pushed resolutions: the re-read is only a fallback
    waiting.board.recheck = 30.0
    other_store = open_store(pg_url)
    try:
        held = waiting.decide(request("pay", {"amount": 500}, mode="step_up"))
        assert held.decision is DecisionType.STEP_UP and held.hold_token
        token = held.hold_token
        answer: list[Any] = []
        waiter = threading.Thread(target=lambda: answer.append(waiting.wait_hold(token, 20.0)))
        waiter.start()
        time.sleep(0.3)
        assert not answer
        resolved_at = time.monotonic()
        Engine(other_store, parse_policy(POLICY)).resolve(token, approve=True, reviewer="r")
        waiter.join(20)
        assert answer and answer[0]["status"] == "approved"
        assert time.monotonic() - resolved_at < 1.0
    finally:
        other_store.close()
