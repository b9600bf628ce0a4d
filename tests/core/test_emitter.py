"""D7: events are batched off the calling thread, retried, spilled, replayed exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import thoth_nb
from thoth_nb._emitter import Emitter
from thoth_nb._runtime import local_store

sys.path.insert(0, str(Path(__file__).parent))
from _sinks import FlakySink


def make_events(n: int, tenant: str = "t") -> list[dict[str, Any]]:
    session = str(uuid.uuid4())
    return [
        {"event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "user_id": "u",
         "agent_id": "a", "tool_name": "x", "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z",
         "metadata": {}}
        for _ in range(n)
    ]


def test_every_event_of_a_run_lands_after_flush(cfg: dict[str, Any]) -> None:
    @thoth_nb.governed(**cfg)
    def search(q: str) -> str:
        return q

    for i in range(1500):
        search(f"q{i}")
    assert thoth_nb.flush(timeout=30)
    events = local_store().events("t")
    assert len(events) == 3000 and len({e["event_id"] for e in events}) == 3000
    pre = events[0]
    for field in ("event_id", "tenant_id", "session_id", "user_id", "agent_id", "tool_name", "event_type",
                  "source_type", "metadata", "approved_scope", "session_tool_calls", "enforcement_mode",
                  "occurred_at", "content", "hostname", "endpoint_id"):
        assert field in pre, field
    assert pre["content"] == "tool invocation requested" and pre["source_type"] == "agent_tool_call"
    assert pre["metadata"]["sdk_name"] == "thoth_nb" and pre["metadata"]["event_phase"] == "pre"
    post = events[1]
    assert post["metadata"]["authorization_decision"] == "ALLOW" and post["metadata"]["duration_ms"] >= 0
    assert post["metadata"]["result_size_bytes"] == 2
    # the server-side chain: each session's events are linked by SHA-256
    assert events[1]["previous_hash"] == events[0]["hash"] and events[1]["chain_index"] == 1


def test_failed_sink_spills_and_next_start_replays_exactly_once(tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "sink.db", failing=True)
    emitter = Emitter(sink, retry_delays=(0.01, 0.01, 0.01), spill_dir=tmp_path / "spill")
    events = make_events(1200)
    for event in events:
        emitter.emit(event)
    assert emitter.flush(timeout=10)
    assert emitter.spilled == 1200 and emitter.sent == 0 and sink.attempts >= 4
    assert sink.store.count_events("t") == 0
    emitter.shutdown()

    sink.failing = False
    again = Emitter(sink, spill_dir=tmp_path / "spill")  # "the next start"
    assert again.replayed == 1200
    assert sink.store.count_events("t") == 1200
    assert not list((tmp_path / "spill").glob("*.jsonl"))
    third = Emitter(sink, spill_dir=tmp_path / "spill")
    assert third.replayed == 0
    # a replay that does reach the sink twice is absorbed by idempotent ingest
    assert sink.store.ingest_events(events).duplicates == 1200
    assert sink.store.count_events("t") == 1200


def test_killed_process_events_are_replayed(tmp_path: Path) -> None:
    """A process whose sink is down spills, then dies hard; the next process replays its events."""
    script = textwrap.dedent(
        f"""
        import os, sys, uuid
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _sinks import FlakySink
        from thoth_nb._emitter import Emitter
        from pathlib import Path
        sink = FlakySink(Path({str(tmp_path / "sink.db")!r}), failing=True)
        emitter = Emitter(sink, retry_delays=(0.01,), spill_dir=Path({str(tmp_path / "spill")!r}))
        session = str(uuid.uuid4())
        for i in range(500):
            emitter.emit({{"event_id": f"t:{{uuid.uuid4()}}", "tenant_id": "t", "session_id": session,
                          "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z"}})
        emitter.flush(10)
        os._exit(9)  # no atexit, no shutdown: a killed kernel
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    sink = FlakySink(tmp_path / "sink.db")
    assert sink.store.count_events("t") == 0
    emitter = Emitter(sink, spill_dir=tmp_path / "spill")
    assert emitter.replayed == 500 and sink.store.count_events("t") == 500


def test_drops_are_counted_and_shown(tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "sink.db")
    emitter = Emitter(sink, max_queue=10, interval=60, spill_dir=tmp_path / "spill")
    emitter._thread = object()  # type: ignore[assignment]  # a stalled thread: nothing drains
    for event in make_events(25):
        emitter.emit(event)
    assert emitter.dropped == 15 and emitter.queue_depth == 10
    assert emitter.stats()["dropped"] == 15
    emitter._thread = None
    assert emitter.flush(timeout=10) and sink.store.count_events("t") == 10
    assert thoth_nb.status()["dropped_events"] >= 15


def test_shutdown_spills_what_it_cannot_send(tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "sink.db", failing=True)
    emitter = Emitter(sink, retry_delays=(0.01,), spill_dir=tmp_path / "spill")
    for event in make_events(50):
        emitter.emit(event)
    emitter.shutdown(timeout=5)
    lines = (tmp_path / "spill" / "flaky-test-sink.jsonl").read_text().splitlines()
    assert len(lines) == 50


def test_emit_does_not_block_when_sink_is_slow(tmp_path: Path) -> None:
    class Slow(FlakySink):
        def send_events(self, events: Any) -> None:
            time.sleep(0.5)
            super().send_events(events)

    emitter = Emitter(Slow(tmp_path / "s.db"), spill_dir=tmp_path / "spill")
    started = time.perf_counter()
    for event in make_events(2000):
        emitter.emit(event)
    assert time.perf_counter() - started < 0.5
    assert emitter.flush(timeout=20)


def test_a_steady_trickle_is_sent_once_per_interval_not_batch_after_batch(tmp_path: Path) -> None:
    """Events produced steadily while a batch is in flight wait for the next interval: each send taking
    10 ms used to be followed at once by the next with the few events queued meanwhile."""
    sizes: list[int] = []

    class Slowish(FlakySink):
        def send_events(self, events: Any) -> None:
            sizes.append(len(events))
            time.sleep(0.01)
            super().send_events(events)

    emitter = Emitter(Slowish(tmp_path / "s.db"), spill_dir=tmp_path / "spill", interval=0.1)
    events = make_events(600)
    started = time.monotonic()
    for index, event in enumerate(events):  # ~600 events over ~0.6 s, one every ms
        emitter.emit(event)
        while time.monotonic() < started + (index + 1) * 0.001:
            time.sleep(0.0005)
    elapsed = time.monotonic() - started
    assert emitter.flush(timeout=20)
    assert sum(sizes) == 600
    # one batch per 0.1 s interval: about 7 in 0.6 s; back to back (each send takes 10 ms) it was ~50
    assert len(sizes) <= elapsed / 0.1 + 5, (elapsed, sizes)


def test_an_idle_emitter_thread_sleeps(tmp_path: Path) -> None:
    """Between batches the thread waits on its event, not in a loop: once the queue is empty it must not
    spin on an already-due interval."""
    emitter = Emitter(FlakySink(tmp_path / "s.db"), spill_dir=tmp_path / "spill", interval=0.05)
    for event in make_events(10):
        emitter.emit(event)
    assert emitter.flush(timeout=10)
    thread = emitter._thread
    assert thread is not None and thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    before = time.clock_gettime(clock)
    time.sleep(0.5)
    assert time.clock_gettime(clock) - before < 0.1  # a spinning thread uses ~0.5 s of CPU here
    emitter.shutdown()


def test_a_full_batch_is_sent_without_waiting_for_the_interval(tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "s.db")
    emitter = Emitter(sink, spill_dir=tmp_path / "spill", interval=30.0, batch_size=100)
    for event in make_events(100):
        emitter.emit(event)
    deadline = time.monotonic() + 10
    while sink.attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.attempts == 1  # the 100th event woke the thread; the 30 s interval did not have to pass
    emitter.shutdown()


def test_fork_child_gets_a_fresh_queue(tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "sink.db")
    emitter = Emitter(sink, spill_dir=tmp_path / "spill")
    emitter.emit(make_events(1)[0])
    pid = os.fork()
    if pid == 0:  # child: its emitter must work on its own
        try:
            emitter.emit(make_events(1, "child")[0])
            ok = emitter.flush(10) and FlakySink(tmp_path / "sink.db").store.count_events("child") == 1
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert emitter.flush(10) and sink.store.count_events("t") == 1
