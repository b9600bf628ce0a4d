"""`%load_ext thoth_nb` gets the first big `%thoth events` ready in the background (issue 5's first call),
and leaves a small store, or THOTH_WARM_READER=0, alone."""

from __future__ import annotations

import os
import threading

import pytest
from nbshell import Shell

pd = pytest.importorskip("pandas")

import thoth_nb  # noqa: E402
from thoth_nb import notebook  # noqa: E402
from thoth_nb.analytics import frames  # noqa: E402


def _record() -> None:
    @thoth_nb.governed(agent_id="research", tenant_id="local", approved_scope=["search"])
    def search(q: str) -> str:
        return q

    for i in range(12):
        search(f"q{i}")
    assert thoth_nb.flush()


def _join_warm_thread() -> bool:
    found = [t for t in threading.enumerate() if t.name == "thoth-nb-warm-frames"]
    for thread in found:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return bool(found)


def test_load_ext_starts_the_reader_for_a_big_store(shell: Shell, reader: frames._ReaderProcess,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="thoth_nb")
    _record()
    expected = thoth_nb.events(tool_args=False)
    monkeypatch.setattr(notebook, "_WARM_FROM_BYTES", 0)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    shell.magic("load_ext thoth_nb")
    assert _join_warm_thread()
    pid = reader.pid
    assert pid not in (None, os.getpid()) and reader._pending == 1, caplog.text
    with reader._lock:  # the user is slower than the child: its prefetch is done before the first read
        assert reader._skip_warm_replies(reader._proc) == "ok"
    frame = shell.magic("thoth events")
    assert reader.pid == pid and reader.last_reply["reused"] == 24, reader.last_reply
    assert "tool_args" in frame  # a small frame: arguments loaded as ever
    pd.testing.assert_frame_equal(frame.drop(columns=list(frames._ARG_FIELDS)), expected, check_categorical=False)


def test_load_ext_leaves_a_small_store_alone(shell: Shell, reader: frames._ReaderProcess,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _record()
    shell.magic("load_ext thoth_nb")  # the store file is far under _WARM_FROM_BYTES
    assert not _join_warm_thread() and reader.pid is None
    shell.magic("unload_ext thoth_nb")
    monkeypatch.setattr(notebook, "_WARM_FROM_BYTES", 0)  # big enough a file, too few rows to read in a child
    shell.magic("load_ext thoth_nb")
    _join_warm_thread()
    assert reader.pid is None
    shell.magic("unload_ext thoth_nb")
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_WARM_READER", "0")
    shell.magic("load_ext thoth_nb")
    assert not _join_warm_thread() and reader.pid is None
