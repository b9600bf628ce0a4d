"""Engines over one store share a hold board, so an approval through any of them wakes every waiter."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from thoth_nb.engine.decide import Engine
from thoth_nb.engine.policy import parse_policy
from thoth_nb.engine.store import SQLiteStore

POLICY = """\
version: 1
rules:
  - {id: etc, tool: "*", when: {path: {glob: "/etc/*"}}, decision: step_up}
"""


def test_engines_over_one_store_share_the_board(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    other = SQLiteStore(tmp_path / "b.db")
    first = Engine(store, parse_policy(POLICY))
    second = Engine(store, parse_policy("version: 1\n"))
    assert first.board is second.board
    assert Engine(other, parse_policy(POLICY)).board is not first.board
    store.close()
    other.close()


def test_approval_through_another_engine_wakes_the_waiter_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    waiting = Engine(store, parse_policy(POLICY))
    approving = Engine(store, parse_policy("version: 1\n"))
    waiting.board.recheck = 5.0  # without the shared board the waiter would only see it after 5 s
    decision = waiting.decide({"agent_id": "a", "tenant_id": "t", "session_id": "s", "tool_name": "read_file",
                               "tool_args": {"path": "/etc/hosts"}, "approved_scope": ["read_file"],
                               "enforcement_mode": "step_up"})
    assert decision.hold_token
    threading.Timer(0.2, lambda: approving.resolve(decision.hold_token or "", approve=True)).start()
    t0 = time.monotonic()
    reply = waiting.wait_hold(decision.hold_token, 10.0)
    assert reply["resolved"] and reply["resolution"] == "ALLOW"
    assert time.monotonic() - t0 < 4.0
    store.close()
