"""A timestamp outside what a datetime holds (year 1 with a positive offset, epoch 1e20) is the caller's
mistake: one rejected event or a 422 naming the parameter, never a 500, and never the ingest child's death."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", 1e20, -1e20, 1e300]


def test_an_out_of_range_occurred_at_rejects_only_that_event(live: Any) -> None:
    child = live.server.app.state.thoth.ingest_child
    child.start(timeout=30.0)
    agent = live.client("acme", "agent")
    events = [{"event_id": str(uuid.uuid4()), "session_id": "s1", "event_type": "TOOL_CALL_PRE",
               "occurred_at": when} for when in [*OUT_OF_RANGE, "2026-06-21T20:52:13Z"]]
    reply = agent.post("/v1/events/batch", json={"events": events})
    assert reply.status_code == 202, reply.text
    answer = reply.json()
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == list(range(len(OUT_OF_RANGE)))
    assert all("range" in r["error"] for r in answer["rejected"]), answer["rejected"]
    assert child.failures == 0, child.last_error
    assert live.client("acme", "reviewer").get("/v1/events").json()["items"][0]["session_id"] == "s1"


@pytest.mark.parametrize("path", ["/v1/events", "/v1/sessions", "/v1/violations", "/v1/analytics/summary"])
def test_an_out_of_range_since_is_a_422(live: Any, path: str) -> None:
    c = live.client("acme", "reviewer")
    for when in OUT_OF_RANGE[:2]:
        reply = c.get(path, params={"since": when})
        assert reply.status_code == 422, reply.text
        assert reply.json()["field"] == "since"
