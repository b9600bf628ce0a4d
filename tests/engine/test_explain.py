"""What would have made a call pass (thoth_nb.engine.explain), through Engine.explain (PROTOCOL §6)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from thoth_nb._models import DecisionType
from thoth_nb.engine import Engine, SQLiteStore, parse_policy
from thoth_nb.engine.explain import condition_counterfactual, next_allowed_at
from thoth_nb.engine.policy import RateLimit
from thoth_nb.engine.store import format_ts

POLICY = """
rules:
  - {id: no-secrets, tool: read_file, when: {path: {glob: "secrets/**"}}, decision: block, severity: high}
  - {id: big-payment, tool: pay, when: {amount: {gt: 100}, currency: {in: [USD, EUR]}}, decision: step_up}
  - id: exfil
    tool: send_email
    when: {to: {regex: "@(?!example\\\\.com)"}}
    after: [{tool: read_file, when: {path: {glob: "secrets/**"}}}]
    decision: block
  - {id: always-ask, tool: wire, decision: step_up}
  - {id: prod-db, tool: query, any: [{db: prod}, {sql: {contains: DROP}}], decision: block}
rate_limits:
  - {id: search-burst, tool: search, max_calls: 3, per_seconds: 60, decision: block}
agents:
  a: {approved_scope: [read_file, pay, search, send_email, wire, query]}
"""

SCOPE = ["read_file", "pay", "search", "send_email", "wire", "query", "shell"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Any, clock: Clock) -> Engine:
    return Engine(SQLiteStore(tmp_path / "t.db"), parse_policy(POLICY), clock=clock)


def decide(engine: Engine, tool: str, args: dict[str, Any] | None = None, *, session: str | None = None,
           scope: list[str] | None = None, mode: str = "block") -> Any:
    body: dict[str, Any] = {"agent_id": "a", "tenant_id": "t", "user_id": "u", "tool_name": tool,
                            "session_id": session or uuid.uuid4().hex, "approved_scope": scope or SCOPE,
                            "enforcement_mode": mode}
    if args is not None:
        body["tool_args"] = args
    return engine.decide(body)


def explain(engine: Engine, decision: Any) -> dict[str, Any]:
    assert decision.violation_id, decision
    return engine.explain("t", decision.violation_id)


def test_glob_rule_names_the_condition_and_the_alternative(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "read_file", {"path": "secrets/prod.env"}))
    assert answer["decided_by"] == {"kind": "rule", "rule_id": "no-secrets", "decision": "BLOCK",
                                    "condition": "path glob 'secrets/**'"}
    [failed] = answer["failed_conditions"]
    assert (failed["field"], failed["op"], failed["actual"]) == ("path", "glob", "secrets/prod.env")
    assert "`path` ('secrets/prod.env') matched glob 'secrets/**'; a `path` outside it would pass" in failed["text"]
    assert "a `path` outside it would pass" in answer["what_would_pass"]
    assert answer["what_to_do_next"].startswith("What would pass: rule no-secrets")
    # the §6 fields are still there
    assert answer["severity"] == "high" and answer["why_it_was_blocked"]


def test_every_condition_of_a_rule_is_an_alternative(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "pay", {"amount": 500, "currency": "USD"}))
    [part] = answer["would_pass"]
    assert part["alternatives"] == ["`amount` ≤ 100 would pass", "a value outside that list would pass"]
    assert {c["field"] for c in answer["failed_conditions"]} == {"amount", "currency"}


def test_any_groups_report_only_the_group_that_matched(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "query", {"db": "prod", "sql": "select 1"}))
    assert [c["field"] for c in answer["failed_conditions"]] == ["db"]
    assert answer["would_pass"][0]["alternatives"] == ["any other value would pass"]


def test_sequence_rule_says_the_earlier_call(engine: Engine) -> None:
    session = "s-exfil"
    assert decide(engine, "read_file", {"path": "secrets/key"}, session=session).decision is DecisionType.BLOCK
    # a blocked call never ran and does not count as earlier: let the read through, then send
    engine.set_policy(parse_policy(POLICY.replace("decision: block, severity: high", "decision: allow")))
    assert decide(engine, "read_file", {"path": "secrets/key"}, session=session).decision is DecisionType.ALLOW
    answer = explain(engine, decide(engine, "send_email", {"to": "x@evil.test"}, session=session))
    texts = [c["text"] for c in answer["failed_conditions"]]
    assert any("came after `read_file` with path glob 'secrets/**' in session s-exfil" in t for t in texts)
    assert "a session without an earlier `read_file`" in answer["what_would_pass"]


def test_scope_violation_lists_the_scope(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "shell", {"cmd": "ls"}, scope=["read_file", "search"]))
    assert answer["decided_by"]["kind"] == "approved_scope"
    assert answer["decided_by"]["condition"] == "tool not in approved scope [read_file, search]"
    assert "adding it to the agent's approved_scope" in answer["what_would_pass"]


def test_scope_of_the_policy_agent_entry(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "shell", {"cmd": "ls"}))  # in the request's scope, not the policy's
    assert "agents.a.approved_scope" in answer["what_would_pass"]
    assert "[read_file, pay, search, send_email, wire, query]" in answer["what_would_pass"]


def test_rule_without_conditions_says_only_a_policy_change_helps(engine: Engine) -> None:
    answer = explain(engine, decide(engine, "wire", {"to": "x"}))
    assert "has no conditions" in answer["what_would_pass"]


def test_rate_limit_gives_the_time_the_next_call_is_allowed(engine: Engine, clock: Clock) -> None:
    session = "s-rate"
    for step in range(3):
        clock.now = 1000.0 + step * 10  # calls at 0 s, 10 s, 20 s
        assert decide(engine, "search", {"q": "x"}, session=session).decision is DecisionType.ALLOW
    clock.now = 1030.0
    blocked = decide(engine, "search", {"q": "x"}, session=session)
    assert blocked.decision is DecisionType.BLOCK
    answer = explain(engine, blocked)
    [part] = answer["would_pass"]
    # the window holds 1000, 1010, 1020, 1030: the 3rd newest is 1010, so a call passes from
    # 1010 + 60 = 1070, i.e. 40 s after "now"
    retry = dt.datetime.fromisoformat(part["retry_at"])
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40)
    assert abs((retry - expected).total_seconds()) < 5
    assert "rate limit search-burst (3 calls per 60s) reached; the next call is allowed after" in part["text"]
    # and it is right: at 1069 still blocked, at 1070 allowed
    clock.now = 1069.0
    assert decide(engine, "search", {"q": "x"}, session=session).decision is DecisionType.BLOCK
    clock.now = 1070.0 + 60  # the 1069 call counted too; after it ages out the window has room
    assert decide(engine, "search", {"q": "x"}, session=session).decision is DecisionType.ALLOW


def test_rate_limit_offline_from_recorded_events(tmp_path: Any) -> None:
    """A fresh engine (dashboard, another process) reads the call times from the session's events."""
    store = SQLiteStore(tmp_path / "t.db")
    base = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    events = [{"event_id": uuid.uuid4().hex, "event_type": "TOOL_CALL_PRE", "tenant_id": "t", "agent_id": "a",
               "session_id": "s", "user_id": "u", "tool_name": "search", "source_type": "agent_tool_call",
               "occurred_at": format_ts(base + dt.timedelta(seconds=s)), "metadata": {}} for s in (0, 5, 10, 15)]
    store.ingest_events(events)
    store.record_violation({"violation_id": "vio_1", "tenant_id": "t", "session_id": "s", "agent_id": "a",
                            "user_id": "u", "tool_name": "search", "decision": "BLOCK", "observed": False,
                            "reason": "too many", "decision_reason_code": "rate_limited", "risk_score": 60.0,
                            "matched_rule_ids": ["search-burst"], "tool_args": {"q": "x"}, "request": {},
                            "created_at": format_ts(base + dt.timedelta(seconds=15, milliseconds=1))})
    answer = Engine(store, parse_policy(POLICY)).explain("t", "vio_1")
    [part] = answer["would_pass"]
    # calls at 0, 5, 10, 15 s: the third newest is at 5 s, so the next call passes from 65 s, 12:01:05
    assert part["retry_at"] == (base + dt.timedelta(seconds=65)).isoformat()
    assert "the next call is allowed after 12:01:05 UTC" in answer["what_would_pass"]


def test_risk_decision_names_the_factors_and_threshold(engine: Engine) -> None:
    engine.store.record_violation({"violation_id": "vio_r", "tenant_id": "t", "session_id": "s", "agent_id": "a",
                                   "user_id": "u", "tool_name": "search", "decision": "STEP_UP", "observed": False,
                                   "reason": "unusual", "decision_reason_code": "step_up_high_risk",
                                   "risk_score": 55.0, "matched_rule_ids": ["risk:rate_burst"], "tool_args": {},
                                   "request": {}})
    answer = engine.explain("t", "vio_r")
    assert answer["decided_by"]["kind"] == "risk"
    assert "risk 55 ≥ 40 (driven by rate burst)" in answer["what_would_pass"]
    assert "at a slower rate" in answer["what_would_pass"]


def test_rule_removed_since_is_said_not_guessed(engine: Engine) -> None:
    decision = decide(engine, "read_file", {"path": "secrets/a"})
    engine.set_policy(parse_policy("rules: []"))
    answer = explain(engine, decision)
    assert answer["decided_by"]["kind"] == "unknown"
    assert "no such rule any more" in answer["what_would_pass"]


def test_default_decision(tmp_path: Any) -> None:
    engine = Engine(SQLiteStore(tmp_path / "d.db"), parse_policy("default: step_up\nrules: []"))
    answer = explain(engine, decide(engine, "search", {"q": "x"}))
    assert answer["decided_by"]["kind"] == "default"
    assert "a rule with decision: allow for `search`" in answer["what_would_pass"]


@pytest.mark.parametrize(
    ("when", "args", "expected"),
    [
        ("{n: {gte: 5}}", {"n": 5}, "`n` = 5 ≥ 5; `n` < 5 would pass"),
        ("{n: {lt: 5}}", {"n": 1}, "`n` = 1 < 5; `n` ≥ 5 would pass"),
        ("{n: {lte: 5}}", {"n": 5}, "`n` = 5 ≤ 5; `n` > 5 would pass"),
        ("{k: {exists: true}}", {"k": 1}, "`k` is present; leaving `k` out would pass"),
        ("{k: {exists: false}}", {}, "`k` is missing; providing `k` would pass"),
        ("{s: {length_gt: 3}}", {"s": "abcdef"}, "`s` has length 6 > 3; a length of at most 3 would pass"),
        ("{s: {not_in: [a, b]}}", {"s": "c"}, "`s` = 'c' is not one of ['a', 'b']; one of those would pass"),
        ("{s: {not_equals: a}}", {"s": "c"}, "`s` is 'c', not 'a'; `s` = 'a' would pass"),
        ("{'*': {regex: 'pass(word)?'}}", {"x": {"y": "my password"}},
         "an argument ('my password') matched regex 'pass(word)?'; arguments with no match would pass"),
        ("{s: {not_contains: ok}}", {"s": "bad"}, "`s` ('bad') does not contain 'ok'; a value containing it would "
                                                  "pass"),
    ],
)
def test_condition_texts(when: str, args: dict[str, Any], expected: str) -> None:
    rule = parse_policy(f"rules: [{{id: r, tool: t, when: {when}, decision: block}}]").rules[0]
    [cond] = rule.all_of
    item = condition_counterfactual(cond, args)
    assert item["matched"] and item["text"] == expected


def test_next_allowed_at_matches_the_engine_window() -> None:
    limit = RateLimit("l", ("t",), max_calls=2, per_seconds=10.0, decision=DecisionType.BLOCK, reason="")
    assert next_allowed_at([1.0], limit) is None
    assert next_allowed_at([5.0, 1.0, 3.0], limit) == 13.0


def test_violation_from_a_governed_tool_explains_what_would_pass(tmp_path: Any) -> None:
    """ThothPolicyViolation.explain() (embedded enforcer) carries the counterfactual, and the card shows it."""
    import thoth_nb
    from thoth_nb.notebook.reprs import Explanation

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)

    def read_file(path: str) -> str:
        return "data"

    tool = thoth_nb.governed(agent_id="a", tenant_id="t", approved_scope=SCOPE, policy=str(policy))(read_file)
    assert tool("notes/a.txt") == "data"
    with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
        tool("secrets/prod.env")
    answer = info.value.explain()
    assert answer is not None and answer["decided_by"]["rule_id"] == "no-secrets"
    assert answer["failed_conditions"][0]["actual"] == "secrets/prod.env"
    card = Explanation(answer)
    assert "a `path` outside it would pass" in card._repr_html_()
    assert "condition that failed: `path` ('secrets/prod.env') matched glob" in repr(card)
    # the exception's own card, and the violation card of a violations() row (under the policy in force)
    assert "what would pass: rule no-secrets (BLOCK)" in info.value._repr_html_()
    assert info.value.explain() is answer  # asked once
    row = thoth_nb.violations(tenant_id="t").thoth.card(0)
    assert "a `path` outside it would pass" in row._repr_html_() and "what would pass: rule no-secrets" in repr(row)
