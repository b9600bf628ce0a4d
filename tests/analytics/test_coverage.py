"""Coverage report: tools with no rule, rules that never fired, tools reviewers always approve."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

import thoth_nb
from thoth_nb.analytics.coverage import coverage

POLICY = r"""
rules:
  - {id: no-secrets, tool: read_file, when: {path: {glob: "secrets/**"}}, decision: block}
  - {id: etc, tool: read_file, when: {path: {glob: "/etc/**"}}, decision: block}
  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}, decision: step_up}
  - id: exfil
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after: [{tool: read_file, when: {path: {glob: "secrets/**"}}}]
    decision: block
  - {id: mail-size, tool: send_email, when: {body: {length_gt: 10000}}, decision: step_up}
  - {id: any-password, tool: "*", when: {"*": {regex: password}}, decision: step_up}
rate_limits:
  - {id: search-burst, tool: web_search, max_calls: 2, per_seconds: 60, decision: block}
  - {id: lookup-burst, tool: lookup, max_calls: 50, per_seconds: 60, decision: block}
"""


def _events(rows: list[tuple[str, str, str, dict[str, object]]]) -> pd.DataFrame:
    """A frame shaped like thoth_nb.events() (PRE rows only), one row per (session, agent, tool, args)."""
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    return pd.DataFrame({
        "seq": range(1, len(rows) + 1),
        "occurred_at": [start + pd.Timedelta(seconds=i) for i in range(len(rows))],
        "session_id": [r[0] for r in rows], "agent_id": [r[1] for r in rows], "tool_name": [r[2] for r in rows],
        "event_type": ["TOOL_CALL_PRE"] * len(rows), "tool_args": [r[3] for r in rows]})


def test_findings_on_a_known_history() -> None:
    events = _events([
        ("s1", "a", "read_file", {"path": "secrets/x"}),
        ("s1", "a", "send_email", {"to": "x@evil.test", "body": "hi"}),
        ("s1", "a", "web_search", {"q": "1"}),
        ("s1", "a", "web_search", {"q": "2"}),
        ("s1", "a", "web_search", {"q": "3"}),
        ("s2", "a", "summarize", {"text": "t"}),
        ("s2", "a", "summarize", {"text": "u"}),
        ("s2", "b", "refund", {"amount": 5}),
    ])
    approvals = pd.DataFrame({
        "status": ["approved"] * 3 + ["approved", "denied"] + ["approved"],
        "agent_id": ["a"] * 3 + ["a", "a"] + ["b"],
        "tool_name": ["deploy"] * 3 + ["transfer", "transfer"] + ["refund"],
        "reviewer": ["ann", "bob", "ann", "ann", "bob", "ann"],
        "reason": ["prod deploy"] * 3 + ["big", "big", "big refund"],
    })
    report = coverage(events, POLICY, approvals=approvals,
                      inventory=[{"agent_id": "a", "tool_name": "delete_file"}])
    by = {f: report[report["finding"] == f] for f in ("tool without rule", "rule never fired", "always approved")}
    without = by["tool without rule"].set_index("tool_name")
    assert sorted(without.index) == ["delete_file", "summarize", "web_search"]
    assert without.loc["summarize", "calls"] == 2 and "only wildcard rules apply: any-password" in \
        without.loc["summarize", "detail"]
    assert "rate limits: search-burst" in without.loc["web_search", "detail"]
    assert without.loc["delete_file", "calls"] == 0 and "inventory" in without.loc["delete_file", "detail"]
    never = by["rule never fired"].set_index("rule_id")
    # fired: no-secrets (direct), exfil (sequence, via replay), search-burst (3rd search, via replay)
    assert sorted(never.index) == ["any-password", "big-refund", "etc", "lookup-burst", "mail-size"]
    assert never.loc["etc", "detail"] == "rule: 1 call(s) recorded; its conditions held on none"
    assert never.loc["lookup-burst", "detail"] == "rate limit: no recorded call of lookup"
    assert never.loc["big-refund", "calls"] == 1
    approved = by["always approved"]
    assert approved["tool_name"].tolist() == ["deploy"]  # transfer was denied once; refund has 1 < 3
    assert "approved 3 of 3 holds by ann, bob" in approved["detail"].iloc[0]
    assert report.attrs["thoth_coverage"]["rule never fired"] == 5
    relaxed = coverage(events, POLICY, approvals=approvals, min_approvals=1)
    assert relaxed.loc[relaxed["finding"] == "always approved", "tool_name"].tolist() == ["deploy", "refund"]


def test_per_agent_rules_cover_only_their_agent() -> None:
    policy = "rules: []\nagents:\n  a: {rules: [{id: a-only, tool: shell, decision: step_up}]}\n"
    report = coverage(_events([("s", "a", "shell", {}), ("s", "b", "shell", {})]), policy, approvals=None)
    without = report[report["finding"] == "tool without rule"]
    assert without[["agent_id", "tool_name"]].values.tolist() == [["b", "shell"]]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="min_approvals"):
        coverage(_events([]), POLICY, min_approvals=0)
    with pytest.raises(ValueError, match="coverage needs a frame"):
        coverage(pd.DataFrame({"x": [1]}), POLICY)


def test_from_the_store_with_holds_and_inventory(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")

    def refund(amount: float) -> str:
        return "ok"

    def summarize(text: str) -> str:
        return "short"

    tools = thoth_nb.instrument([refund, summarize], agent_id="a", tenant_id="t",
                                approved_scope=["refund", "summarize"], session_id=str(uuid.uuid4()),
                                policy=str(policy), enforcement="step_up",
                                step_up_timeout_minutes=0.5, step_up_poll_interval_ms=20)
    import threading

    def reviewer() -> None:  # approves every hold as it appears
        done = 0
        while done < 3:
            for hold in thoth_nb.holds(tenant_id="t"):
                thoth_nb.approve(hold["approval_id"], reviewer="ann")
                done += 1

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    for _ in range(3):
        assert tools[0](amount=500) == "ok"
    thread.join(10)
    assert tools[1](text="x") == "short"
    thoth_nb.flush()
    report = coverage(thoth_nb.events(tenant_id="t"), policy)
    approved = report[report["finding"] == "always approved"]
    assert approved["tool_name"].tolist() == ["refund"] and approved["approvals"].tolist() == [3]
    assert "summarize" in report.loc[report["finding"] == "tool without rule", "tool_name"].tolist()
