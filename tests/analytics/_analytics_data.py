"""Small hand-made event frames with known answers."""

from __future__ import annotations

from typing import Any

import pandas as pd


def frame(rows: list[tuple[str, str, str, float, dict[str, Any] | None]], mode: str = "observe") -> pd.DataFrame:
    """rows: (session, agent, tool, seconds since start, args) → an events()-shaped frame of PRE events."""
    start = pd.Timestamp("2026-03-01T00:00:00Z")
    df = pd.DataFrame({
        "seq": range(1, len(rows) + 1),
        "occurred_at": [start + pd.Timedelta(seconds=r[3]) for r in rows],
        "session_id": [r[0] for r in rows],
        "agent_id": [r[1] for r in rows],
        "tool_name": [r[2] for r in rows],
        "event_type": "TOOL_CALL_PRE",
        "enforcement_mode": mode,
        "tool_args": [r[4] for r in rows],
    })
    for column in ("session_id", "agent_id", "tool_name", "event_type"):
        df[column] = df[column].astype("category")
    return df
