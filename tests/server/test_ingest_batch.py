"""POST /v1/events/batch on SQLite: the one-pass ingest (each event parsed, checked, chained and inserted
in turn) must answer exactly what checking the whole batch first would, with msgspec splitting the body
and without it (orjson parses the whole body then)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from thoth_nb.engine import ingest as engine_ingest
from thoth_nb.server import ServerSettings


@pytest.fixture(params=["msgspec", "orjson", "child"])
def live(request: pytest.FixtureRequest, live_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A server storing batches in-process (split by msgspec, or parsed whole by orjson), or through
    its ingest child (server/_ingest.py), started before the first batch so every batch goes through it."""
    if request.param == "msgspec":
        pytest.importorskip("msgspec")
        assert engine_ingest._RAW_BATCH is not None
    elif request.param == "orjson":
        monkeypatch.setattr(engine_ingest, "_RAW_BATCH", None)
    found = live_factory(ServerSettings(ingest_child=request.param == "child"))
    child = found.server.app.state.thoth.ingest_child
    if request.param == "child":
        child.start(timeout=30.0)
    else:
        assert child is None
    yield found
    if child is not None:
        assert child.failures == 0, child.last_error
        assert child.batches > 0


def _event(session: str = "s1", n: int = 0, **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"acme:{uuid.uuid4()}", "tenant_id": "acme", "session_id": session, "agent_id": "agent-1",
        "user_id": "u1", "tool_name": "lookup", "event_type": "TOOL_CALL_PRE", "hash": "", "previous_hash": "",
        "signature": "", "chain_index": None, "metadata": {"n": n, "authorization_decision": "ALLOW"},
        "occurred_at": f"2026-06-21T20:52:{n % 60:02d}.123456Z",
    }
    event.update(over)
    return event


def _rows(live: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(live.server.db) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM events ORDER BY seq")]
    db.close()
    return rows


def test_replayed_and_new_events_in_one_long_batch_count_exactly(live: Any, verify: Any) -> None:
    agent = live.client("acme", "agent")
    first = [_event(f"s{n % 2}", n) for n in range(120)]
    assert agent.post("/v1/events/batch", json={"events": first}).json() == {
        "accepted": 120, "duplicates": 0, "rejected": []}
    stored = {r["event_id"]: r for r in _rows(live)}
    fresh = [_event(f"s{n % 3}", n) for n in range(300)]
    # a stored id after 200 new events (three 64-row statements in), a repeat inside the batch, a bad one
    batch = [*fresh[:200], {**first[50], "tool_name": "changed"}, *fresh[200:], fresh[10], {"tenant_id": "acme"}]
    r = agent.post("/v1/events/batch", json=batch)
    assert r.status_code == 202
    assert r.json() == {"accepted": 300, "duplicates": 2, "rejected": [
        {"index": 302, "error": "event_id: must be a non-empty string"}]}
    rows = _rows(live)
    assert len(rows) == 420
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in first + fresh]
    assert rows[50] == stored[first[50]["event_id"]]  # the stored copy is untouched
    for session in ("s0", "s1", "s2"):
        assert [r["chain_index"] for r in rows if r["session_id"] == session] == list(
            range(sum(r["session_id"] == session for r in rows)))
    verify(live.server.db)
    again = agent.post("/v1/events/batch", json=batch).json()
    assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 302, 1)


def test_another_tenant_late_in_the_batch_stores_nothing(live: Any) -> None:
    agent = live.client("acme", "agent")
    batch = [_event(n=n) for n in range(150)]
    batch.insert(140, _event(tenant_id="globex"))
    r = agent.post("/v1/events/batch", json=batch)
    assert r.status_code == 403 and r.json()["field"] == "events[140].tenant_id"
    assert _rows(live) == []
    assert agent.post("/v1/events/batch", json=batch[:140]).json()["accepted"] == 140


def test_mapping_rejections_and_limits_are_the_same_with_either_parser(live: Any, verify: Any) -> None:
    agent = live.client("acme", "agent")
    bare = str(uuid.uuid4())
    camel = {"eventId": bare, "tenantId": "acme", "sessionId": "s-camel", "eventType": "TOOL_CALL_POST",
             "toolName": "lookup", "occurredAt": "2026-06-21T20:52:14", "metadata": {"sdkLanguage": "typescript"}}
    batch: list[Any] = [camel, "nope", _event(event_id=None), _event(occurred_at="yesterday"),
                        _event(event_id=f"globex:{uuid.uuid4()}"), _event(session_id=""), 7,
                        _event(tenant_id=None, event_id=str(uuid.uuid4()))]
    for body in (batch, {"events": batch, "extra": True}):
        out = agent.post("/v1/events/batch", json=body).json()
        assert [x["index"] for x in out["rejected"]] == [1, 2, 3, 4, 5, 6]
        assert out["rejected"][0]["error"] == "event must be an object"
        assert out["rejected"][3]["error"] == "event_id must start with 'acme:'"
        assert "session_id" in out["rejected"][4]["error"]
        assert (out["accepted"], out["duplicates"]) == ((2, 0) if body is batch else (0, 2))
    rows = _rows(live)
    assert rows[0]["event_id"] == f"acme:{bare}" and rows[0]["occurred_at"] == "2026-06-21T20:52:14.000000Z"
    assert rows[0]["event_type"] == "TOOL_CALL_POST" and rows[1]["tenant_id"] == "acme"
    assert rows[1]["event_id"].startswith("acme:")

    def status(content: bytes) -> tuple[int, str]:
        r = agent.post("/v1/events/batch", content=content, headers={"Content-Type": "application/json"})
        return r.status_code, r.json()["error"]

    assert status(b'[{"event_id": "x"') == (400, "malformed_json")
    assert status(b'[{"event_id": "\\ud800"}]') == (400, "malformed_json")  # a lone surrogate
    assert status(b"") == (400, "malformed_json")
    assert status(b'{"events": "x"}') == (422, "invalid_request")
    assert status(b'{"events": null}') == (422, "invalid_request")
    assert status(b'{"other": []}') == (422, "invalid_request")
    assert status(b"7") == (422, "invalid_request")
    assert status(b"[" + b",".join([b"{}"] * 501) + b"]") == (413, "payload_too_large")
    assert len(_rows(live)) == 2
    verify(live.server.db)
