"""Warming the reader child before the first big `events()` (issue 5's first call): the warm-up changes
nothing in the frame, never runs ADBC in the process that holds the store open, is best-effort (a failed
or killed warm-up still reads right) and does nothing where there is nothing to warm."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

pd = pytest.importorskip("pandas")

from _fresh_frames import record  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb.analytics import frames  # noqa: E402


@pytest.fixture
def reader(reader: frames._ReaderProcess, monkeypatch: pytest.MonkeyPatch) -> frames._ReaderProcess:
    """tests/conftest.py's reader child, with the disk cache off: these tests are about the child
    (test_frame_disk_cache: the cache)."""
    monkeypatch.setenv("THOTH_FRAME_CACHE", "0")
    return reader


def _no_adbc_here(monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb.analytics import _arrow_reader

    def refuse(*_: Any) -> Any:
        raise AssertionError("ADBC ran in the process that holds the store open")

    monkeypatch.setattr(_arrow_reader, "_connect", refuse)


def _drain(reader: frames._ReaderProcess) -> None:
    """Wait until the child has answered its queued warm jobs (what the next read would do first)."""
    with reader._lock:
        assert reader._skip_warm_replies(reader._proc) == "ok"


def test_a_warmed_first_read_is_the_same_frame(reader: frames._ReaderProcess,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    record(15)
    expected = thoth_nb.events(tenant_id="acme", tool_args=False)  # sqlite3, in this process
    assert reader.pid is None
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_ADBC", "1")  # even when asked for: never in-process for an open store
    _no_adbc_here(monkeypatch)
    assert frames.warm_reader() is True
    pid = reader.pid
    assert pid not in (None, os.getpid()) and reader._pending == 1
    df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert reader.pid == pid and reader._pending == 0  # the warmed child read it
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    assert set(df["agent_id"]) == {"research"}  # the other tenant's rows stay out
    assert str(df["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert all(isinstance(df[c].dtype, pd.CategoricalDtype) for c in frames.EVENT_CATEGORIES)
    assert "tool_args" not in df.columns and df.thoth.with_args()["tool_args"].iloc[0] == {"q": "q0"}


def test_a_read_after_a_finished_warm_up_and_after_two_warm_ups(reader: frames._ReaderProcess,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    record(15)
    expected = thoth_nb.events(tenant_id="other", tool_args=False)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    assert frames.warm_reader() and frames.warm_reader() and reader._pending == 2
    _drain(reader)
    assert frames.warm_reader()
    df = thoth_nb.events(tenant_id="other", tool_args=False)
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    assert reader._pending == 0


def test_a_failing_warm_job_does_not_disturb_the_read(reader: frames._ReaderProcess,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from thoth_nb import _runtime

    record(15)
    expected = thoth_nb.events(tenant_id="acme", tool_args=False)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    path = _runtime.local_store().path
    assert reader.warm(path, [("SELECT nothing FROM no_such_table", [])])
    with caplog.at_level("WARNING", logger="thoth_nb"):
        df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert "fast read failed" not in caplog.text  # the child read it; its warm-up error was only skipped
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)


def test_a_reader_killed_after_warming_is_started_again(reader: frames._ReaderProcess,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    record(15)
    expected = thoth_nb.events(tenant_id="acme", tool_args=False)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    assert frames.warm_reader()
    pid = reader.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert reader.pid not in (None, pid) and reader._pending == 0
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)


def test_nothing_to_warm(reader: frames._ReaderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    assert frames.warm_reader() is False  # no store file yet
    record(15)
    assert frames.warm_reader() is False  # far fewer rows than a big read
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_WARM_READER", "0")
    assert frames.warm_reader() is False
    monkeypatch.delenv("THOTH_WARM_READER")
    monkeypatch.setenv("THOTH_API_URL", "http://127.0.0.1:9")  # events() would ask the server
    assert frames.warm_reader() is False
    assert reader.pid is None
    monkeypatch.delenv("THOTH_API_URL")
    monkeypatch.setattr(frames, "_adbc_importable", lambda: False)  # no ADBC: events() reads with sqlite3
    assert frames.warm_reader() is False
    assert reader.pid is None


def test_warming_waits_for_no_read(reader: frames._ReaderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a read holds the child, a warm-up gives up at once instead of queueing behind it."""
    record(15)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    with reader._lock:
        assert frames.warm_reader() is False
    assert reader.pid is None


def test_the_child_knows_when_a_job_waits_behind_a_warm_up() -> None:
    """`jobs()` tells the child a read is already queued (so it skips the warm-up) and when none is."""
    pytest.importorskip("pyarrow")
    from thoth_nb.analytics import _arrow_reader

    read_end, write_end = os.pipe()
    try:
        lines = _arrow_reader.jobs(read_end)
        os.write(write_end, b'{"warm": true}\n{"read": 1}\n')
        assert next(lines) == (b'{"warm": true}', True)
        assert next(lines) == (b'{"read": 1}', False)
        os.write(write_end, b'{"warm": true}\n')
        assert next(lines) == (b'{"warm": true}', False)
        os.write(write_end, b'{"warm"')  # a job arriving in pieces is one line
        os.write(write_end, b': false}\n{"read"')
        assert next(lines) == (b'{"warm": false}', True)
        os.write(write_end, b': 2}\n')
        assert next(lines) == (b'{"read": 2}', False)
    finally:
        os.close(write_end)
    assert list(lines) == []
    os.close(read_end)


# --- the reader child's snapshot of its last big read ---------------------------------------------


def _sqlite3_frame(monkeypatch: pytest.MonkeyPatch, **filters: Any) -> Any:
    """The same query through the stdlib sqlite3 path in this process (no child, no snapshot)."""
    with monkeypatch.context() as m:
        m.setattr(frames, "_PARALLEL_FROM", 10**12)
        return thoth_nb.events(tool_args=False, **filters)


def _child_frame(reader: frames._ReaderProcess, **filters: Any) -> tuple[Any, int]:
    df = thoth_nb.events(tool_args=False, **filters)
    assert reader.last_reply.get("ok"), reader.last_reply
    return df, int(reader.last_reply["reused"])


def test_the_next_read_reuses_the_last_one_and_reads_only_new_rows(reader: frames._ReaderProcess,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    record(10)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    first, reused = _child_frame(reader, tenant_id="acme")
    assert reused == 0 and len(first) == 20
    again, reused = _child_frame(reader, tenant_id="acme")
    assert reused == 20
    pd.testing.assert_frame_equal(again, first)
    record(5)  # new rows of both tenants, with a blocked call's violation among them
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        thoth_nb.governed(agent_id="research", tenant_id="acme", approved_scope=["search"])(_blocked)("x")
    assert thoth_nb.flush()
    grown, reused = _child_frame(reader, tenant_id="acme")
    assert reused == 20 and len(grown) == 32
    pd.testing.assert_frame_equal(grown, _sqlite3_frame(monkeypatch, tenant_id="acme"), check_categorical=False)
    assert grown["violation_id"].notna().sum() == 1


def _blocked(q: str) -> str:
    return q


def test_another_tenant_or_filter_never_gets_the_snapshot(reader: frames._ReaderProcess,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    record(10)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    acme, _ = _child_frame(reader, tenant_id="acme")
    other, reused = _child_frame(reader, tenant_id="other")
    assert reused == 0 and set(other["agent_id"]) == {"ops"} and not set(other["event_id"]) & set(acme["event_id"])
    pd.testing.assert_frame_equal(other, _sqlite3_frame(monkeypatch, tenant_id="other"), check_categorical=False)
    _child_frame(reader, tenant_id="acme")
    filters: dict[str, Any]
    for filters in ({"agent_id": "research"}, {"event_type": "TOOL_CALL_PRE"}, {"since": "2000-01-01T00:00:00Z"}):
        df, reused = _child_frame(reader, tenant_id="acme", **filters)
        assert reused == 0 and len(df)
        pd.testing.assert_frame_equal(df, _sqlite3_frame(monkeypatch, tenant_id="acme", **filters),
                                      check_categorical=False)
        _child_frame(reader, tenant_id="acme")
    df, reused = _child_frame(reader, tenant_id="acme", agent_id="ops")  # the other tenant's agent
    assert reused == 0 and len(df) == 0 and list(df.columns) == list(acme.columns)


def test_a_deleted_row_throws_the_snapshot_away(reader: frames._ReaderProcess,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb import _runtime

    record(10)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    before, _ = _child_frame(reader, tenant_id="acme")
    victim = int(before["seq"].iloc[5])
    with _runtime.local_store().transaction() as db:  # what retention does, one row in the middle
        db.execute("DELETE FROM events WHERE seq = ?", (victim,))
    after, reused = _child_frame(reader, tenant_id="acme")
    assert reused == 0 and victim not in set(after["seq"]) and len(after) == len(before) - 1
    pd.testing.assert_frame_equal(after, _sqlite3_frame(monkeypatch, tenant_id="acme"), check_categorical=False)
    record(2)  # a deletion of the other tenant's rows leaves acme's snapshot valid, and exact
    with _runtime.local_store().transaction() as db:
        db.execute("DELETE FROM events WHERE tenant_id = 'other'")
    again, reused = _child_frame(reader, tenant_id="acme")
    assert reused == len(after)
    pd.testing.assert_frame_equal(again, _sqlite3_frame(monkeypatch, tenant_id="acme"), check_categorical=False)


def test_a_warm_up_prefetches_the_first_frame(reader: frames._ReaderProcess,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    record(10)
    monkeypatch.setenv("THOTH_TENANT_ID", "acme")
    expected = _sqlite3_frame(monkeypatch)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    assert frames.warm_reader()
    _drain(reader)
    df, reused = _child_frame(reader)
    assert reused == 20
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    monkeypatch.setenv("THOTH_TENANT_ID", "other")  # the prefetch was acme's: other reads afresh
    df, reused = _child_frame(reader)
    assert reused == 0 and set(df["agent_id"]) == {"ops"}


def test_a_pages_only_warm_up_keeps_no_snapshot(reader: frames._ReaderProcess,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    record(10)
    monkeypatch.setenv("THOTH_TENANT_ID", "acme")
    expected = _sqlite3_frame(monkeypatch)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_WARM_READER", "pages")
    assert frames.warm_reader()
    _drain(reader)
    df, reused = _child_frame(reader)
    assert reused == 0
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)


def test_a_store_the_mark_cannot_read_is_read_in_full_after_any_commit(reader: frames._ReaderProcess,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the mark, only an untouched file (PRAGMA data_version of the child's connection unchanged:
    no connection of any process committed) keeps the snapshot; any commit means a full read."""
    record(10)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setattr(frames, "_MARK_SQL", "SELECT 1 FROM no_such_table WHERE ?1 AND ?2 AND ?3")
    first, reused = _child_frame(reader, tenant_id="acme")
    assert reused == 0
    again, reused = _child_frame(reader, tenant_id="acme")  # nothing committed since: the same rows
    assert reused == len(first)
    pd.testing.assert_frame_equal(again, first)
    for change in ("record", "delete"):
        if change == "record":
            record(1)
        else:
            from thoth_nb import _runtime

            with _runtime.local_store().transaction() as db:  # a row in the middle: max(seq) stays
                db.execute("DELETE FROM events WHERE seq = (SELECT min(seq) + 3 FROM events)")
        df, reused = _child_frame(reader, tenant_id="acme")
        assert reused == 0, change
        pd.testing.assert_frame_equal(df, _sqlite3_frame(monkeypatch, tenant_id="acme"), check_categorical=False)
