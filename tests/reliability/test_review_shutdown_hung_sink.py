"""Interpreter shutdown while the sink hangs (a server that accepts and never answers): the batch the
emitter thread is sending dies with that daemon thread, so `shutdown()` must spill it, not lose it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from _sinks import FlakySink

from thoth_nb._emitter import Emitter


class HungSink(FlakySink):
    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.entered = threading.Event()
        self.release = threading.Event()

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.entered.set()
        self.release.wait(30)
        super().send_events(events)


def test_a_batch_stuck_in_a_hung_sink_is_spilled_at_shutdown(tmp_path: Path) -> None:
    sink = HungSink(tmp_path / "sink.db")
    spill = tmp_path / "spill"
    emitter = Emitter(sink, spill_dir=spill, retry_delays=(0.01,))
    try:
        for i in range(20):
            emitter.emit({"event_id": f"t:{i}", "tenant_id": "t", "session_id": "s", "agent_id": "a",
                          "tool_name": "x", "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z"})
        assert sink.entered.wait(10)
        emitter.shutdown(timeout=0.2)
        lines = (spill / "flaky-test-sink.jsonl").read_text().splitlines() if spill.exists() else []
        assert len(lines) == 20 and emitter.spilled == 20
    finally:
        sink.release.set()
    # the send did finish after all: the replay is a duplicate by event_id, counted once
    assert emitter._thread is None
    for _ in range(100):
        if sink.store.count_events("t") == 20:
            break
        threading.Event().wait(0.05)
    replayer = Emitter(FlakySink(tmp_path / "sink.db"), spill_dir=spill)
    assert replayer.replayed == 20 and replayer.transport.store.count_events("t") == 20  # type: ignore[attr-defined]
