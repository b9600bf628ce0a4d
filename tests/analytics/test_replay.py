"""What-if replay: same policy → same decisions; a stricter one → the changes, counted per rule; no tool runs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb.analytics.replay import load_candidate, replay, rule_counts
from thoth_nb.analytics.synthetic import synthetic_events

LIVE = r"""
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}, decision: step_up}
  - id: exfil
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after: [{tool: read_file, when: {path: {regex: "(^|/)secrets/"}}}]
    decision: block
"""
STRICTER = LIVE + """
  - {id: no-outside-mail, tool: send_email, when: {to: {not_contains: "@corp.example"}}, decision: block}
  - {id: no-secrets, tool: read_file, when: {path: {contains: secrets}}, decision: step_up}
"""


class Counter:
    def __init__(self) -> None:
        self.runs: list[str] = []

    def tools(self) -> list[Any]:
        def read_file(path: str) -> str:
            self.runs.append(f"read {path}")
            return "text"

        def send_email(to: str, body: str) -> str:
            self.runs.append(f"mail {to}")
            return "sent"

        def refund(order: int, amount: float) -> str:
            self.runs.append(f"refund {amount}")
            return "ok"

        return [read_file, send_email, refund]


def record(tmp_path: Path, counter: Counter, mode: str) -> None:
    """A recorded history: two sessions of mixed calls, some of them blocked."""
    policy = tmp_path / "live.yaml"
    policy.write_text(LIVE, encoding="utf-8")
    for session in range(2):
        tools = counter.tools()
        thoth_nb.instrument(tools, agent_id="clerk", approved_scope=["read_file", "send_email"], tenant_id="t",
                            session_id=str(uuid.uuid4()), policy=str(policy), enforcement=mode)
        calls = [(0, {"path": "docs/a.md"}), (1, {"to": "x@outside.example", "body": "hi"}),
                 (0, {"path": "/etc/passwd"}), (0, {"path": "secrets/prod.env"}),
                 (1, {"to": "boss@corp.example", "body": "report"}),
                 (1, {"to": "x@outside.example", "body": "key"}), (2, {"order": 1, "amount": 5.0})]
        for index, kwargs in calls[session:]:
            try:
                tools[index](**kwargs)
            except thoth_nb.ThothPolicyViolation:
                pass
    thoth_nb.flush()


@pytest.mark.parametrize("mode", ["block", "observe"])
def test_unchanged_policy_replays_to_the_live_decisions(tmp_path: Path, mode: str) -> None:
    counter = Counter()
    record(tmp_path, counter, mode)
    runs = len(counter.runs)
    events = thoth_nb.events(tenant_id="t")
    result = replay(events, tmp_path / "live.yaml", changes_only=False)
    assert len(result) == 13 and result["changed"].sum() == 0
    assert result["before"].notna().all()
    before = result["before"].astype(str).tolist()
    assert before.count("BLOCK") == 2 + 2 + 2  # /etc (x2), exfil (x2), refund out of scope (x2)
    assert (result["before"].astype(str) == result["after"].astype(str)).all()
    assert set(result["mode"].astype(str)) == {mode}
    assert len(counter.runs) == runs  # replay ran no tool


def test_stricter_policy_shows_what_changes_and_counts_rules(tmp_path: Path) -> None:
    counter = Counter()
    record(tmp_path, counter, "block")
    runs = len(counter.runs)
    changes = thoth_nb.replay(thoth_nb.events(tenant_id="t"), policy=STRICTER)
    assert len(counter.runs) == runs
    transitions = changes["transition"].astype(str).value_counts().to_dict()
    # per session: the first outside mail (no secrets read yet) and the secrets read (a step_up rule,
    # blocked in the recorded block mode); the later outside mail was blocked already (by exfil)
    assert transitions == {"ALLOW→BLOCK": 4}
    assert changes["tool_name"].astype(str).value_counts().to_dict() == {"send_email": 2, "read_file": 2}
    counts = rule_counts(changes).set_index("rule_id")
    assert counts.loc["no-outside-mail", "changed"] == 2 and counts.loc["no-outside-mail", "after"] == 4
    assert counts.loc["no-secrets", "changed"] == 2
    assert counts.loc["etc", "before"] == counts.loc["etc", "after"] == 2
    assert counts.loc["exfil", "before"] == 2 and counts.loc["exfil", "after"] == 0  # the secrets read never ran
    stats = changes.attrs["thoth_replay"]
    assert stats["calls"] == 13 and stats["changed"] == 4 and stats["decisions_per_second"] > 0
    as_step_up = replay(thoth_nb.events(tenant_id="t"), STRICTER, mode="step_up", changes_only=False)
    secrets = as_step_up[as_step_up["tool_args"].map(lambda a: "secrets" in str(a))]
    assert secrets["transition"].astype(str).tolist() == ["ALLOW→STEP_UP", "ALLOW→STEP_UP"]


def test_mode_override_and_candidate_forms(tmp_path: Path) -> None:
    counter = Counter()
    record(tmp_path, counter, "observe")
    events = thoth_nb.events(tenant_id="t")
    as_block = replay(events, {"rules": [{"id": "all-mail", "tool": "send_email", "decision": "block"}]},
                      mode="block", changes_only=False)
    assert set(as_block["mode"].astype(str)) == {"block"}
    mail = as_block[as_block["tool_name"] == "send_email"]
    assert (mail["after"].astype(str) == "BLOCK").all() and all(r == ["all-mail"] for r in mail["after_rules"])
    assert load_candidate(str(tmp_path / "live.yaml")).rule("etc") is not None
    assert load_candidate(LIVE).rule("exfil") is not None
    with pytest.raises(TypeError):
        load_candidate(42)


def test_replay_of_a_frame_without_store_fields() -> None:
    events = synthetic_events(2_000, seed=5, exfiltration=True)  # observe-mode PRE events, no outcomes
    result = replay(events, LIVE.replace("tool: read_file, when: {path: {regex: \"^/etc/\"}}",
                                         "tool: read_file, when: {path: {regex: \"^/etc/\"}}"),
                    mode="block", approved_scope=["read_file", "send_email", "web_search", "summarize",
                                                  "lookup_order", "refund"], changes_only=False)
    assert len(result) == len(events) and result["before"].isna().all() and not result["changed"].any()
    blocked = result[result["after"].astype(str) == "BLOCK"]
    assert blocked["session_id"].astype(str).tolist() == ["sess-exfil"]  # the planted exfiltration only
    assert blocked["after_rules"].iloc[0] == ["exfil"]
