"""The enforcer server dies (SIGKILL) during a run and comes back on the same port and store.

Governed calls fail closed while it is down (open with `fail_open`, for network errors only), and every
event the run produced reaches the store after the restart: same count, same ids, no duplicates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from _faults import ServeProcess, http_agent

import thoth_nb
from thoth_nb import ThothPolicyViolation, _runtime
from thoth_nb._emitter import Emitter, all_emitters
from thoth_nb._flow import build_event

pytestmark = pytest.mark.timeout(120)


def _emitter_for(url: str) -> Emitter:
    return next(e for e in all_emitters() if getattr(e.transport, "api_url", None) == url)


def _record_ids(emitter: Emitter, produced: list[str]) -> None:
    """Remember the id of every event the emitter builds: the run's ground truth."""
    def build(item: Any) -> Mapping[str, Any]:
        event = build_event(item)
        produced.append(str(event["event_id"]))
        return event

    emitter._build = build


def test_killed_server_fails_closed_and_loses_no_event(serve: ServeProcess) -> None:
    serve.start()
    key = serve.keys["acme:agent"]
    agent, session = http_agent(serve.url, key)
    emitter = _emitter_for(serve.url)
    produced: list[str] = []
    _record_ids(emitter, produced)
    emitter.retry_delays = (0.05, 0.05)

    for i in range(5):
        assert agent.lookup(f"before-{i}") == f"found before-{i}"
    with pytest.raises(ThothPolicyViolation, match="dropping tables is forbidden"):
        agent.tools[2](name="users")
    assert thoth_nb.flush(timeout=10) and emitter.spilled == 0
    acked = len(produced)
    assert acked == 5 * 2 + 2  # PRE+POST per lookup, PRE+BLOCK for the drop

    serve.kill()  # mid-run, no graceful shutdown
    for i in range(3):  # fail closed: the tool body never runs
        with pytest.raises(ThothPolicyViolation, match="enforcer unavailable") as caught:
            agent.lookup(f"down-{i}")
        assert caught.value.decision_reason_code == "enforcer_unavailable"
    assert [r for r in agent.ran if r[1] in {f"down-{i}" for i in range(3)}] == []

    # fail_open allows on a network error only (same URL and key: same transport and emitter)
    open_agent, _ = http_agent(serve.url, key, session_id=session, fail_open=True)
    assert open_agent.lookup("open-0") == "found open-0"
    assert thoth_nb.flush(timeout=10)
    assert emitter.spilled == len(produced) - acked == 3 * 2 + 2

    # the server comes back on the same port and store: what it acknowledged before SIGKILL is there
    serve.start()
    assert {e["event_id"] for e in serve.events(session_id=session)} == set(produced[:acked])

    # down again, and back while the emitter is still retrying: the retries deliver, nothing spills
    serve.kill()
    emitter.retry_delays = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0)  # a long window: a loaded CI box starts slowly
    spilled = emitter.spilled
    for i in range(4):
        assert open_agent.lookup(f"retry-{i}") == f"found retry-{i}"
    took: list[float] = []

    def restart() -> None:
        started = time.monotonic()
        serve.start()
        took.append(time.monotonic() - started)

    restarter = threading.Timer(0.2, restart)
    restarter.start()
    try:
        assert thoth_nb.flush(timeout=60)
    finally:
        restarter.join()
    assert emitter.spilled == spilled, f"restart took {took} s, longer than the retry window"

    # the next start of the SDK (reset = a new kernel) replays the spill file exactly once
    _runtime.reset()
    again, _ = http_agent(serve.url, key, session_id=session)
    fresh = _emitter_for(serve.url)
    assert fresh is not emitter and fresh.replayed == 3 * 2 + 2
    _record_ids(fresh, produced)
    assert again.lookup("after") == "found after"
    assert thoth_nb.flush(timeout=10)
    assert Emitter(fresh.transport, build=build_event).replayed == 0  # nothing left to replay

    stored = serve.events(session_id=session)
    ids = [e["event_id"] for e in stored]
    assert len(ids) == len(set(ids)), "duplicates in the store"
    assert sorted(ids) == sorted(produced) and len(produced) == 12 + 8 + 8 + 2
    blocked = [e for e in stored if e["event_type"] == "TOOL_CALL_BLOCK"]
    assert sum("enforcer unavailable" in e["content"] for e in blocked) == 3


def test_fail_open_never_covers_auth_errors(serve: ServeProcess) -> None:
    """401 (unknown key) and 403 (a reviewer key may not enforce) block even with fail_open."""
    serve.start()
    for key, status in (("thk_not_a_key", 401), (serve.keys["acme:reviewer"], 403)):
        agent, _ = http_agent(serve.url, key, fail_open=True)
        with pytest.raises(ThothPolicyViolation, match=f"status={status}") as caught:
            agent.lookup("q")
        assert caught.value.decision_reason_code == "enforcer_rejected"
        assert agent.ran == []
    # and a 5xx-free network error with fail_open off still blocks
    serve.kill()
    closed, _ = http_agent(serve.url, serve.keys["acme:agent"])
    with pytest.raises(ThothPolicyViolation, match="enforcer unavailable"):
        closed.lookup("q")
    with pytest.raises(httpx.ConnectError):
        httpx.get(serve.url + "/healthz", trust_env=False)


def test_server_killed_repeatedly_mid_ingest_loses_and_doubles_nothing(serve: ServeProcess) -> None:
    """The issue's durability figure, bounded: SIGKILL the server several times while an agent keeps
    calling (fail_open) and the emitter keeps sending and retrying. A batch the server committed but
    could not acknowledge is sent again and absorbed as a duplicate; what outlived the retries is spilled
    and replayed. At the end, stored ids == produced ids."""
    serve.start()
    key = serve.keys["acme:agent"]
    agent, session = http_agent(serve.url, key, fail_open=True)
    emitter = _emitter_for(serve.url)
    produced: list[str] = []
    _record_ids(emitter, produced)
    emitter.retry_delays = (0.2, 0.5, 1.0)
    emitter.batch_size = 20
    stop = threading.Event()
    calls = 0

    def run_agent() -> None:
        nonlocal calls
        while not stop.is_set():
            agent.lookup(f"q{calls}")
            calls += 1
            time.sleep(0.002)

    worker = threading.Thread(target=run_agent)
    worker.start()
    try:
        for _ in range(6):
            time.sleep(0.4)
            serve.kill()
            time.sleep(0.2)
            serve.start()
    finally:
        stop.set()
        worker.join(30)
    assert thoth_nb.flush(timeout=30)
    assert emitter.failures > 0  # the kills did hit the event stream
    _runtime.reset()  # the next start replays whatever was spilled
    http_agent(serve.url, key, session_id=session)
    assert thoth_nb.flush(timeout=30)
    stored = serve.events(session_id=session)
    ids = [e["event_id"] for e in stored]
    assert calls > 20 and len(produced) == 2 * calls
    assert len(ids) == len(set(ids)), "duplicates in the store"
    assert sorted(ids) == sorted(produced), (len(ids), len(produced))
