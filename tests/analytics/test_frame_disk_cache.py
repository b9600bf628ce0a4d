"""The disk cache of big `events()` reads (`_frame_cache`): a fresh process maps the file an earlier one
wrote and gets the same frame; rows added since are read on top; a deleted row, another tenant, other
filters, another key or a damaged file never serve cached rows; THOTH_FRAME_CACHE=0 writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from _fresh_frames import fresh_read, record  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb.analytics import _frame_cache, frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reader(reader: frames._ReaderProcess, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Big reads from 2 rows on, through tests/conftest.py's reader child (never ADBC in this process);
    the list of the child's reads."""
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    from thoth_nb.analytics import _arrow_reader

    def refuse(*_: Any) -> Any:
        raise AssertionError("ADBC ran in the process that holds the store open")

    monkeypatch.setattr(_arrow_reader, "_connect", refuse)
    reads: list[Any] = []
    real = reader.read

    def spy(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, "read", spy)
    return reads


def _uncached(monkeypatch: pytest.MonkeyPatch, **filters: Any) -> Any:
    with monkeypatch.context() as m:
        m.setenv("THOTH_FRAME_CACHE", "0")
        m.setattr(frames, "_PARALLEL_FROM", 10**9)  # stdlib sqlite3, in this process
        return thoth_nb.events(tool_args=False, **filters)


def _same(df: Any, expected: Any) -> None:
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    assert df.dtypes.to_dict() == expected.dtypes.to_dict()
    assert str(df["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert all(isinstance(df[c].dtype, pd.CategoricalDtype) for c in frames.EVENT_CATEGORIES)
    assert "tool_args" not in df.columns


def _files() -> list[Path]:
    _frame_cache.wait()  # files are written on a background thread
    base = _frame_cache.folder()
    return sorted(base.glob("events-*.arrow")) if base.is_dir() else []


def _meta(path: Path) -> dict[str, Any]:
    _frame_cache.wait()
    with pa.memory_map(str(path)) as source:
        schema = pa.ipc.open_file(source).schema
    return json.loads(schema.metadata[b"thoth_nb.frame_cache"])  # type: ignore[no-any-return]


def _fresh_process(out: Path) -> tuple[Any, bool]:
    return fresh_read(out)


def test_a_fresh_process_maps_the_file_an_earlier_one_wrote(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("adbc_driver_sqlite")
    record()
    expected = _uncached(monkeypatch, tenant_id="acme")
    assert not _files()
    first, child = _fresh_process(tmp_path / "first.pkl")
    assert child  # nothing cached yet: the reader child read it, then the file was written
    [written] = _files()
    assert written.stat().st_mode & 0o777 == 0o600 and written.parent.stat().st_mode & 0o777 == 0o700
    assert _meta(written)["rows"] == 10 * 2
    second, child = _fresh_process(tmp_path / "second.pkl")
    assert not child  # mapped from the file: no reader child, no ADBC
    _same(first, expected)
    _same(second, expected)
    assert set(second["agent_id"]) == {"research"}


def test_the_mark_a_plain_read_writes_is_the_stores(reader: list[Any]) -> None:
    """A read of all a tenant's rows takes its file's mark from the rows it read (no index walk before
    the read): it must equal what the store says for those rows, else the file is never used again (or,
    worse, used after a deletion)."""
    record()
    from thoth_nb import _runtime

    path = Path(_runtime.local_store().path)
    for tenant in ("acme", "other"):
        thoth_nb.events(tenant_id=tenant, tool_args=False)
    marks = {}
    for file in _files():
        meta = _meta(file)
        tenant = json.loads(meta["key"])["params"][0]
        marks[tenant] = meta["mark"]
        assert meta["mark"] == _frame_cache.marks(path, tenant, meta["upto"], meta["upto"])[1]
    assert sorted(marks) == ["acme", "other"] and marks["acme"] != marks["other"]
    assert marks["acme"][0] == 20 and marks["acme"][3].startswith("acme:")


@pytest.mark.parametrize("analyzed", [False, True])
def test_the_marks_read_index_entries_not_the_table(analyzed: bool) -> None:
    """The marks run before every cached read: on a million rows of ~2 KB each, reading the table instead
    of an index's entries (or sorting) costs seconds, not tenths. With or without planner statistics."""
    import sqlite3

    record()
    from thoth_nb import _runtime

    path = _runtime.local_store().path
    conn = sqlite3.connect(path)
    try:
        if analyzed:
            conn.execute("ANALYZE")
        for sql in (_frame_cache.MARK_SQL, frames._MARK_SQL):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ("acme", 30, 10))]
            assert any("COVERING INDEX" in step for step in plan), plan
            assert not any(step.startswith("SCAN events") or "TEMP B-TREE" in step for step in plan), plan
            assert all("PRIMARY KEY" in step or "COVERING INDEX" in step
                       for step in plan if step.startswith("SEARCH events")), plan
    finally:
        conn.close()


def test_rows_added_after_the_file_are_read_on_top(reader: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record()
    thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 1 and len(_files()) == 1
    record(3, start=100)
    df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 1  # the file plus the new rows, read here with sqlite3
    _same(df, _uncached(monkeypatch, tenant_id="acme"))
    assert len(df) == 26 and df["seq"].is_monotonic_increasing
    # 6 new rows on 20 is more than a tenth: the file now holds them too
    [written] = _files()
    assert _meta(written)["rows"] == 26
    again = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 1
    _same(again, df)


def test_a_deleted_row_makes_the_file_useless(reader: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record()
    before = thoth_nb.events(tenant_id="acme", tool_args=False)
    [written] = _files()
    from thoth_nb import _runtime

    removed = _runtime.local_store().prune(before["occurred_at"].iloc[3].to_pydatetime(), tenant_id="acme")
    assert removed["events"] >= 1
    record(2, start=100)  # new rows do not hide the deletion: the mark counts rows up to the file's seq
    df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 2  # the file was not used
    _same(df, _uncached(monkeypatch, tenant_id="acme"))
    assert len(df) == len(before) - removed["events"] + 4
    assert not set(before["event_id"].iloc[:removed["events"]]) & set(df["event_id"])
    assert _meta(written)["rows"] == len(df)  # written again from the fresh read


def test_other_tenants_and_filters_never_reuse_a_file(reader: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record()
    acme = thoth_nb.events(tenant_id="acme", tool_args=False)
    other = thoth_nb.events(tenant_id="other", tool_args=False)
    _same(other, _uncached(monkeypatch, tenant_id="other"))
    assert set(other["agent_id"]) == {"ops"} and not set(other["event_id"]) & set(acme["event_id"])
    pres = thoth_nb.events(tenant_id="acme", event_type="TOOL_CALL_PRE", tool_args=False)
    _same(pres, _uncached(monkeypatch, tenant_id="acme", event_type="TOOL_CALL_PRE"))
    assert len(reader) == 3 and len(_files()) == 3
    # another key's file under this key's name (a hash collision, a copied file): refused and deleted
    key_of = {_meta(f)["key"]: f for f in _files()}
    acme_file = next(f for k, f in key_of.items() if '"acme"' in k and "event_type = ?" not in k)
    other_file = next(f for k, f in key_of.items() if '"other"' in k)
    other_file.write_bytes(acme_file.read_bytes())
    df = thoth_nb.events(tenant_id="other", tool_args=False)
    assert len(reader) == 4
    _same(df, other)
    assert '"other"' in _meta(other_file)["key"]  # replaced by the fresh read
    # the same tenant (its mark matches) with other filters: only the key tells the files apart
    pre_file = next(f for k, f in key_of.items() if "event_type = ?" in k)
    pre_file.write_bytes(acme_file.read_bytes())
    df = thoth_nb.events(tenant_id="acme", event_type="TOOL_CALL_PRE", tool_args=False)
    assert len(reader) == 5
    _same(df, pres)
    assert set(df["event_type"]) == {"TOOL_CALL_PRE"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_ignored_and_replaced(reader: list[Any], monkeypatch: pytest.MonkeyPatch,
                                                damage: str) -> None:
    record()
    expected = thoth_nb.events(tenant_id="acme", tool_args=False)
    [written] = _files()
    data = written.read_bytes()
    written.write_bytes({"truncated": data[: len(data) // 2], "garbage": data[:64] + os.urandom(len(data) - 64),
                         "empty": b""}[damage])
    df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 2
    _same(df, expected)
    _same(df, _uncached(monkeypatch, tenant_id="acme"))
    assert _meta(written)["rows"] == len(df)  # a good file again
    thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 2


def test_turned_off_it_writes_and_reads_nothing(reader: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record()
    monkeypatch.setenv("THOTH_FRAME_CACHE", "0")
    thoth_nb.events(tenant_id="acme", tool_args=False)
    thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reader) == 2 and not _frame_cache.folder().exists()


def test_relative_time_bounds_are_not_cached(reader: list[Any]) -> None:
    record()
    assert len(thoth_nb.events(tenant_id="acme", since="1h", tool_args=False)) == 20
    assert not _files()


def test_only_the_most_recently_used_files_are_kept(reader: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record()
    monkeypatch.setattr(_frame_cache, "KEEP", 2)
    import time

    for event_type in ("TOOL_CALL_PRE", "TOOL_CALL_POST", None):
        thoth_nb.events(tenant_id="acme", event_type=event_type, tool_args=False)
        time.sleep(0.02)
    kept = [_meta(f)["key"] for f in _files()]
    assert len(kept) == 2 and not any("TOOL_CALL_PRE" in k for k in kept)


def test_a_cached_default_frame_makes_the_warm_up_unneeded(reader: list[Any]) -> None:
    record()
    os.environ.pop("THOTH_WARM_READER", None)
    thoth_nb.events(tool_args=False)  # the default read the warm-up would prefetch
    _frame_cache.wait()  # (its file is written on a background thread)
    assert frames.warm_reader() is False
    for file in _files():
        file.unlink()
    try:
        assert frames.warm_reader() is True
    finally:
        frames._READER.close()
