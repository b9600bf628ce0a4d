"""The server's ingest child (server/_ingest.py): batches stored by another process, and nothing lost
when it dies, cannot start, or the server stops."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from thoth_nb.server import ServerSettings


def _batch(n: int, session: str = "s1") -> dict[str, Any]:
    return {"events": [
        {"event_id": str(uuid.uuid4()), "session_id": session, "agent_id": "agent-1", "tool_name": "lookup",
         "event_type": "TOOL_CALL_PRE", "occurred_at": f"2026-11-26T07:00:{i % 60:02d}Z",
         "metadata": {"i": i}}
        for i in range(n)
    ]}


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        found = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    conn.close()
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_batches_are_stored_by_a_child_process(live: Any) -> None:
    child = live.server.app.state.thoth.ingest_child
    child.start(timeout=30.0)
    assert child.pid is not None and child.pid != os.getpid()
    agent = live.client("acme", "agent")
    answer = agent.post("/v1/events/batch", json=_batch(50))
    assert answer.status_code == 202 and answer.json() == {"accepted": 50, "duplicates": 0, "rejected": []}
    assert child.batches == 1 and child.failures == 0
    assert _count(live.server.db) == 50


def test_a_killed_child_loses_no_batch_and_the_chain_stays_whole(live: Any, verify: Any) -> None:
    child = live.server.app.state.thoth.ingest_child
    child.start(timeout=30.0)
    agent = live.client("acme", "agent")
    assert agent.post("/v1/events/batch", json=_batch(30)).json()["accepted"] == 30
    os.kill(child.pid, signal.SIGKILL)
    # the same session continues: stored in-process now, chained onto what the child stored
    answer = agent.post("/v1/events/batch", json=_batch(30))
    assert answer.status_code == 202 and answer.json()["accepted"] == 30, answer.text
    # the next frame finds the child either reaped ("exited") or not yet ("gone": a broken pipe)
    assert child.failures == 1 and ("exited" in child.last_error or "gone" in child.last_error), child.last_error
    assert agent.post("/v1/events/batch", json=_batch(30)).json()["accepted"] == 30
    assert _count(live.server.db) == 90
    verify(live.server.db)


def test_a_child_that_cannot_start_leaves_ingest_in_process(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    child = live.server.app.state.thoth.ingest_child
    monkeypatch.setattr("thoth_nb._transports.store_writer.sys.executable", "/nonexistent/python")
    agent = live.client("acme", "agent")
    for _ in range(2):
        assert agent.post("/v1/events/batch", json=_batch(20)).json()["accepted"] == 20
    assert child.batches == 0 and child.failures == 1 and "cannot start" in child.last_error
    assert _count(live.server.db) == 40


def test_a_batch_refused_by_the_child_stores_nothing(live: Any) -> None:
    child = live.server.app.state.thoth.ingest_child
    child.start(timeout=30.0)
    agent = live.client("acme", "agent")
    batch = _batch(10)
    batch["events"][7]["tenant_id"] = "globex"
    answer = agent.post("/v1/events/batch", json=batch)
    assert answer.status_code == 403 and answer.json()["field"] == "events[7].tenant_id", answer.text
    assert agent.post("/v1/events/batch", content=b"{not json").status_code == 400
    assert child.batches == 2 and child.failures == 0  # the client's mistakes, not the child's
    assert _count(live.server.db) == 0


def test_stopping_the_server_stops_its_child(live_factory: Any) -> None:
    live = live_factory()
    child = live.server.app.state.thoth.ingest_child
    child.start(timeout=30.0)
    pid = child.pid
    live.server.stop()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    assert child.pid is None


def test_the_child_can_be_turned_off(live_factory: Any) -> None:
    live = live_factory(ServerSettings(ingest_child=False))
    assert live.server.app.state.thoth.ingest_child is None
    agent = live.client("acme", "agent")
    assert agent.post("/v1/events/batch", json=_batch(5)).json()["accepted"] == 5
