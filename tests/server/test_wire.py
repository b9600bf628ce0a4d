"""PROTOCOL §3-§7 against a live server: what a client written for Aten's enforcer sees."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from thoth_nb.engine.store import SQLiteStore


def test_enforce_allow_block_step_up_wire_shape(live: Any, body: Any) -> None:
    c = live.client("acme", "agent")
    allow = c.post("/v1/enforce", json=body()).json()
    assert allow["decision"] == allow["authorization_decision"] == "ALLOW"
    for key in ("reason", "decision_reason_code", "action_classification", "risk_score"):
        assert key in allow

    block = c.post("/v1/enforce", json=body(tool_name="drop_table", tool_args={"name": "users"})).json()
    assert block["decision"] == block["authorization_decision"] == "BLOCK"
    assert block["violation_id"].startswith("vio_")
    assert block["reason"] == "dropping tables is forbidden"

    held = c.post(
        "/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "bob", "amount": 500})
    ).json()
    assert held["decision"] == held["authorization_decision"] == "STEP_UP"
    assert held["hold_token"] and held["step_up_timeout_seconds"] > 0
    assert held["decision_reason_code"] == "step_up_high_risk"

    pending = c.get(f"/v1/enforce/hold/{held['hold_token']}").json()
    assert pending["resolved"] is False and pending["resolution"] is None
    assert pending["decision"] == "STEP_UP" and pending["expires_at"]


def test_enforce_validation_names_the_field_and_ignores_unknown_fields(live: Any, body: Any) -> None:
    c = live.client("acme", "agent")
    for field in ("agent_id", "tenant_id", "tool_name", "session_id", "approved_scope", "enforcement_mode"):
        request = body()
        del request[field]
        r = c.post("/v1/enforce", json=request)
        assert r.status_code == 422, field
        assert r.json()["field"] == field and field in r.json()["message"]
    wrong = c.post("/v1/enforce", json=body(approved_scope="lookup"))
    assert wrong.status_code == 422 and wrong.json()["field"] == "approved_scope"
    wrong = c.post("/v1/enforce", json=body(tool_args=["a"]))
    assert wrong.status_code == 422 and wrong.json()["field"] == "tool_args"
    wrong = c.post("/v1/enforce", json=body(user_id=7))
    assert wrong.status_code == 422 and wrong.json()["field"] == "user_id"
    wrong = c.post("/v1/enforce", json=[body()])
    assert wrong.status_code == 422
    ok = c.post("/v1/enforce", json=body(some_future_field={"x": 1}, pack_id="p"))
    assert ok.status_code == 200 and ok.json()["decision"] == "ALLOW"


def test_malformed_json_is_400_saying_what_and_changes_nothing(live: Any) -> None:
    c = live.client("acme", "admin")
    for path in ("/v1/enforce", "/v1/events/batch", "/v1/explain", "/v1/approvals/x/resolve"):
        r = c.post(path, content=b'{"agent_id": "a",', headers={"Content-Type": "application/json"})
        assert r.status_code == 400, path
        assert r.json()["error"] == "malformed_json" and "not valid JSON" in r.json()["message"]
    empty = c.post("/v1/enforce", content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["message"]
    assert c.get("/v1/events").json()["items"] == []
    assert c.get("/v1/violations").json()["items"] == []


def test_request_id_dedupes_retries(live: Any, body: Any) -> None:
    c = live.client("acme", "agent")
    request = body(tool_name="transfer", tool_args={"to": "bob", "amount": 500}, request_id=str(uuid.uuid4()))
    first = c.post("/v1/enforce", json=request).json()
    again = c.post("/v1/enforce", json=request).json()
    assert first["hold_token"] == again["hold_token"]
    admin = live.client("acme", "admin")
    assert len(admin.get("/v1/approvals").json()["items"]) == 1
    assert len(admin.get("/v1/violations").json()["items"]) == 1


def test_unknown_hold_is_404(live: Any) -> None:
    c = live.client("acme", "agent")
    r = c.get("/v1/enforce/hold/hold_does_not_exist")
    assert r.status_code == 404 and r.json()["error"] == "unknown_hold"
    assert c.get("/v1/enforce/hold/x", params={"wait": "soon"}).status_code == 422


def test_long_poll_answers_within_250ms_of_an_approval(live: Any, body: Any) -> None:
    agent = live.client("acme", "agent")
    reviewer = live.client("acme", "reviewer")
    held = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"amount": 900})).json()
    token = held["hold_token"]

    started = time.monotonic()
    quiet = agent.get(f"/v1/enforce/hold/{token}", params={"wait": "0.3"}).json()
    assert quiet["resolved"] is False and quiet["decision"] == "STEP_UP"
    assert 0.28 <= time.monotonic() - started < 1.5  # waited, then answered pending

    approved_at: list[float] = []

    def approve() -> None:
        time.sleep(0.3)
        approved_at.append(time.monotonic())
        r = reviewer.post(
            f"/v1/approvals/{held['hold_token']}/resolve", json={"decision": "approve", "reviewer": "ann"}
        )
        assert r.status_code == 200

    thread = threading.Thread(target=approve)
    thread.start()
    reply = agent.get(f"/v1/enforce/hold/{token}", params={"wait": "10"}).json()
    answered = time.monotonic()
    thread.join()
    assert reply["resolved"] is True
    assert reply["decision"] == reply["resolution"] == "ALLOW"
    lag = answered - approved_at[0]
    assert lag < 0.25, f"long-poll answered {lag * 1000:.0f} ms after the approval"


def test_long_poll_sees_resolution_by_another_process(live: Any, body: Any) -> None:
    """A CLI approving straight in the SQLite file (no HTTP) still wakes the long-poll quickly."""
    agent = live.client("acme", "agent")
    held = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"amount": 901})).json()
    other = SQLiteStore(live.server.db)

    def deny() -> None:
        time.sleep(0.2)
        other.resolve_hold(held["hold_token"], status="denied", reviewer="cli", note="no")

    thread = threading.Thread(target=deny)
    thread.start()
    started = time.monotonic()
    reply = agent.get(f"/v1/enforce/hold/{held['hold_token']}", params={"wait": "10"}).json()
    thread.join()
    other.close()
    assert reply["resolved"] is True and reply["decision"] == "BLOCK"
    assert reply["decision_reason_code"] == "step_up_denied" and "no" in reply["reason"]
    assert time.monotonic() - started < 1.0


def _event(tenant: str = "acme", **over: Any) -> dict[str, Any]:
    event = {
        "event_id": f"{tenant}:{uuid.uuid4()}",
        "tenant_id": tenant,
        "session_id": "sess-e",
        "user_id": "u1",
        "agent_id": "agent-1",
        "tool_name": "lookup",
        "event_type": "TOOL_CALL_PRE",
        "source_type": "agent_tool_call",
        "content": "tool invocation requested",
        "metadata": {},
        "occurred_at": "2026-06-21T20:52:13.123456Z",
    }
    event.update(over)
    return event


def test_event_batch_both_shapes_camel_case_and_idempotency(live: Any) -> None:
    agent = live.client("acme", "agent")
    reader = live.client("acme", "reviewer")
    first = [_event() for _ in range(3)]
    r = agent.post("/v1/events/batch", json=first)  # bare array (py)
    assert r.status_code == 202 and r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

    bare = str(uuid.uuid4())
    camel = {
        "eventId": bare,
        "tenantId": "acme",
        "sessionId": "sess-e",
        "userId": "u1",
        "agentId": "agent-1",
        "toolName": "lookup",
        "eventType": "TOOL_CALL_POST",
        "sourceType": "agent_tool_call",
        "occurredAt": "2026-06-21T20:52:14Z",
        "metadata": {"sdkLanguage": "typescript"},
    }
    r = agent.post("/v1/events/batch", json={"events": [camel, *first[:2]]})  # object form (ts/go) + replay
    assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 2, "rejected": []}

    items = reader.get("/v1/events", params={"session_id": "sess-e"}).json()["items"]
    assert len(items) == 4
    mapped = [e for e in items if e["event_id"] == f"acme:{bare}"]
    assert mapped and mapped[0]["event_type"] == "TOOL_CALL_POST" and mapped[0]["tool_name"] == "lookup"
    assert mapped[0]["occurred_at"] == "2026-06-21T20:52:14.000000Z"
    assert all(e["ingested_at"] for e in items)
    chain = [e["chain_index"] for e in items]
    assert chain == sorted(chain) == list(range(4))


def test_event_batch_rejects_per_event_and_limits(live_factory: Any) -> None:
    from thoth_nb.server import ServerSettings

    live = live_factory(ServerSettings(max_body_bytes=64 * 1024))
    agent = live.client("acme", "agent")
    batch = [
        _event(),
        "nope",
        _event(event_id=None),
        _event(occurred_at="yesterday"),
        _event(event_id="globex:" + str(uuid.uuid4())),
        _event(session_id=""),
    ]
    r = agent.post("/v1/events/batch", json=batch)
    assert r.status_code == 202
    out = r.json()
    assert out["accepted"] == 1 and out["duplicates"] == 0
    assert [x["index"] for x in out["rejected"]] == [1, 2, 3, 4, 5]

    too_many = agent.post("/v1/events/batch", json=[{"event_id": str(i)} for i in range(501)])
    assert too_many.status_code == 413 and "500" in too_many.json()["message"]
    too_big = agent.post("/v1/events/batch", json=[_event(content="x" * 70_000)])
    assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
    assert agent.post("/v1/events/batch", json={"events": "x"}).status_code == 422
    assert agent.post("/v1/events/batch", json=7).status_code == 422
    count = live.client("acme", "reviewer").get("/v1/events").json()["items"]
    assert len(count) == 1  # nothing from the rejected requests was stored


def test_events_query_filters_and_cursor_pages(live: Any) -> None:
    agent = live.client("acme", "agent")
    events = [
        _event(
            session_id=f"s{i % 2}", tool_name="a" if i < 5 else "b", occurred_at=f"2026-06-21T20:00:{i:02d}Z"
        )
        for i in range(12)
    ]
    assert agent.post("/v1/events/batch", json={"events": events}).json()["accepted"] == 12
    reader = live.client("acme", "reviewer")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = reader.get("/v1/events", params=params).json()
        seen += [e["event_id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == [e["event_id"] for e in events]
    assert len(reader.get("/v1/events", params={"session_id": "s1"}).json()["items"]) == 6
    assert len(reader.get("/v1/events", params={"tool_name": "b", "session_id": "s0"}).json()["items"]) == 3
    window = reader.get(
        "/v1/events", params={"since": "2026-06-21T20:00:03Z", "until": "2026-06-21T20:00:06Z"}
    )
    assert [e["occurred_at"][17:19] for e in window.json()["items"]] == ["03", "04", "05"]
    assert reader.get("/v1/events", params={"since": "last tuesday"}).status_code == 422
    assert reader.get("/v1/events", params={"cursor": "garbage!"}).status_code == 422
    assert reader.get("/v1/events", params={"limit": "0"}).status_code == 422
    assert len(reader.get("/v1/events", params={"limit": "100000"}).json()["items"]) == 12  # capped at 500


def test_explain_and_inventory(live: Any, body: Any) -> None:
    agent = live.client("acme", "agent")
    blocked = agent.post("/v1/enforce", json=body(tool_name="drop_table", tool_args={"name": "t"})).json()
    explain_body = {
        **body(tool_name="drop_table"),
        "decision": "BLOCK",
        "violation_id": blocked["violation_id"],
    }
    human = agent.post("/v1/explain", json=explain_body)
    assert human.status_code == 200
    data = human.json()
    for key in (
        "violation_id",
        "what_happened",
        "why_it_was_blocked",
        "what_to_do_next",
        "business_impact",
        "severity",
    ):
        assert data[key]
    assert "dropping tables is forbidden" in data["why_it_was_blocked"]
    assert agent.post("/v1/explain", json={**explain_body, "violation_id": "vio_nope"}).status_code == 404
    assert agent.post("/v1/explain", json=body()).status_code == 422

    tools = [
        {"name": "lookup", "description": "find", "input_schema": {"type": "object"}},
        {"name": "transfer", "description": "money", "input_schema": {}},
    ]
    r = agent.post(
        "/acme/thoth/tool-inventory", json={"agent_id": "agent-1", "source": "python_sdk", "tools": tools}
    )
    assert r.status_code == 202 and r.json() == {"accepted": 2}
    listed = live.client("acme", "reviewer").get("/v1/inventory").json()["items"]
    assert {t["tool_name"] for t in listed} == {"lookup", "transfer"}
    bad = agent.post("/acme/thoth/tool-inventory", json={"agent_id": "a", "tools": [{"description": "x"}]})
    assert bad.status_code == 422 and bad.json()["field"] == "tools[0].name"


def test_health_readiness_and_openapi(live: Any) -> None:
    anon = live.client(None)
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz").json()
    assert ready["status"] == "ok" and ready["long_poll"] is True
    schema = anon.get("/openapi.json").json()
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(schema)
    for path in (
        "/v1/enforce",
        "/v1/enforce/hold/{hold_token}",
        "/v1/events/batch",
        "/v1/explain",
        "/{tenant_id}/thoth/tool-inventory",
        "/v1/events",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/violations",
        "/v1/approvals",
        "/v1/approvals/{approval_id}/resolve",
        "/v1/policies",
    ):
        assert path in schema["paths"], path
    assert {"bearer", "apiKey"} <= set(schema["components"]["securitySchemes"])
    enforce = schema["paths"]["/v1/enforce"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "tenant_id" in enforce["required"]


def test_unknown_route_and_method_answer_json_errors(live: Any) -> None:
    c = live.client("acme", "admin")
    r = c.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = c.delete("/v1/enforce")
    assert r.status_code == 405 and "message" in r.json()


def test_http_transport_error_message_reads_our_errors(live: Any) -> None:
    """The SDK logs the `message` of our error bodies (PROTOCOL §7)."""
    from thoth_nb._transports.http import error_message

    r = httpx.post(
        f"{live.url}/v1/enforce", json={}, headers={"x-api-key": live.key("acme", "agent")}, trust_env=False
    )
    assert error_message(r) == "agent_id: field required"


def test_fast_wire_body_equals_the_engines_wire_response() -> None:
    from thoth_nb._models import DecisionType, EnforcementDecision
    from thoth_nb.engine.decide import wire_response
    from thoth_nb.server.app import wire_body

    samples = [
        EnforcementDecision(DecisionType.ALLOW, "allowed", "allowed", "read", 0.0),
        EnforcementDecision(DecisionType.BLOCK, "no", "forbidden_action_static_policy", "policy", 95.0, "vio_1",
                            matched_rule_ids=["r1", "r2"], raw={"approval_id": "x"}),
        EnforcementDecision(DecisionType.STEP_UP, "", "", "", 75.0, "vio_2", "hold_x", 900.0),
        EnforcementDecision(DecisionType.MODIFY, "redacted", "minimum_necessary_transform", "policy", 40.0,
                            modified_tool_args={"q": "x", "n": [1, {"a": None}]}, modification_reason="pii"),
        EnforcementDecision(DecisionType.ALLOW, "observe", "observe_mode", "policy", 50.0, "vio_3",
                            observed_decision=DecisionType.BLOCK, defer_timeout_seconds=0.0),
    ]
    for decision in samples:
        assert wire_body(decision) == wire_response(decision)


def test_concurrent_clients_get_no_server_errors_and_lose_nothing(live: Any, body: Any) -> None:
    """Inline decisions on the event loop and threadpool ingest/resolve share one store: hammer both."""
    import concurrent.futures

    per_thread, threads = 16, 4
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> tuple[int, int, int]:
        agent = httpx.Client(base_url=live.url, headers={"x-api-key": live.key("acme", "agent")}, trust_env=False)
        reviewer = httpx.Client(base_url=live.url, headers={"x-api-key": live.key("acme", "reviewer")},
                                trust_env=False)
        blocked = held = sent = 0
        try:
            for i in range(per_thread):
                kind = i % 4
                if kind == 0:
                    r = agent.post("/v1/enforce", json=body(session_id=f"c{n}"))
                elif kind == 1:
                    r = agent.post("/v1/enforce", json=body(tool_name="drop_table", session_id=f"c{n}"))
                    blocked += 1
                elif kind == 2:
                    r = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"amount": 1000 + i},
                                                            session_id=f"c{n}"))
                    held += 1
                    token = r.json()["hold_token"]
                    resolved = reviewer.post(f"/v1/approvals/{token}/resolve", json={"decision": "approve"})
                    with lock:
                        statuses.append(resolved.status_code)
                else:
                    r = agent.post("/v1/events/batch", json=[_event(session_id=f"c{n}") for _ in range(10)])
                    sent += 10
                with lock:
                    statuses.append(r.status_code)
        finally:
            agent.close()
            reviewer.close()
        return blocked, held, sent

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(worker, range(threads)))
    assert statuses and all(s in (200, 202) for s in statuses), sorted(set(statuses))
    blocked = sum(r[0] for r in results)
    held = sum(r[1] for r in results)
    sent = sum(r[2] for r in results)
    reader = live.client("acme", "reviewer")
    violations = reader.get("/v1/violations", params={"limit": 500}).json()["items"]
    assert len(violations) == blocked + held
    approved = reader.get("/v1/approvals", params={"status": "approved", "limit": 500}).json()["items"]
    assert len(approved) == held
    stored = reader.get("/v1/events", params={"limit": 500}).json()["items"]
    assert len(stored) == sent
