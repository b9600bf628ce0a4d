from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from thoth_nb._models import DecisionType
from thoth_nb.engine import Engine, HoldConflict, SQLiteStore, parse_policy
from thoth_nb.engine.decide import RequestError

POLICY = """
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: shadow, tool: read_file, when: {path: {regex: "shadow"}}, decision: block, severity: critical, hard: true}
  - {id: big, tool: pay, when: {amount: {gt: 100}}, decision: step_up}
  - {id: seq, tool: send_email, after: [{tool: read_file, when: {path: {contains: secrets}}}], decision: block}
rate_limits:
  - {id: burst, tool: search, max_calls: 3, per_seconds: 60, decision: block}
"""


@pytest.fixture
def engine(tmp_path: Any) -> Engine:
    return Engine(SQLiteStore(tmp_path / "t.db"), parse_policy(POLICY))


def request(tool: str, args: dict[str, Any] | None = None, mode: str = "block", session: str | None = None,
            scope: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": "a", "tenant_id": "t", "user_id": "u", "tool_name": tool,
        "session_id": session or str(uuid.uuid4()), "approved_scope": scope or ["read_file", "pay", "search",
                                                                                 "send_email"],
        "enforcement_mode": mode, "session_tool_calls": [tool],
    }
    if args is not None:
        body["tool_args"] = args
    return body


def test_allow_touches_no_storage(engine: Engine) -> None:
    d = engine.decide(request("read_file", {"path": "/home/x"}))
    assert d.decision is DecisionType.ALLOW and d.violation_id is None
    assert engine.store.violations("t") == []


def test_scope_violation(engine: Engine) -> None:
    d = engine.decide(request("rm", {}))
    assert d.decision is DecisionType.BLOCK and d.decision_reason_code == "policy_scope_violation"
    assert d.matched_rule_ids == ["approved_scope"] and d.violation_id
    [row] = engine.store.violations("t")
    assert row["violation_id"] == d.violation_id and row["tool_name"] == "rm"


@pytest.mark.parametrize(
    ("mode", "tool", "args", "expected"),
    [
        ("block", "read_file", {"path": "/etc/passwd"}, DecisionType.BLOCK),
        ("block", "pay", {"amount": 500}, DecisionType.BLOCK),
        ("step_up", "read_file", {"path": "/etc/passwd"}, DecisionType.STEP_UP),
        ("step_up", "read_file", {"path": "/etc/shadow"}, DecisionType.BLOCK),
        ("step_up", "pay", {"amount": 500}, DecisionType.STEP_UP),
        ("observe", "read_file", {"path": "/etc/shadow"}, DecisionType.ALLOW),
        ("progressive", "read_file", {"path": "/etc/shadow"}, DecisionType.BLOCK),
        ("progressive", "pay", {"amount": 500}, DecisionType.STEP_UP),
    ],
)
def test_mode_table(engine: Engine, mode: str, tool: str, args: dict[str, Any], expected: DecisionType) -> None:
    d = engine.decide(request(tool, args, mode))
    assert d.decision is expected
    if expected is DecisionType.STEP_UP:
        assert d.hold_token and d.step_up_timeout_seconds


def test_observe_records_what_would_have_happened(engine: Engine) -> None:
    d = engine.decide(request("read_file", {"path": "/etc/shadow"}, "observe"))
    assert d.observed_decision is DecisionType.BLOCK and d.decision_reason_code == "observe_mode"
    [row] = engine.store.violations("t")
    assert row["observed"] and row["decision"] == "BLOCK"


def test_progressive_steps_up_first_then_blocks(engine: Engine) -> None:
    sid = str(uuid.uuid4())
    first = engine.decide(request("read_file", {"path": "/etc/a"}, "progressive", sid))
    second = engine.decide(request("read_file", {"path": "/etc/b"}, "progressive", sid))
    assert first.decision is DecisionType.STEP_UP and second.decision is DecisionType.BLOCK


def test_rate_limit_per_session(engine: Engine) -> None:
    sid = str(uuid.uuid4())
    decisions = [engine.decide(request("search", {"q": str(i)}, session=sid)).decision for i in range(5)]
    assert decisions == [DecisionType.ALLOW] * 3 + [DecisionType.BLOCK] * 2
    assert engine.decide(request("search", {"q": "x"})).decision is DecisionType.ALLOW  # another session


def test_rate_limit_window_slides(tmp_path: Any) -> None:
    now = [0.0]
    engine = Engine(SQLiteStore(tmp_path / "r.db"), parse_policy(POLICY), clock=lambda: now[0])
    sid = "s"
    for _ in range(3):
        assert engine.decide(request("search", {}, session=sid)).decision is DecisionType.ALLOW
    assert engine.decide(request("search", {}, session=sid)).decision is DecisionType.BLOCK
    now[0] = 61.0
    assert engine.decide(request("search", {}, session=sid)).decision is DecisionType.ALLOW


def test_sequence_rule(engine: Engine) -> None:
    sid = str(uuid.uuid4())
    assert engine.decide(request("send_email", {"to": "x"}, session=sid)).decision is DecisionType.ALLOW
    engine.decide(request("read_file", {"path": "/home/secrets/key"}, session=sid))
    blocked = engine.decide(request("send_email", {"to": "x"}, session=sid))
    assert blocked.decision is DecisionType.BLOCK and blocked.matched_rule_ids == ["seq"]


def test_hold_approve_deny_and_binding(engine: Engine) -> None:
    sid = str(uuid.uuid4())
    held = engine.decide(request("pay", {"amount": 500}, "step_up", sid))
    assert held.hold_token
    assert engine.hold_status(held.hold_token)["decision"] == "STEP_UP"
    record = engine.resolve(held.hold_token, approve=True, reviewer="rev")
    assert record["status"] == "approved" and record["reviewer"] == "rev"
    reply = engine.hold_status(held.hold_token)
    assert reply["resolved"] and reply["decision"] == "ALLOW" == reply["resolution"]
    with pytest.raises(HoldConflict):
        engine.resolve(held.hold_token, approve=False)
    # an approval once never releases another call, even with identical arguments
    again = engine.decide(request("pay", {"amount": 500}, "step_up", sid))
    assert again.decision is DecisionType.STEP_UP and again.hold_token != held.hold_token


def test_session_grant_bound_to_arguments(engine: Engine) -> None:
    sid = str(uuid.uuid4())
    held = engine.decide(request("pay", {"amount": 500}, "step_up", sid))
    assert held.hold_token
    engine.resolve(held.hold_token, approve=True, reviewer="rev", scope="session")
    same = engine.decide(request("pay", {"amount": 500}, "step_up", sid))
    other = engine.decide(request("pay", {"amount": 501}, "step_up", sid))
    elsewhere = engine.decide(request("pay", {"amount": 500}, "step_up"))
    assert same.decision is DecisionType.ALLOW and same.decision_reason_code == "step_up_granted"
    assert other.decision is DecisionType.STEP_UP
    assert elsewhere.decision is DecisionType.STEP_UP


def test_hold_expiry_means_block(engine: Engine) -> None:
    body = request("pay", {"amount": 500}, "step_up")
    body["step_up_timeout_seconds"] = 0.2
    held = engine.decide(body)
    assert held.hold_token
    time.sleep(0.3)
    reply = engine.hold_status(held.hold_token)
    assert reply["decision"] == "BLOCK" and reply["decision_reason_code"] == "step_up_timeout"
    with pytest.raises(HoldConflict):
        engine.resolve(held.hold_token, approve=True)


def test_wait_hold_wakes_on_resolution(engine: Engine) -> None:
    held = engine.decide(request("pay", {"amount": 500}, "step_up"))
    assert held.hold_token
    token = held.hold_token
    threading.Timer(0.2, lambda: engine.resolve(token, approve=True, reviewer="r")).start()
    started = time.monotonic()
    reply = engine.wait_hold(token, 5.0)
    assert reply["resolved"] and time.monotonic() - started < 1.0


def test_wait_hold_sees_other_process_writes(engine: Engine, tmp_path: Any) -> None:
    held = engine.decide(request("pay", {"amount": 500}, "step_up"))
    assert held.hold_token
    other = SQLiteStore(engine.store.path)  # a second connection stands in for another process
    threading.Timer(0.2, lambda: other.resolve_hold(held.hold_token or "", status="denied", reviewer="cli")).start()
    started = time.monotonic()
    reply = engine.wait_hold(held.hold_token, 5.0)
    assert reply["decision"] == "BLOCK" and time.monotonic() - started < 1.0


def test_modified_args_resolution(engine: Engine) -> None:
    held = engine.decide(request("pay", {"amount": 500}, "step_up"))
    assert held.hold_token
    engine.resolve(held.hold_token, approve=True, modified_args={"amount": 100})
    reply = engine.hold_status(held.hold_token)
    assert reply["decision"] == "MODIFY" and reply["modified_tool_args"] == {"amount": 100}


def test_validate_names_the_field(engine: Engine) -> None:
    body = request("x")
    del body["session_id"]
    with pytest.raises(RequestError, match="session_id"):
        engine.validate(body)
    with pytest.raises(RequestError, match="enforcement_mode"):
        engine.validate({**request("x"), "enforcement_mode": "loud"})


def test_explain_names_the_rule(engine: Engine) -> None:
    d = engine.decide(request("read_file", {"path": "/etc/passwd"}))
    assert d.violation_id
    explanation = engine.explain("t", d.violation_id)
    assert "etc" in explanation["why_it_was_blocked"] and explanation["conditions"][0]["rule_id"] == "etc"
    with pytest.raises(LookupError):
        engine.explain("other-tenant", d.violation_id)


def test_request_id_dedupe(engine: Engine) -> None:
    body = request("pay", {"amount": 500}, "step_up")
    body["request_id"] = "r1"
    first = engine.decide(body, dedupe=True)
    second = engine.decide(body, dedupe=True)
    assert first.hold_token == second.hold_token
    assert len(engine.store.holds("t")) == 1
