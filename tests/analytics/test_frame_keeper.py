"""The frame keeper (`analytics/_frame_keeper.py`): a store written through the SDK gets its DataFrame
disk cache kept up to date by a low-priority process of its own, so a fresh kernel's first `events()`
maps a file. It writes only cache files, exactly what a read would have written; it never runs twice at
once for a store; the emitter starts it every `KEEP_EVERY` events and at shutdown, unless turned off."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("adbc_driver_sqlite")

from _fresh_frames import fresh_read, record  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb import _frames_upkeep, _runtime  # noqa: E402
from thoth_nb.analytics import _frame_cache, _frame_keeper, frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "THOTH_FRAME_KEEPER": "1"}


def _keeper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thoth_nb.analytics._frame_keeper", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, **ENV})


def _cached_rows() -> dict[str, int]:
    out = {}
    for file in sorted(_frame_cache.folder().glob("events-*.arrow")):
        with pa.memory_map(str(file)) as source:
            meta = json.loads(pa.ipc.open_file(source).schema.metadata[b"thoth_nb.frame_cache"])
        out[json.loads(meta["key"])["params"][0]] = meta["rows"]
    return out


def _fresh_read(out: Path) -> tuple[Any, bool]:
    return fresh_read(out, THOTH_FRAME_KEEPER="0")


def _uncached(monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        m.setenv("THOTH_FRAME_CACHE", "0")
        m.setattr(frames, "_PARALLEL_FROM", 10**9)
        return thoth_nb.events(tenant_id="acme", tool_args=False)


def test_the_keeper_writes_what_a_fresh_kernel_then_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record(15)
    store = str(_runtime.store_path())
    done = _keeper(store, "acme", "other", "--min-rows", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["acme=30", "other=30"]
    assert _cached_rows() == {"acme": 30, "other": 30}
    df, child = _fresh_read(tmp_path / "a.pkl")
    assert not child  # mapped: no reader child, no row decoded
    expected = _uncached(monkeypatch)
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    # a few more rows (under a tenth: a reader would not rewrite the file for them): the keeper does
    record(1, start=100)
    assert _keeper(store, "acme", "--min-rows", "2").stdout.split() == ["acme=32"]
    assert _cached_rows()["acme"] == 32
    df, child = _fresh_read(tmp_path / "b.pkl")
    assert not child and len(df) == 32
    pd.testing.assert_frame_equal(df, _uncached(monkeypatch), check_categorical=False)


def test_small_stores_and_a_second_keeper_do_nothing() -> None:
    record(3)
    store = _runtime.store_path()
    assert _keeper(str(store), "acme").stdout.split() == ["acme=0"]  # 6 rows: read fast anyway
    assert not _cached_rows()
    _frame_cache.folder().mkdir(parents=True, exist_ok=True)
    with _frame_keeper._only_keeper(store) as mine:  # another keeper runs
        assert mine
        done = _keeper(str(store), "acme", "--min-rows", "2")
        assert done.returncode == 0 and done.stdout.strip() == ""
    assert not _cached_rows()


def test_bad_arguments_say_what_is_wrong(tmp_path: Path) -> None:
    done = _keeper(str(tmp_path / "missing.db"), "acme")
    assert done.returncode == 2 and "no store at" in done.stderr
    done = _keeper(str(tmp_path / "missing.db"))
    assert done.returncode == 2 and "tenant" in done.stderr


def _wait_keeper(trigger: Any) -> None:
    process = trigger.process
    assert process is not None, "no keeper was started"
    assert process.wait(timeout=60) == 0
    # the lock is free again once it is done
    fd = os.open(next(_frame_cache.folder().glob(".keeper-*.lock")), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


@pytest.fixture
def keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_FRAME_KEEPER", "1")
    monkeypatch.setattr(_frames_upkeep, "KEEP_EVERY", 30)
    monkeypatch.setattr(_frames_upkeep, "KEEP_AT_EXIT", 4)
    monkeypatch.setattr(_frames_upkeep, "KEEP_MIN_ROWS", 2)


def test_the_emitter_starts_the_keeper_as_the_store_grows_and_at_shutdown(keeping: None) -> None:
    record(10)  # 40 events: past KEEP_EVERY
    [emitter] = _runtime._emitters.values()
    trigger = emitter.keeper
    assert trigger is not None and trigger.store == _runtime.store_path()
    _wait_keeper(trigger)
    assert _cached_rows() == {"acme": 20, "other": 20}
    record(2, start=100)  # 8 events: under KEEP_EVERY, over KEEP_AT_EXIT
    assert trigger.process.poll() is not None and trigger.since == 8
    emitter.shutdown()
    _wait_keeper(trigger)
    assert _cached_rows() == {"acme": 24, "other": 24}


def test_no_keeper_when_turned_off(keeping: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_FRAME_CACHE", "0")
    record(10)
    [emitter] = _runtime._emitters.values()
    emitter.shutdown()
    assert emitter.keeper is not None and emitter.keeper.process is None and emitter.keeper.since == 0


def test_the_server_starts_the_keeper_for_its_sqlite_store(keeping: None, tmp_path: Path) -> None:
    """Events ingested by `thoth-nb serve` on SQLite: the same upkeep, per tenant that sent them."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from thoth_nb.engine.policy import parse_policy
    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server.app import ServerSettings, create_app

    store = SQLiteStore(tmp_path / "server.db")
    app = create_app(store, parse_policy({"version": 1, "default": "allow"}), ServerSettings(no_auth=True,
                                                                                           local_tenant="acme"))
    events = [{"event_id": f"acme:{i:08d}", "tenant_id": "acme", "session_id": f"s{i % 3}", "agent_id": "a",
               "tool_name": "search", "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-11-26T00:00:00Z"}
              for i in range(40)]
    with TestClient(app, base_url="http://127.0.0.1") as client:  # --no-auth answers loopback hosts only
        answer = client.post("/v1/events/batch", json=events)
        assert answer.status_code == 202 and answer.json()["accepted"] == 40, answer.text
    trigger = app.state.thoth.frames_keeper
    assert trigger is not None and trigger.store == store.path
    _wait_keeper(trigger)
    assert _cached_rows() == {"acme": 40}
    store.close()
