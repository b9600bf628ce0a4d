"""Disk faults: a full spill disk (a real 64 KiB tmpfs when mounting is allowed), an unwritable spill
folder and an unwritable $THOTH_HOME. The agent never crashes; what cannot be kept is counted as
dropped, exactly, and shown in `thoth_nb.status()` and `%thoth status`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from _faults import ListSink, make_events

import thoth_nb
from thoth_nb._emitter import Emitter
from thoth_nb._transports.base import Transport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tiny_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("64k")


def _emitter(sink: ListSink, spill_dir: Path) -> Emitter:
    return Emitter(cast(Transport, sink), retry_delays=(0.01,), batch_size=100, spill_dir=spill_dir)


def test_full_spill_disk_drops_exactly_and_keeps_the_file_replayable(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:  # leave ~16 KiB free
        fh.write(b"\0" * (48 * 1024))
    sink = ListSink(failing=True)
    emitter = _emitter(sink, tiny_disk)

    first = make_events(100, pad=300)  # ~40 KiB: the disk fills in the middle of the batch
    for event in first:
        emitter.emit(event)
    assert emitter.flush(10)
    assert (emitter.dropped, emitter.spilled) == (100, 0)
    spill = tiny_disk / "list-test-sink.jsonl"
    assert not spill.exists() or spill.read_bytes() == b"", "a half-written batch was left in the spill file"

    filler.unlink()  # space again: the next batch spills whole
    second = make_events(100, pad=300)
    for event in second:
        emitter.emit(event)
    assert emitter.flush(10)
    assert (emitter.dropped, emitter.spilled) == (100, 100)
    assert all(json.loads(line) for line in spill.read_bytes().splitlines())
    status = thoth_nb.status()
    assert status["dropped_events"] >= 100
    assert any(e["dropped"] == 100 and e["spilled"] == 100 for e in status["emitters"])

    sink.failing = False
    again = _emitter(sink, tiny_disk)  # the next start replays exactly what was counted as spilled
    assert again.replayed == 100
    assert sink.ids == [e["event_id"] for e in second]


def test_unwritable_spill_folder_counts_drops_and_the_agent_runs_on(tmp_path: Path) -> None:
    """A spill folder the process may not write to (a read-only mount as root is simulated by a file in
    the way): the governed calls still return, nothing raises, drops are counted."""
    blocked = tmp_path / "spill"
    blocked.write_text("a file where the spill folder should be")
    sink = ListSink(failing=True)
    emitter = _emitter(sink, blocked)
    for event in make_events(30):
        emitter.emit(event)
    assert emitter.flush(10)
    emitter.shutdown(1)
    assert (emitter.dropped, emitter.spilled) == (30, 0)
    assert "dropped" not in (emitter.last_error or "")  # last_error is the sink's, the drop is a counter


def test_dropped_events_reach_thoth_status_magic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: an HTTP enforcer that is down, fail_open, a spill folder that cannot be written:
    every call runs, and `%thoth status` reports the dropped events."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    home = Path(os.environ["THOTH_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "spill").write_text("not a folder")  # spill cannot be created under $THOTH_HOME

    def lookup(q: str) -> str:
        return q

    tools = thoth_nb.instrument([lookup], api_url="http://127.0.0.1:9", agent_id="a", tenant_id="t",
                                approved_scope=["lookup"], fail_open=True, tool_inventory=False)
    from thoth_nb._runtime import _emitters

    for emitter in _emitters.values():
        emitter.retry_delays = (0.01,)
    before = thoth_nb.status()["dropped_events"]  # the counter is per process: earlier emitters count too
    assert [tools[0](f"q{i}") for i in range(5)] == [f"q{i}" for i in range(5)]
    assert thoth_nb.flush(timeout=10)
    assert thoth_nb.status()["dropped_events"] - before == 10

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance(config=config)
    try:
        ip.run_line_magic("load_ext", "thoth_nb")
        report: Any = ip.run_line_magic("thoth", "status")
        assert report.dropped == before + 10
        assert f"dropped events {before + 10}" in repr(report) and "dropped 10," in repr(report)
        assert f"dropped events {before + 10}" in report._repr_html_()
    finally:
        from thoth_nb.notebook import state, unload_ipython_extension

        if state.shell is ip:
            unload_ipython_extension(ip)
        state.unloaded = None
        ip.history_manager.end_session()
        InteractiveShell.clear_instance()


def test_unwritable_home_is_a_clear_error_for_embedded_and_harmless_for_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded needs a store: instrument() says what to fix. With a server, the home only holds spill
    files: calls run, and undeliverable events are counted as dropped, never raised."""
    from thoth_nb import ThothConfigError, _runtime

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    _runtime.reset()
    monkeypatch.setenv("THOTH_HOME", str(blocker / "home"))

    def lookup(q: str) -> str:
        return q

    with pytest.raises(ThothConfigError, match="THOTH_HOME"):
        thoth_nb.instrument([lookup], agent_id="a", tenant_id="t", approved_scope=["lookup"])
    tools = thoth_nb.instrument([lookup], api_url="http://127.0.0.1:9", agent_id="a", tenant_id="t",
                                approved_scope=["lookup"], fail_open=True, tool_inventory=False)
    for emitter in _runtime._emitters.values():
        emitter.retry_delays = (0.01,)
    before = thoth_nb.status()["dropped_events"]
    assert tools[0]("q") == "q"
    assert thoth_nb.flush(timeout=10)
    assert thoth_nb.status()["dropped_events"] - before == 2
    thoth_nb.shutdown(1)  # shutdown with nowhere to spill must not raise either
