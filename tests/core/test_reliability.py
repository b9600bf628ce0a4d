"""Deliberate faults in the core: nothing let through, nothing lost silently."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import thoth_nb
from thoth_nb import ThothConfigError, ThothPolicyViolation
from thoth_nb._emitter import Emitter
from thoth_nb._runtime import local_store
from thoth_nb._transports.http import HTTPTransport
from thoth_nb.testing import ScriptedEnforcer

sys.path.insert(0, str(Path(__file__).parent))
from _sinks import FlakySink
from test_emitter import make_events


def test_unwritable_home_fails_at_instrument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("a file where the folder should be")
        home = blocker / "home"
    else:  # pragma: no cover - non-root developers
        home = tmp_path / "ro"
        home.mkdir(mode=0o500)
    from thoth_nb import _runtime

    _runtime.reset()
    monkeypatch.setenv("THOTH_HOME", str(home))
    with pytest.raises(ThothConfigError, match="Set THOTH_HOME to a writable folder"):
        thoth_nb.instrument([lambda q: q], agent_id="a", tenant_id="t", approved_scope=["x"])


def test_locked_store_blocks_instead_of_hanging(cfg: dict[str, Any]) -> None:
    """Another process holds the write lock: a decision that must be recorded fails closed, quickly."""
    def read_file(path: str) -> str:
        return path

    tool = thoth_nb.governed(**cfg)(read_file)
    tool("/home/ok")  # opens the store
    store = local_store()
    store._db.execute("PRAGMA busy_timeout=200")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(ThothPolicyViolation, match=r"enforcer unavailable.*locked"):
            tool("/etc/passwd")  # a BLOCK must write its violation: the store is locked
        assert time.monotonic() - started < 5
        assert tool("/home/still-ok") == "/home/still-ok"  # ALLOW needs no write
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert thoth_nb.flush(timeout=20)
    assert [e["event_type"] for e in store.events("t")].count("TOOL_CALL_BLOCK") == 1


def test_spill_to_a_full_or_broken_disk_counts_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "spill"
    broken.write_text("not a directory: mkdir fails like a full disk")
    emitter = Emitter(FlakySink(tmp_path / "s.db", failing=True), retry_delays=(0.01,), spill_dir=broken)
    for event in make_events(20):
        emitter.emit(event)
    assert emitter.flush(10)
    assert emitter.dropped == 20 and emitter.spilled == 0
    assert "they are lost and counted as dropped" in caplog.text


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.6"})
        return httpx.Response(202, json={"accepted": 1})

    sink = HTTPTransport("http://sink.test", transport=httpx.MockTransport(handler))
    emitter = Emitter(sink, retry_delays=(0.05, 0.05), spill_dir=tmp_path)
    emitter.emit(make_events(1)[0])
    assert emitter.flush(10) and emitter.sent == 1
    assert calls[1] - calls[0] >= 0.55


def test_client_errors_from_the_sink_are_not_retried(tmp_path: Path) -> None:
    enforcer = ScriptedEnforcer()
    enforcer.event_status = 400
    sink = HTTPTransport("http://sink.test", transport=enforcer.transport())
    emitter = Emitter(sink, retry_delays=(0.01,), spill_dir=tmp_path)
    for event in make_events(3):
        emitter.emit(event)
    assert emitter.flush(10)
    assert emitter.dropped == 3 and emitter.spilled == 0
    assert len([r for r in enforcer.requests if r.url.path == "/v1/events/batch"]) == 1


def test_many_threads_and_tasks(cfg: dict[str, Any]) -> None:
    def read_file(path: str) -> str:
        return path

    sync_tool = thoth_nb.governed(**cfg)(read_file)

    async def fetch(path: str) -> str:
        await asyncio.sleep(0)
        return path

    async_tool = thoth_nb.governed(**cfg)(fetch)
    errors: list[BaseException] = []
    blocked = 0
    lock = threading.Lock()

    def worker(n: int) -> None:
        nonlocal blocked
        for i in range(100):
            try:
                path = "/etc/x" if i % 10 == 0 else f"/home/{n}/{i}"
                assert sync_tool(path) == path
            except ThothPolicyViolation:
                with lock:
                    blocked += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()

    async def many() -> list[Any]:
        return await asyncio.gather(*(async_tool(f"/home/task/{i}") for i in range(200)), return_exceptions=True)

    results = asyncio.run(many())
    for t in threads:
        t.join(timeout=60)
    assert not errors and blocked == 80
    assert all(isinstance(r, str) for r in results)
    assert thoth_nb.flush(timeout=60)
    events = local_store().events("t")
    counts: dict[str, int] = {}
    for e in events:
        counts[e["event_type"]] = counts.get(e["event_type"], 0) + 1
    assert counts == {"TOOL_CALL_PRE": 1000, "TOOL_CALL_POST": 920, "TOOL_CALL_BLOCK": 80}
    assert len({e["event_id"] for e in events}) == 2000
