"""`sessions(since=...)` counts one window: the calls, blocks, violations and holds from `since` on, so a
row never shows more violations than the calls it counts (was: calls and blocks from `since`, violations
and holds over the whole session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pandas")

from thoth_nb.analytics import frames
from thoth_nb.engine.store import open_store

T0 = "2026-03-01T00:00:0{}.000000Z"


def _event(n: int, kind: str, decision: str | None = None) -> dict[str, Any]:
    metadata = {"authorization_decision": decision} if decision else {}
    return {"event_id": f"acme:{n}", "tenant_id": "acme", "session_id": "s", "agent_id": "a", "user_id": "u",
            "tool_name": "rm" if decision != "ALLOW" else "ls", "event_type": kind, "occurred_at": T0.format(n),
            "metadata": metadata}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Session s: two blocked `rm` (held and refused) at 0-3 s, then one allowed `ls` at 6-7 s."""
    if request.param == "postgres":
        store = open_store(request.getfixturevalue("pg_url"))
    else:
        store = open_store(tmp_path / "thoth.db")
    store.ingest_events([_event(0, "TOOL_CALL_PRE"), _event(1, "TOOL_CALL_BLOCK", "BLOCK"),
                         _event(2, "TOOL_CALL_PRE"), _event(3, "TOOL_CALL_BLOCK", "BLOCK"),
                         _event(6, "TOOL_CALL_PRE"), _event(7, "TOOL_CALL_POST", "ALLOW")])
    for n in (1, 3):
        common = {"tenant_id": "acme", "session_id": "s", "agent_id": "a", "user_id": "u", "tool_name": "rm",
                  "reason": "no", "decision_reason_code": "step_up_denied", "risk_score": 50.0}
        store.record_violation({**common, "violation_id": f"v{n}", "created_at": T0.format(n), "decision": "BLOCK"})
        store.create_hold({**common, "approval_id": f"h{n}", "hold_token": f"tok{n}", "args_hash": "x",
                           "created_at": T0.format(n), "expires_at": "2026-03-01T00:00:05.000000Z"})
    try:
        yield store
    finally:
        store.close()


def test_whole_session(store: Any) -> None:
    row = frames.sessions(tenant_id="acme", store=store).iloc[0]
    assert (row["tool_calls"], row["blocked"], row["violations"], row["stepped_up"]) == (3, 2, 2, 2)


def test_since_counts_the_same_window_for_every_column(store: Any) -> None:
    row = frames.sessions(tenant_id="acme", store=store, since="2026-03-01T00:00:05Z").iloc[0]
    assert (row["tool_calls"], row["blocked"], row["violations"], row["stepped_up"]) == (1, 0, 0, 0)
    row = frames.sessions(tenant_id="acme", store=store, since="2026-03-01T00:00:03Z").iloc[0]
    assert (row["tool_calls"], row["blocked"], row["violations"], row["stepped_up"]) == (1, 1, 1, 1)
