"""`%thoth approvals --since 1h --limit N`: the holds of the last hour, not the N oldest holds filtered
to the last hour (which was empty as soon as an older hold existed)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nbshell import Shell

pytest.importorskip("pandas")

from thoth_nb import _runtime
from thoth_nb.engine.store import format_ts


def _hold(tool: str, minutes_ago: float) -> str:
    now = dt.datetime.now(dt.UTC)
    approval_id = f"apr_{uuid.uuid4().hex}"
    _runtime.local_store().create_hold({
        "approval_id": approval_id, "hold_token": f"hold_{uuid.uuid4().hex}", "tenant_id": "local",
        "agent_id": "a", "user_id": "u", "session_id": "s", "tool_name": tool, "args_hash": "h", "reason": "r",
        "decision_reason_code": "c", "risk_score": 60, "created_at": format_ts(now - dt.timedelta(minutes=minutes_ago)),
        "expires_at": format_ts(now + dt.timedelta(days=1))})
    return approval_id


def test_approvals_since_then_limit(loaded: Shell) -> None:
    _hold("transfer", 180)
    recent = _hold("refund", 5)
    assert loaded.magic("thoth approvals --since 1h --limit 1")["approval_id"].tolist() == [recent]
    assert loaded.magic("thoth approvals --since 1h")["approval_id"].tolist() == [recent]
