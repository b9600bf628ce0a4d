"""`violations(tool_name=..., limit=N)` and `approvals(agent_id/session_id/tool_name=..., limit=N)` filter
first and then keep N rows: the filters are not pushed down to the store, and filtering only the N rows
the store returned lost matching rows."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

pd = pytest.importorskip("pandas")

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.engine.store import format_ts  # noqa: E402


def _hold(tool: str, agent: str, minutes_ago: float) -> str:
    now = dt.datetime.now(dt.UTC)
    approval_id = f"apr_{uuid.uuid4().hex}"
    _runtime.local_store().create_hold({
        "approval_id": approval_id, "hold_token": f"hold_{uuid.uuid4().hex}", "tenant_id": "local",
        "agent_id": agent, "user_id": "u", "session_id": f"s-{agent}", "tool_name": tool, "args_hash": "h",
        "reason": "r", "decision_reason_code": "c", "risk_score": 60,
        "created_at": format_ts(now - dt.timedelta(minutes=minutes_ago)),
        "expires_at": format_ts(now + dt.timedelta(days=1))})
    return approval_id


@pytest.fixture
def holds() -> dict[str, str]:
    """Oldest first: an old transfer by a1, then a refund by a2 five minutes ago."""
    return {"old": _hold("transfer", "a1", 180), "new": _hold("refund", "a2", 5)}


def test_violations_tool_filter_then_limit() -> None:
    def delete_file(path: str) -> str:
        return path

    def web_search(query: str) -> str:
        return query

    tools = thoth_nb.wrap_openai_tools({"delete_file": delete_file, "web_search": web_search}, agent_id="r",
                                       tenant_id="local", approved_scope=["read_file"])
    for name, kwargs in (("delete_file", {"path": "/x"}), ("web_search", {"query": "q"})):
        with pytest.raises(thoth_nb.ThothPolicyViolation):
            tools[name](**kwargs)
    thoth_nb.flush()
    # the newest violation is web_search: the one delete_file violation must still be found with limit=1
    assert thoth_nb.violations(tool_name="delete_file", limit=1)["tool_name"].tolist() == ["delete_file"]
    assert len(thoth_nb.violations(tool_name="delete_file")) == 1


@pytest.mark.parametrize("column, value", [("tool_name", "refund"), ("agent_id", "a2"), ("session_id", "s-a2")])
def test_approvals_filters_then_limit(holds: dict[str, str], column: str, value: str) -> None:
    frame = thoth_nb.approvals(limit=1, **{column: value})
    assert frame["approval_id"].tolist() == [holds["new"]]


def test_approvals_since_then_limit(holds: dict[str, str]) -> None:
    assert thoth_nb.approvals(since="1h", limit=1)["approval_id"].tolist() == [holds["new"]]
    assert thoth_nb.approvals(limit=1)["approval_id"].tolist() == [holds["old"]]  # oldest first
