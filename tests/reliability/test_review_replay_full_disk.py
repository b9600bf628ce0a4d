"""A replay that fails (sink still down) on a full disk: the events were safe in the spill file, so the
claimed file must stay for the next start, not be deleted because the re-spill found no space."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from _faults import ListSink, make_events

from thoth_nb._emitter import Emitter
from thoth_nb._transports.base import Transport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("256k")


def _ids_on_disk(folder: Path) -> set[str]:
    found: set[str] = set()
    for part in folder.iterdir():
        if part.name.startswith("list-test-sink."):
            found.update(json.loads(line)["event_id"] for line in part.read_text().splitlines() if line.strip())
    return found


def test_a_failed_replay_on_a_full_disk_keeps_the_spilled_events(small_disk: Path) -> None:
    spill = small_disk / "spill"
    spill.mkdir()
    events = make_events(50, pad=200)
    (spill / "list-test-sink.jsonl").write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk to the last block
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    emitter = Emitter(cast(Transport, ListSink(failing=True)), spill_dir=spill)
    assert emitter.replayed == 0
    assert _ids_on_disk(spill) == {e["event_id"] for e in events}
    assert emitter.dropped == 0  # nothing lost, so nothing counted as dropped
