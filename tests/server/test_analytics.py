"""`GET /v1/analytics/summary|timeseries|drift` on a live server: known values from events with fixed
times, filters, tenant isolation and roles."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from thoth_nb.engine.store import format_ts, parse_ts

DAY = "2026-03-01"
ROUTES = ("/v1/analytics/summary", "/v1/analytics/timeseries", "/v1/analytics/drift")


def ev(tenant: str, agent: str, session: str, tool: str, kind: str, at: str) -> dict[str, Any]:
    return {"event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "user_id": "u",
            "agent_id": agent, "tool_name": tool, "event_type": kind, "occurred_at": f"{DAY}T{at}Z"}


def ingest(live: Any, tenant: str, events: list[dict[str, Any]]) -> None:
    reply = live.client(tenant, "agent").post("/v1/events/batch", json={"events": events})
    assert reply.status_code == 202 and reply.json()["accepted"] == len(events), reply.text


def violation(live: Any, tenant: str, agent: str, decision: str, at: str) -> None:
    live.server.store.record_violation({
        "violation_id": f"vio_{uuid.uuid4().hex}", "tenant_id": tenant,
        "created_at": format_ts(parse_ts(f"{DAY}T{at}Z")),
        "session_id": "s", "agent_id": agent, "user_id": "u", "tool_name": "drop_table", "decision": decision,
        "reason": "r", "decision_reason_code": "c", "risk_score": 50})


def hold(live: Any, tenant: str, agent: str, at: str, expires: str = "2999-01-01T00:00:00.000000Z") -> str:
    token = f"hold_{uuid.uuid4().hex}"
    live.server.store.create_hold({
        "approval_id": f"apr_{uuid.uuid4().hex}", "hold_token": token, "tenant_id": tenant, "agent_id": agent,
        "user_id": "u", "session_id": "s", "tool_name": "transfer", "args_hash": "h", "reason": "r",
        "decision_reason_code": "c", "risk_score": 60, "created_at": format_ts(parse_ts(f"{DAY}T{at}Z")),
        "expires_at": expires})
    return token


@pytest.fixture
def data(live: Any) -> Any:
    ingest(live, "acme", [
        ev("acme", "a1", "s1", "lookup", "TOOL_CALL_PRE", "00:10:00"),
        ev("acme", "a1", "s1", "lookup", "TOOL_CALL_POST", "00:10:01"),
        ev("acme", "a1", "s1", "lookup", "TOOL_CALL_PRE", "00:20:00"),
        ev("acme", "a1", "s1", "lookup", "TOOL_CALL_POST", "00:20:01"),
        ev("acme", "a1", "s1", "drop_table", "TOOL_CALL_PRE", "00:59:59.999999"),
        ev("acme", "a1", "s1", "drop_table", "TOOL_CALL_BLOCK", "01:00:00"),
        ev("acme", "a2", "s2", "transfer", "TOOL_CALL_PRE", "03:00:00"),
        ev("acme", "a2", "s2", "llm", "LLM_INVOCATION", "03:00:05"),
    ])
    ingest(live, "globex", [ev("globex", "a1", "g1", "secret_tool", "TOOL_CALL_PRE", f"00:0{i}:00") for i in range(5)])
    violation(live, "acme", "a1", "BLOCK", "01:00:00")
    violation(live, "acme", "a2", "STEP_UP", "03:00:00")
    violation(live, "globex", "a1", "BLOCK", "00:30:00")
    hold(live, "acme", "a2", "03:00:00")
    live.server.store.resolve_hold(hold(live, "acme", "a2", "03:00:01"), status="approved", reviewer="r")
    hold(live, "acme", "a1", "00:30:00", expires="2000-01-01T00:00:00.000000Z")  # long expired
    hold(live, "globex", "a1", "00:30:00")
    return live


def test_summary_known_values_filters_and_isolation(data: Any) -> None:
    reviewer = data.client("acme", "reviewer")
    got = reviewer.get("/v1/analytics/summary").json()
    assert {k: got[k] for k in ("events", "tool_calls", "completed", "blocked", "llm_calls", "sessions", "agents")} == {
        "events": 8, "tool_calls": 4, "completed": 2, "blocked": 1, "llm_calls": 1, "sessions": 2, "agents": 2}
    assert got["top_tools"] == [{"tool_name": "lookup", "calls": 2, "blocked": 0},
                                {"tool_name": "drop_table", "calls": 1, "blocked": 1},
                                {"tool_name": "transfer", "calls": 1, "blocked": 0}]
    assert got["violations"] == {"total": 2, "by_decision": {"BLOCK": 1, "STEP_UP": 1}}
    assert got["approvals"] == {"pending": 1, "approved": 1, "denied": 0, "expired": 1}
    assert got["tenant_id"] == "acme"

    a1 = reviewer.get("/v1/analytics/summary", params={"agent_id": "a1"}).json()
    assert (a1["events"], a1["agents"], a1["violations"]["total"], a1["approvals"]["expired"]) == (6, 1, 1, 1)
    window = reviewer.get("/v1/analytics/summary",
                          params={"since": f"{DAY}T00:20:00Z", "until": f"{DAY}T01:00:00Z"}).json()
    assert (window["events"], window["tool_calls"], window["blocked"]) == (3, 2, 0)  # since inclusive, until not
    assert window["violations"]["total"] == 0 and window["approvals"]["expired"] == 1

    globex = data.client("globex", "admin").get("/v1/analytics/summary").json()
    assert (globex["events"], globex["tool_calls"], globex["violations"]["total"]) == (5, 5, 1)
    assert [t["tool_name"] for t in globex["top_tools"]] == ["secret_tool"]
    assert globex["approvals"] == {"pending": 1, "approved": 0, "denied": 0, "expired": 0}


def test_timeseries_buckets_known_values(data: Any) -> None:
    reviewer = data.client("acme", "reviewer")
    got = reviewer.get("/v1/analytics/timeseries", params={"bucket": "1h"}).json()
    assert got["bucket_seconds"] == 3600
    rows = [(i["start"], i["events"], i["tool_calls"], i["completed"], i["blocked"], i["llm_calls"], i["violations"])
            for i in got["items"]]
    assert rows == [
        (f"{DAY}T00:00:00.000000Z", 5, 3, 2, 0, 0, 0),
        (f"{DAY}T01:00:00.000000Z", 1, 0, 0, 1, 0, 1),
        (f"{DAY}T02:00:00.000000Z", 0, 0, 0, 0, 0, 0),  # an empty bucket between active ones is there, zeroed
        (f"{DAY}T03:00:00.000000Z", 2, 1, 0, 0, 1, 1),
    ]
    assert got["items"][0]["end"] == f"{DAY}T01:00:00.000000Z"
    assert sum(i["events"] for i in got["items"]) == 8  # the other tenant's 5 are not in any bucket

    fine = reviewer.get("/v1/analytics/timeseries", params={"bucket": "30m", "agent_id": "a1",
                                                            "since": f"{DAY}T00:00:00Z", "until": f"{DAY}T02:00:00Z"})
    starts = [(i["start"][11:16], i["events"]) for i in fine.json()["items"]]
    assert starts == [("00:00", 4), ("00:30", 1), ("01:00", 1), ("01:30", 0)]  # since..until spans all four

    too_fine = reviewer.get("/v1/analytics/timeseries", params={"bucket": "1s"})
    assert too_fine.status_code == 422 and too_fine.json()["field"] == "bucket"
    for bad in ("0", "1.5s", "fortnight", "-1h"):
        reply = reviewer.get("/v1/analytics/timeseries", params={"bucket": bad})
        assert reply.status_code == 422 and "bucket" in reply.json()["message"], bad
    empty = data.client("globex", "reviewer").get("/v1/analytics/timeseries", params={"agent_id": "nobody"}).json()
    assert empty["items"] == []


def test_drift_known_values(live: Any) -> None:
    """Hours 0-1: only lookup (the baseline is learnt from hour 0); hour 2: half transfer; hour 3: only
    transfer. JS against the baseline: 0, 0, JS((½,½), (1,0)), and 1 (disjoint support)."""
    plan = [["lookup"] * 40, ["lookup"] * 40, ["lookup", "transfer"] * 20, ["transfer"] * 40]
    events = [ev("acme", "a1", "s1", tool, "TOOL_CALL_PRE", f"{hour:02d}:{minute:02d}:00")
              for hour, tools in enumerate(plan) for minute, tool in enumerate(tools)]
    ingest(live, "acme", events)
    ingest(live, "globex", [ev("globex", "a1", "g", "other", "TOOL_CALL_PRE", f"02:{m:02d}:00") for m in range(40)])
    reply = live.client("acme", "reviewer").get("/v1/analytics/drift", params={"window": "1h", "min_calls": 10})
    assert reply.status_code == 200, reply.text
    got = reply.json()
    assert got["calls"] == 160 and got["window_seconds"] == 3600
    items = got["items"]
    assert [(i["window_start"][11:16], i["calls"]) for i in items] == [("00:00", 40), ("01:00", 40), ("02:00", 40),
                                                                        ("03:00", 40)]
    half = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
    assert [i["js_divergence"] for i in items] == pytest.approx([0.0, 0.0, half, 1.0])
    assert [i["drifted"] for i in items] == [False, False, True, True]
    # in hour 3 both tools moved by the whole share (lookup 1 -> 0, transfer 0 -> 1): either is the top mover
    assert items[3]["top_tool"] in ("lookup", "transfer")
    assert abs(items[3]["top_tool_share"] - items[3]["top_tool_baseline"]) == 1.0

    strict = live.client("acme", "admin").get("/v1/analytics/drift", params={"window": "1h", "min_calls": 41}).json()
    assert [i["js_divergence"] for i in strict["items"]] == [None] * 4  # too few calls per window: no verdict
    narrowed = live.client("acme", "reviewer").get(
        "/v1/analytics/drift", params={"since": f"{DAY}T02:00:00Z", "window": "30m", "min_calls": 5}).json()
    assert narrowed["calls"] == 80
    for params, field in (({"window": "1h", "step": "2h"}, "step"), ({"train": "1"}, "train"),
                          ({"threshold": "2"}, "threshold"), ({"min_calls": "0.5"}, "min_calls"),
                          ({"window": "soon"}, "window")):
        bad = live.client("acme", "reviewer").get("/v1/analytics/drift", params=params)
        assert bad.status_code == 422 and bad.json()["field"] == field, params


def test_roles_and_tenant_checks(live: Any) -> None:
    for route in ROUTES:
        assert live.client(None).get(route).status_code == 401
        assert live.client("acme", "agent").get(route).status_code == 403
        assert live.client("acme", "reviewer").get(route).status_code == 200
        assert live.client("acme", "admin").get(route).status_code == 200
        other = live.client("acme", "reviewer").get(route, params={"tenant_id": "globex"})
        assert other.status_code == 403
        backwards = live.client("acme", "reviewer").get(
            route, params={"since": f"{DAY}T02:00:00Z", "until": f"{DAY}T01:00:00Z"})
        assert backwards.status_code == 422 and backwards.json()["field"] == "until"
        assert live.client("acme", "reviewer").get(route, params={"since": "yesterday"}).status_code == 422
    paths = live.client(None).get("/openapi.json").json()["paths"]
    assert all(route in paths for route in ROUTES)
    assert {p["name"] for p in paths["/v1/analytics/drift"]["get"]["parameters"]} >= {
        "agent_id", "since", "until", "window", "step", "threshold", "min_calls", "train"}
