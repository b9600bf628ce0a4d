"""The HTTP transport against a scripted enforcer (httpx.MockTransport): every §7 outcome."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._transports.http import HTTPTransport
from thoth_nb.testing import ScriptedEnforcer

URL = "http://enforcer.test"
ran: list[Any] = []


def tool(path: str) -> str:
    ran.append(path)
    return "ok"


async def atool(path: str) -> str:
    ran.append(path)
    return "ok"


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def governed(enforcer: ScriptedEnforcer, fn: Any = tool, **extra: Any) -> Any:
    mock = enforcer.transport()
    transport = HTTPTransport(URL, api_key="k1", transport=mock, async_transport=mock,
                              event_ingest_token=extra.get("event_ingest_token"))
    config = {"agent_id": "a", "tenant_id": "t", "approved_scope": ["tool", "atool"], "api_url": URL,
              "step_up_poll_interval_ms": 10, "step_up_timeout_minutes": 0.02, **extra}
    return thoth_nb.governed(transport=transport, **config)(fn)


def test_allow_sends_protocol_body_and_headers() -> None:
    enforcer = ScriptedEnforcer({"decision": "ALLOW"})
    assert governed(enforcer, user_id="alice", purpose="audit")("/x") == "ok"
    request = enforcer.requests[0]
    assert request.headers["authorization"] == "Bearer k1" and request.headers["x-api-key"] == "k1"
    assert request.headers["user-agent"].startswith("thoth-nb/")
    body = enforcer.enforce_bodies[0]
    for field in ("agent_id", "tenant_id", "user_id", "tool_name", "session_id", "session_tool_calls",
                  "approved_scope", "enforcement_mode", "environment", "enforcement_trace_id"):
        assert field in body, field
    assert body["tool_args"] == {"path": "/x"} and body["session_tool_calls"] == ["tool"]
    assert body["user_id"] == "alice" and body["purpose"] == "audit" and body["enforcement_trace_id"] == body[
        "session_id"]
    thoth_nb.flush()
    assert [e["event_type"] for e in enforcer.events] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    assert enforcer.events[0]["event_id"].startswith("t:")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"decision": "BLOCK"}, "blocked by Thoth policy"),
        ({"decision": "DENY", "reason": "nope"}, "nope"),
        ({"decision": "SOMETHING"}, "unsupported authorization decision"),
        ({"reason": "no decision"}, "unsupported authorization decision"),
        ({"decision": "STEP_UP"}, "without a hold token"),
        ({"decision": "DEFER", "defer_timeout_seconds": 30}, "deferred pending additional context (retry in 30s)"),
    ],
)
def test_decisions_that_stop_the_tool(answer: dict[str, Any], reason: str) -> None:
    with pytest.raises(ThothPolicyViolation, match=reason.replace("(", r"\(").replace(")", r"\)")):
        governed(ScriptedEnforcer(answer))("/x")
    assert ran == []


def _raise(exc: Exception) -> Any:
    def responder(body: dict[str, Any]) -> Any:
        raise exc

    return responder


@pytest.mark.parametrize(
    ("responder", "fail_open_runs", "message"),
    [
        (lambda b: httpx.Response(500, json={"message": "boom"}), True, "status=500"),
        (lambda b: httpx.Response(503), True, "status=503"),
        (lambda b: httpx.Response(429), True, "status=429"),
        (lambda b: httpx.Response(200, content=b"{not json"), True, "not JSON"),
        (_raise(httpx.ConnectError("refused")), True, "enforcer unavailable"),
        (_raise(httpx.ReadTimeout("slow")), True, "timed out"),
        (lambda b: httpx.Response(401, json={"error": "bad key"}), False, "status=401.*bad key.*THOTH_API_KEY"),
        (lambda b: httpx.Response(403), False, "status=403"),
        (lambda b: httpx.Response(422, json={"detail": "missing"}), False, "status=422"),
    ],
)
def test_failures_fail_closed_and_fail_open_only_when_retryable(
    responder: Any, fail_open_runs: bool, message: str
) -> None:
    with pytest.raises(ThothPolicyViolation, match=message):
        governed(ScriptedEnforcer(responder))("/x")
    assert ran == []
    fn = governed(ScriptedEnforcer(responder), fail_open=True)
    if fail_open_runs:
        assert fn("/y") == "ok" and ran == ["/y"]
    else:
        with pytest.raises(ThothPolicyViolation):
            fn("/y")
        assert ran == []


def test_observe_mode_ignores_errors() -> None:
    fn = governed(ScriptedEnforcer(lambda b: httpx.Response(401)), enforcement="observe")
    assert fn("/x") == "ok"


def step_up(token: str = "h1") -> dict[str, Any]:
    return {"decision": "STEP_UP", "hold_token": token, "violation_id": "v1", "decision_reason_code":
            "step_up_high_risk", "risk_score": 80}


def test_step_up_approved_after_polling() -> None:
    enforcer = ScriptedEnforcer(step_up())
    enforcer.holds["h1"] = [
        {"resolved": False, "decision": "STEP_UP"},
        httpx.Response(500),
        {"resolved": True, "resolution": "ALLOW", "decision": "ALLOW"},
    ]
    assert governed(enforcer)("/x") == "ok"
    polls = [r for r in enforcer.requests if r.url.path.startswith("/v1/enforce/hold/")]
    assert len(polls) == 3


def test_step_up_denied_keeps_violation_id() -> None:
    enforcer = ScriptedEnforcer(step_up())
    enforcer.holds["h1"] = {"resolved": True, "resolution": "BLOCK", "decision": "BLOCK", "reason": "no"}
    with pytest.raises(ThothPolicyViolation) as info:
        governed(enforcer)("/x")
    assert info.value.violation_id == "v1" and info.value.reason == "no" and ran == []


def test_step_up_timeout_blocks() -> None:
    enforcer = ScriptedEnforcer(step_up())
    enforcer.holds["h1"] = {"resolved": False, "decision": "STEP_UP"}
    with pytest.raises(ThothPolicyViolation, match="step-up approval timed out"):
        governed(enforcer, step_up_timeout_minutes=0.005)("/x")
    assert ran == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_long_poll_answered_at_once_does_not_spin(kind: str) -> None:
    # a server (or a proxy in front of it) that advertises long-polls but answers every poll at once
    enforcer = ScriptedEnforcer(step_up())
    enforcer.long_poll = True
    enforcer.holds["h1"] = {"resolved": False, "decision": "STEP_UP"}
    options = {"step_up_poll_interval_ms": 50, "step_up_timeout_minutes": 0.5 / 60}
    with pytest.raises(ThothPolicyViolation, match="step-up approval timed out"):
        if kind == "sync":
            governed(enforcer, **options)("/x")
        else:
            asyncio.run(governed(enforcer, atool, **options)("/x"))
    polls = [r for r in enforcer.requests if r.url.path.startswith("/v1/enforce/hold/")]
    assert polls and polls[0].url.params.get("wait")  # it did ask the server to wait
    assert len(polls) <= 0.5 / 0.05 + 2, len(polls)  # at most one poll per interval


def test_hold_404_blocks() -> None:
    with pytest.raises(ThothPolicyViolation, match="status=404"):
        governed(ScriptedEnforcer(step_up("gone")))("/x")


def test_hold_token_is_percent_encoded() -> None:
    enforcer = ScriptedEnforcer(step_up("a/b c"))
    enforcer.holds["a/b c"] = {"resolved": True, "decision": "ALLOW", "resolution": "ALLOW"}
    assert governed(enforcer)("/x") == "ok"
    poll = next(r for r in enforcer.requests if "/hold/" in r.url.path)
    assert poll.url.raw_path.endswith(b"/v1/enforce/hold/a%2Fb%20c")


def test_modify_applies_new_args() -> None:
    enforcer = ScriptedEnforcer({"decision": "MODIFY", "modified_tool_args": {"path": "/redacted"}})
    assert governed(enforcer)("/secret") == "ok"
    assert ran == ["/redacted"]


async def test_async_driver_same_outcomes() -> None:
    enforcer = ScriptedEnforcer(step_up())
    enforcer.holds["h1"] = [{"resolved": False}, {"resolved": True, "resolution": "ALLOW", "decision": "ALLOW"}]
    assert await governed(enforcer, atool)("/x") == "ok"
    with pytest.raises(ThothPolicyViolation, match="status=500"):
        await governed(ScriptedEnforcer(lambda b: httpx.Response(500)), atool)("/y")
    assert ran == ["/x"]


def test_events_use_object_form_and_ingest_token() -> None:
    enforcer = ScriptedEnforcer()
    governed(enforcer, event_ingest_token="ing")("/x")
    thoth_nb.flush()
    batch = next(r for r in enforcer.requests if r.url.path == "/v1/events/batch")
    assert batch.headers["x-thoth-event-ingest-token"] == "ing"
    assert isinstance(json.loads(batch.content), dict)
