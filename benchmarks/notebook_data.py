"""Synthetic event stores for the notebook/analytics benchmarks and tests.

Events are real SDK events (built by `thoth_nb._flow.build_event` from governed calls) copied with new
ids and times, written straight into the store's `events` table so a million rows take seconds to make.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

from thoth_nb import _json
from thoth_nb.engine.store import SQLiteStore

TOOLS = ["web_search", "read_file", "send_email", "delete_file", "run_sql", "fetch_url"]
AGENTS = ["research", "support", "billing", "ops"]
USERS = ["alice", "bob", "carol", "dan", "erin"]


def _body(i: int, tenant: str, session: str, agent: str, user: str, tool: str, etype: str, when: str,
          decision: str | None, args: dict[str, Any]) -> str:
    metadata: dict[str, Any] = {
        "sdk_language": "python", "sdk_name": "thoth_nb", "environment": "prod",
        "enforcement_trace_id": session, "tool_call": {"name": tool, "arguments": args},
        "tool_args": args, "event_phase": {"TOOL_CALL_PRE": "pre", "TOOL_CALL_POST": "post"}.get(etype, "block"),
    }
    if decision:
        metadata.update({"authorization_decision": decision, "reason": "ok" if decision == "ALLOW" else "blocked",
                         "risk_score": 0.0 if decision == "ALLOW" else 75.0, "duration_ms": 1.5})
    return _json.dumps({
        "event_id": f"{tenant}:{i:032x}", "tenant_id": tenant, "session_id": session, "user_id": user,
        "agent_id": agent, "tool_name": tool, "event_type": etype, "source_type": "agent_tool_call",
        "content": "tool invocation requested", "metadata": metadata, "approved_scope": TOOLS[:4],
        "session_tool_calls": TOOLS[:3], "enforcement_mode": "block", "endpoint_id": "host",
        "hostname": "host", "occurred_at": when, "chain_index": i, "previous_hash": "", "ingested_at": when,
    })


def make_store(path: Path, n: int, *, tenant: str = "local", seed: int = 7) -> SQLiteStore:
    """A store with `n` events: PRE then POST (or BLOCK) per call, in sessions of 20 calls."""
    store = SQLiteStore(path)
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(n):
        call = i // 2
        session = f"s-{call // 10:06d}"
        agent = AGENTS[(call // 10) % len(AGENTS)]
        user = USERS[(call // 10) % len(USERS)]
        tool = TOOLS[rng.randrange(len(TOOLS))]
        when = (start + dt.timedelta(milliseconds=i * 10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        blocked = tool == "delete_file"
        if i % 2 == 0:
            etype, decision = "TOOL_CALL_PRE", None
        else:
            etype, decision = ("TOOL_CALL_BLOCK", "BLOCK") if blocked else ("TOOL_CALL_POST", "ALLOW")
        args = {"query": f"q{call}"} if tool == "web_search" else {"path": f"/data/{call}.txt"}
        rows.append((f"{tenant}:{i:032x}", tenant, session, agent, user, tool, etype, when, when, decision,
                     f"v-{call}" if decision == "BLOCK" else None, i, f"{i:064x}", "",
                     _body(i, tenant, session, agent, user, tool, etype, when, decision, args)))
        if len(rows) >= 50_000:
            _insert(store, rows)
            rows = []
    if rows:
        _insert(store, rows)
    return store


def _insert(store: SQLiteStore, rows: list[tuple[Any, ...]]) -> None:
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO events (event_id, tenant_id, session_id, agent_id, user_id, tool_name, event_type, "
            "occurred_at, ingested_at, decision, violation_id, chain_index, hash, previous_hash, body) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


if __name__ == "__main__":
    target = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    target.unlink(missing_ok=True)
    make_store(target, count).close()
    print(sqlite3.connect(target).execute("SELECT COUNT(*) FROM events").fetchone()[0], "events in", target)
