"""Spill files under stress: a replay cut short by a killed process, and lines that cannot be read."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from _faults import ListSink, make_events

from thoth_nb._emitter import Emitter
from thoth_nb._transports.base import Transport


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_replay_killed_midway_is_picked_up_by_the_next_start(tmp_path: Path) -> None:
    """The replaying process claimed the spill file (renamed it) and died before it finished: the claimed
    file must not be orphaned; the next start replays it (ingest is idempotent, so a partial earlier
    delivery is harmless)."""
    events = make_events(40)
    orphan = tmp_path / f"list-test-sink.replay-{_dead_pid()}-123"
    orphan.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    live = tmp_path / f"list-test-sink.replay-{os.getpid()}-456"  # this process's own claim: left alone
    live.write_text("")
    sink = ListSink(failing=False)
    emitter = Emitter(cast(Transport, sink), spill_dir=tmp_path)
    assert emitter.replayed == 40 and sink.ids == [e["event_id"] for e in events]
    assert not orphan.exists() and live.exists()
    assert Emitter(cast(Transport, sink), spill_dir=tmp_path).replayed == 0


def test_unreadable_spill_lines_are_counted_not_silently_skipped(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    events = make_events(5)
    lines = [json.dumps(e).encode() for e in events]
    (tmp_path / "list-test-sink.jsonl").write_bytes(b"\n".join([*lines[:2], b'{"event_id": "t:half', *lines[2:]])
                                                    + b"\n")
    sink = ListSink(failing=False)
    caplog.set_level(logging.WARNING, logger="thoth_nb")
    emitter = Emitter(cast(Transport, sink), spill_dir=tmp_path)
    assert emitter.replayed == 5 and emitter.dropped == 1
    assert "could not be read" in caplog.text
