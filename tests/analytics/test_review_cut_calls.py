"""A frame cut by a time bound between a call's PRE and its outcome (`events(since=...)` on a live
session) must not shift the pairing of every later call of that tool with its recorded outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pandas")

import thoth_nb
from thoth_nb.analytics.export import tool_calls
from thoth_nb.analytics.policy_tests import regression_cases
from thoth_nb.analytics.replay import replay

POLICY = """version: 1
default: allow
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block}
"""


def _cut_frame(tmp_path: Path) -> object:
    """read_file docs/1 (allowed), /etc/passwd (blocked), docs/2 (allowed); the frame starts at the
    first call's POST, so its PRE is outside."""

    def read_file(path: str) -> str:
        return "text"

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    tools = thoth_nb.instrument([read_file], agent_id="a", tenant_id="t", approved_scope=["read_file"],
                                session_id="s", policy=str(policy))
    for path in ("docs/1", "/etc/passwd", "docs/2"):
        try:
            tools[0](path=path)
        except thoth_nb.ThothPolicyViolation:
            pass
    thoth_nb.flush()
    full = thoth_nb.events(tenant_id="t")
    assert full["event_type"].astype(str).tolist()[:2] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    cut = thoth_nb.events(tenant_id="t", since=full["occurred_at"].iloc[1])
    assert cut["event_type"].astype(str).iloc[0] == "TOOL_CALL_POST"  # an outcome without its PRE
    return cut


def test_replay_of_a_cut_frame_pairs_each_call_with_its_own_outcome(tmp_path: Path) -> None:
    result = replay(_cut_frame(tmp_path), POLICY, changes_only=False)
    assert [a["path"] for a in result["tool_args"]] == ["/etc/passwd", "docs/2"]
    assert result["before"].astype(str).tolist() == ["BLOCK", "ALLOW"]
    assert not result["changed"].any()


def test_tool_calls_of_a_cut_frame_pair_each_call_with_its_own_outcome(tmp_path: Path) -> None:
    calls = tool_calls(_cut_frame(tmp_path))
    assert [a["path"] for a in calls["tool_args"]] == ["/etc/passwd", "docs/2"]
    assert calls["decision"].astype(str).tolist() == ["BLOCK", "ALLOW"]


def test_regression_cases_of_a_cut_frame_expect_the_recorded_decisions(tmp_path: Path) -> None:
    cases = regression_cases(_cut_frame(tmp_path))
    assert [(c["args"]["path"], c["expect"]) for c in cases] == [("/etc/passwd", "BLOCK"), ("docs/2", "ALLOW")]
