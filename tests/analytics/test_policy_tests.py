"""Policy tests in cells (policy_test) and regression cases from recorded traffic (regression_cases)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb.analytics.policy_tests import policy_test, regression_cases, summary

POLICY = r"""
rules:
  - {id: no-secrets, tool: read_file, when: {path: {glob: "secrets/**"}}, decision: block, severity: high}
  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}, decision: step_up}
  - id: exfil
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after: [{tool: read_file, when: {path: {regex: "(^|/)docs/private"}}}]
    decision: block
rate_limits:
  - {id: search-burst, tool: web_search, max_calls: 2, per_seconds: 60, decision: block}
"""


def test_cases_pass_and_fail_with_the_actual_decision_and_rule() -> None:
    result = policy_test(POLICY, [
        {"name": "secret", "tool": "read_file", "args": {"path": "secrets/a.env"}, "expect": "block"},
        {"tool": "read_file", "args": {"path": "notes.md"}, "expect": "allow"},
        {"tool": "refund", "args": {"amount": 500}, "expect": "step-up"},
        {"name": "wrong", "tool": "refund", "args": {"amount": 50}, "expect": "step_up"},
    ])
    assert result["case"].tolist() == ["secret", "2", "3", "wrong"]
    assert result["actual"].tolist() == ["BLOCK", "ALLOW", "STEP_UP", "ALLOW"]
    assert result["passed"].tolist() == [True, True, True, False]
    assert result["rule"].tolist() == ["no-secrets", "", "big-refund", ""]
    assert "a `path` outside it would pass" in result.loc[0, "what_would_pass"]
    assert result.attrs["thoth_policy_test"] == {"cases": 4, "passed": 3, "failed": 1, "policy": "<candidate policy>"}
    assert "3 of 4 cases pass; failing: wrong (refund: expected STEP_UP, got ALLOW)" in summary(result)


def test_policy_verdict_versus_enforcement_modes() -> None:
    case = {"tool": "refund", "args": {"amount": 500}}
    assert policy_test(POLICY, [{**case, "expect": "step_up"}])["passed"].all()
    assert policy_test(POLICY, [{**case, "expect": "block", "mode": "block"}])["passed"].all()
    assert policy_test(POLICY, [{**case, "expect": "allow"}], mode="observe")["actual"].tolist() == ["STEP_UP"]


def test_sequences_via_before_and_shared_sessions_and_rate_limits() -> None:
    result = policy_test(POLICY, [
        {"tool": "send_email", "args": {"to": "x@evil.test"}, "expect": "allow"},
        {"tool": "send_email", "args": {"to": "x@evil.test"}, "expect": "block",
         "before": [{"tool": "read_file", "args": {"path": "docs/private/plan.md"}}]},
        {"tool": "web_search", "args": {"q": "a"}, "session": "s", "expect": "allow"},
        {"tool": "web_search", "args": {"q": "b"}, "session": "s", "expect": "allow", "at": 1},
        {"tool": "web_search", "args": {"q": "c"}, "session": "s", "expect": "block", "at": 2},
        {"tool": "web_search", "args": {"q": "d"}, "session": "s", "expect": "allow", "at": 120},
    ])
    assert result["passed"].all(), result[["case", "expected", "actual", "rule"]]
    assert result.loc[1, "rule"] == "exfil" and result.loc[4, "rule"] == "search-burst"


def test_scope_is_checked_when_given() -> None:
    result = policy_test(POLICY, [{"tool": "shell", "scope": "read_file, web_search", "expect": "block"}])
    assert result.loc[0, "rule"] == "approved_scope"
    assert "not in the approved scope [read_file, web_search]" in result.loc[0, "what_would_pass"]


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ([{"args": {}, "expect": "allow"}], "case 1: needs `tool:`"),
        ([{"tool": "x"}], "case 1: needs `expect:`"),
        ([{"tool": "x", "expect": "maybe"}], "case 1: expect: 'maybe' is not a decision"),
        ([{"tool": "x", "expect": "allow", "agrs": {}}], "case 1: unknown key 'agrs'"),
        ([{"tool": "x", "expect": "allow", "args": [1]}], "case 1: `args` must be a mapping"),
        ([{"tool": "x", "expect": "allow", "mode": "strict"}], "mode 'strict' is not one of"),
        ([{"name": "n", "tool": "x", "expect": "allow", "before": ["read_file"]}], "case 1 (n): `before` must be"),
        ([{"tool": "x", "expect": "allow", "at": "yesterday"}], "`at` must be"),
    ],
)
def test_bad_cases_say_what_is_wrong(cases: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy_test(POLICY, cases)


def test_cases_may_be_a_dataframe() -> None:
    import pandas as pd

    frame = pd.DataFrame([{"tool": "read_file", "args": {"path": "secrets/x"}, "expect": "BLOCK"}])
    assert policy_test(POLICY, frame)["passed"].all()


def _record(tmp_path: Path, mode: str) -> None:
    policy = tmp_path / "live.yaml"
    policy.write_text(POLICY, encoding="utf-8")

    def read_file(path: str) -> str:
        return "text"

    def send_email(to: str, body: str) -> str:
        return "sent"

    def refund(order: int, amount: float) -> str:
        return "ok"

    tools = thoth_nb.instrument([read_file, send_email, refund], agent_id="clerk", tenant_id="t",
                                approved_scope=["read_file", "send_email", "refund"], session_id=str(uuid.uuid4()),
                                policy=str(policy), enforcement=mode, step_up_timeout_minutes=0.001,
                                step_up_poll_interval_ms=20)
    calls = [(0, {"path": "docs/a.md"}), (1, {"to": "x@outside.example", "body": "hi"}),
             (0, {"path": "secrets/prod.env"}), (0, {"path": "docs/private/plan"}),
             (1, {"to": "x@outside.example", "body": "plan"}), (2, {"order": 1, "amount": 500.0})]
    for index, kwargs in calls:
        try:
            tools[index](**kwargs)
        except thoth_nb.ThothPolicyViolation:
            pass
    thoth_nb.flush()


@pytest.mark.parametrize("mode", ["block", "observe"])
def test_regression_cases_from_events_pass_against_the_policy_that_recorded_them(tmp_path: Path, mode: str) -> None:
    _record(tmp_path, mode)
    cases = regression_cases(thoth_nb.events(tenant_id="t"))
    expected = ["ALLOW", "ALLOW", "BLOCK", "ALLOW", "BLOCK", "BLOCK" if mode == "block" else "STEP_UP"]
    assert [c["expect"] for c in cases] == expected
    assert len({c["session"] for c in cases}) == 1
    result = policy_test(tmp_path / "live.yaml", cases)
    assert result["passed"].all(), result[["case", "mode", "expected", "actual"]]
    # a looser policy breaks exactly the cases it changes
    looser = POLICY.replace("decision: block, severity: high", "decision: allow")
    broken = policy_test(looser, cases)
    assert broken.loc[~broken["passed"], "tool"].tolist() == ["read_file"]
    only_blocks = regression_cases(thoth_nb.events(tenant_id="t"), decisions=["block"])
    assert {c["expect"] for c in only_blocks} == {"BLOCK"}


def test_regression_cases_from_violations_and_approvals(tmp_path: Path) -> None:
    _record(tmp_path, "step_up")  # the refund is held and times out; the secret read is held too
    violations = thoth_nb.violations(tenant_id="t")
    cases = regression_cases(violations)
    assert sorted(c["tool"] for c in cases) == ["read_file", "refund", "send_email"]
    assert all(c["expect"] in ("STEP_UP", "BLOCK") for c in cases)
    approvals = thoth_nb.approvals(tenant_id="t")
    assert len(approvals) >= 2
    held = regression_cases(approvals)
    assert {c["expect"] for c in held} == {"STEP_UP"}
    result = policy_test(tmp_path / "live.yaml", held)
    # a hold case has no session history: the exfil sequence rule cannot fire again (documented;
    # regression_cases(events) keeps sessions for that), everything else is held again
    assert result.loc[~result["passed"], "rule"].tolist() == [""]
    assert result.loc[~result["passed"], "tool"].tolist() == ["send_email"]
    assert sorted(result.loc[result["passed"], "rule"]) == ["big-refund", "no-secrets"]
    approved = regression_cases(approvals.assign(status="approved"), approved_expect="allow")
    assert {c["expect"] for c in approved} == {"ALLOW"}
    with pytest.raises(ValueError, match="regression_cases needs a frame"):
        import pandas as pd

        regression_cases(pd.DataFrame({"x": [1]}))
