"""The embedded store's writer child (issue 3): batches are stored by another process, nothing is lost (D7)."""

from __future__ import annotations

import enum
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb import _emitter
from thoth_nb._emitter import Emitter
from thoth_nb._runtime import local_engine, local_store
from thoth_nb._transports import store_writer
from thoth_nb._transports.embedded import EmbeddedTransport
from thoth_nb._transports.store_writer import StoreWriter, encode_batch
from thoth_nb.engine.audit import verify_store
from thoth_nb.engine.store import SQLiteStore

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX process handling")


def make_events(n: int, tenant: str = "t", session: str | None = None) -> list[dict[str, Any]]:
    session = session or str(uuid.uuid4())
    return [
        {"event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "agent_id": "a",
         "tool_name": "x", "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z",
         "metadata": {"i": i}, "session_tool_calls": ["x"] * 64}
        for i in range(n)
    ]


def embedded_emitter(home: Path, **options: Any) -> Emitter:
    return Emitter(EmbeddedTransport(local_engine()), spill_dir=home / "spill", **options)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` has exited (reaped, or a zombie nobody here can reap) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    return False


def test_batches_go_through_the_child_and_flush_waits_for_its_commit(thoth_home: Path) -> None:
    emitter = embedded_emitter(thoth_home, offload="always", batch_size=500)
    events = make_events(2000)
    for event in events:
        emitter.emit(event)
    assert emitter.flush(timeout=30)
    stats = emitter.stats()
    assert stats["offloaded_batches"] >= 4 and stats["writer_pid"] not in (None, os.getpid())
    assert stats["sent"] == 2000 and stats["queue_depth"] == 0 and stats["writer_failures"] == 0
    stored = local_store().events("t")  # after flush(): committed, seen from this process
    assert sorted(e["event_id"] for e in stored) == sorted(e["event_id"] for e in events)
    assert verify_store(local_store(), "t").ok  # the child chained them like the in-process store does
    pid = stats["writer_pid"]
    emitter.shutdown()
    assert emitter.writer_pid is None and gone(pid)


def test_the_child_stores_the_same_bytes_as_in_process(thoth_home: Path) -> None:
    """Same events, one store through the child, one in-process: the stored bodies match except for the
    ingest time (so the chain hashes the same content whichever way an event went). A value marshal
    refuses (an enum) takes the JSON frame."""

    class Colour(enum.StrEnum):
        RED = "red"

    events = make_events(20, session="s")
    events[3]["metadata"] = {"colour": Colour.RED, "t": (1, 2.5, None), "u": "é\n"}
    assert encode_batch(events)[:1] == b"J" and encode_batch(make_events(2))[:1] == b"M"
    child = SQLiteStore(thoth_home / "child.db")
    inproc = SQLiteStore(thoth_home / "inproc.db")
    writer = StoreWriter(child.path)
    writer.start()
    try:
        while not writer.ready():
            time.sleep(0.01)
        reply = writer.send(encode_batch(events))
        assert reply["accepted"] == 20 and reply["duplicates"] == 0
        assert writer.send(encode_batch(events))["duplicates"] == 20  # idempotent by event_id
    finally:
        writer.close()
    inproc.ingest_events(events)

    def bodies(store: SQLiteStore) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k not in ("ingested_at", "hash", "previous_hash")}
                for e in store.events("t", limit=100)]

    assert bodies(child) == bodies(inproc)
    assert verify_store(child, "t").ok


def test_small_batches_stay_in_process_and_a_busy_one_starts_the_child(thoth_home: Path) -> None:
    emitter = embedded_emitter(thoth_home, batch_size=1000)
    for event in make_events(10):
        emitter.emit(event)
    assert emitter.flush(timeout=10) and emitter.writer_pid is None and emitter.offloaded == 0
    for event in make_events(3 * _emitter.OFFLOAD_AT):
        emitter.emit(event)
    assert emitter.flush(timeout=10)
    assert emitter.writer_pid is not None  # started; this batch went in-process while it opened the store
    deadline = time.monotonic() + 20
    while emitter.offloaded == 0 and time.monotonic() < deadline:
        for event in make_events(_emitter.OFFLOAD_AT):
            emitter.emit(event)
        assert emitter.flush(timeout=10)
    assert emitter.offloaded > 0
    assert local_store().count_events("t") == emitter.sent


def test_a_child_killed_mid_stream_loses_and_doubles_nothing(thoth_home: Path) -> None:
    emitter = embedded_emitter(thoth_home, offload="always", batch_size=200)
    produced: list[str] = []
    first_pid = None
    killed = False
    for _ in range(60):
        for event in make_events(100):
            produced.append(event["event_id"])
            emitter.emit(event)
        time.sleep(0.01)
        pid = emitter.writer_pid
        if pid is not None and not killed and emitter.offloaded >= 2:
            first_pid = pid
            os.kill(pid, signal.SIGKILL)  # whatever it was doing: reading, storing, answering
            killed = True
    assert killed
    assert emitter.flush(timeout=60)
    assert emitter.writer_failures >= 1 and emitter.dropped == 0 and emitter.spilled == 0
    ids = [e["event_id"] for e in local_store().events("t", limit=100_000)]
    assert len(ids) == len(set(ids)) == len(produced) and set(ids) == set(produced)
    assert verify_store(local_store(), "t").ok
    # the child is started again after the back-off
    time.sleep(_emitter.WRITER_BACKOFF[0] + 0.1)
    for event in make_events(100):
        emitter.emit(event)
    assert emitter.flush(timeout=30)
    assert emitter.writer_pid not in (None, first_pid) and gone(first_pid)  # type: ignore[arg-type]
    assert local_store().count_events("t") == len(produced) + 100


def test_a_child_that_cannot_start_leaves_events_in_process(thoth_home: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken_writer.py"
    broken.write_text("import sys\nsys.stderr.write('no store here')\nraise SystemExit(3)\n")
    monkeypatch.setattr(_emitter, "StoreWriter", functools.partial(StoreWriter, script=broken))
    emitter = embedded_emitter(thoth_home, offload="always")
    for event in make_events(700):
        emitter.emit(event)
    assert emitter.flush(timeout=30)
    assert local_store().count_events("t") == 700 and emitter.sent == 700 and emitter.offloaded == 0
    assert emitter.writer_failures >= 1 and "no store here" in (emitter.last_error or "")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    again = embedded_emitter(thoth_home, offload="always")
    for event in make_events(300):
        again.emit(event)
    assert again.flush(timeout=30) and local_store().count_events("t") == 1000
    assert again.writer_failures == 1 and "cannot start the store writer" in (again.last_error or "")


def test_the_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys, uuid
        from pathlib import Path
        from thoth_nb._emitter import Emitter
        from thoth_nb._runtime import local_engine
        from thoth_nb._transports.embedded import EmbeddedTransport
        os.environ["THOTH_HOME"] = {str(tmp_path / "home")!r}
        emitter = Emitter(EmbeddedTransport(local_engine()), offload="always")
        for i in range(300):
            emitter.emit({{"event_id": f"t:{{uuid.uuid4()}}", "tenant_id": "t", "session_id": "s",
                          "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z"}})
        assert emitter.flush(30)
        print(emitter.writer_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    child = int(done.stdout.strip())
    assert gone(child), "the writer child outlived its killed parent"
    assert SQLiteStore(tmp_path / "home" / "thoth.db").count_events("t") == 300


def test_a_forked_process_does_not_share_the_child(thoth_home: Path) -> None:
    emitter = embedded_emitter(thoth_home, offload="always")
    for event in make_events(300, tenant="parent"):
        emitter.emit(event)
    assert emitter.flush(timeout=30)
    parent_writer = emitter.writer_pid
    assert parent_writer is not None
    pid = os.fork()
    if pid == 0:  # the fork: its own writer child (or in-process), never the parent's pipe
        try:
            for event in make_events(300, tenant="fork"):
                emitter.emit(event)
            ok = emitter.flush(30) and emitter.writer_pid not in (None, parent_writer)
            ok = ok and SQLiteStore(local_store().path).count_events("fork") == 300
            emitter.shutdown()
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for event in make_events(300, tenant="parent"):
        emitter.emit(event)
    assert emitter.flush(timeout=30) and emitter.writer_pid == parent_writer
    assert local_store().count_events("parent") == 600 and emitter.writer_failures == 0


def test_governed_calls_through_the_child_and_status(thoth_home: Path, cfg: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_emitter, "OFFLOAD_AT", 1)

    @thoth_nb.governed(**cfg)
    def search(q: str) -> str:
        return q

    for i in range(50):
        search(f"q{i}")
    assert thoth_nb.flush(timeout=30)
    time.sleep(0.3)  # the child opens the store meanwhile
    for i in range(1000):
        search(f"r{i}")
    assert thoth_nb.flush(timeout=30)
    events = local_store().events("t", limit=10_000)
    assert len(events) == 2100 and len({e["event_id"] for e in events}) == 2100
    (stats,) = thoth_nb.status()["emitters"]
    assert stats["offloaded_batches"] >= 1 and stats["sent"] == 2100 and stats["queue_depth"] == 0
    assert verify_store(local_store(), "t").ok


def test_a_frame_cut_short_is_not_stored(tmp_path: Path) -> None:
    """A parent killed while writing a batch leaves half a frame: the child stores nothing of it."""
    store = SQLiteStore(tmp_path / "s.db")
    frame = encode_batch(make_events(50))
    root = str(Path(store_writer.__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-P", store_writer.__file__, root, str(store.path), "5.0",
                           str(os.getpid())], input=frame + frame[: len(frame) // 2], capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.decode().splitlines()
    assert len(replies) == 2 and '"accepted": 50' in replies[1]  # ready, then the one whole frame
    assert store.count_events("t") == 50


def test_only_the_embedded_sqlite_store_is_offloaded(thoth_home: Path, tmp_path: Path) -> None:
    from thoth_nb._transports.http import HTTPTransport

    sys.path.insert(0, str(Path(__file__).parent))
    from _sinks import FlakySink

    assert _emitter._offload_target(HTTPTransport("http://127.0.0.1:9")) is None
    assert _emitter._offload_target(FlakySink(tmp_path / "f.db")) is None  # a test's fake sink stays in-process
    target = _emitter._offload_target(EmbeddedTransport(local_engine()))
    assert target is not None and target[0] == local_store().path
    assert embedded_emitter(thoth_home, offload="never")._writer_target is None
    with pytest.raises(ValueError):
        embedded_emitter(thoth_home, offload="sometimes")


def test_the_child_works_without_the_optional_extras(tmp_path: Path) -> None:
    """No orjson (the `fast` extra) in the child: the store falls back to the standard library's json."""
    store = SQLiteStore(tmp_path / "s.db")
    events = make_events(30)
    plain = encode_batch(events)
    assert plain[:1] == b"M"
    import json as stdjson

    payload = stdjson.dumps(events).encode()
    as_json = b"J" + len(payload).to_bytes(8, "big") + payload
    root = str(Path(store_writer.__file__).resolve().parents[2])
    wrapper = tmp_path / "no_extras.py"
    wrapper.write_text(textwrap.dedent(f"""
        import runpy, sys
        sys.modules["orjson"] = None  # import orjson -> ImportError, as without the extra
        sys.argv = ["store_writer", {root!r}, {str(store.path)!r}, "5.0", sys.argv[1]]
        runpy.run_path({store_writer.__file__!r}, run_name="__main__")
        assert "orjson" not in sys.modules or sys.modules["orjson"] is None
    """))
    proc = subprocess.run([sys.executable, "-P", str(wrapper), str(os.getpid())], input=plain + as_json,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.decode().splitlines()
    assert replies[1:] == ['{"ok": true, "accepted": 30, "duplicates": 0, "rejected": 0}',
                           '{"ok": true, "accepted": 0, "duplicates": 30, "rejected": 0}']
    assert store.count_events("t") == 30 and verify_store(store, "t").ok
