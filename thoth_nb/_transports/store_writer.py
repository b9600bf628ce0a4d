"""The embedded store's writer child: event batches are stored by another process, off this one's GIL.

Why (issue 3): every sqlite3 call releases and re-takes the GIL, and beside a CPU-bound thread each re-take
waits up to a switch interval (5 ms). The emitter thread ingesting in-process therefore got ~3,000 of 5,000
events/s into the store beside a busy loop, and each event's ~30-60 µs of GIL time was taken from the
governed calls. Here the emitter thread encodes a batch (one `orjson.dumps`), writes it to the child's stdin
in one `write`, and waits (GIL released) for the child's reply, which it sends after the batch's COMMIT.
Measured beside a busy loop, the emitter thread's CPU per event went from ~70-90 µs to ~30-45 µs (loaded
2-CPU machine); what is left in this process is `build_event` (~2/3: redaction, the event dict) and the
encoding (~1/5). Building events in the child instead would need the live call objects (arguments,
results, errors), which cannot cross a process boundary without being serialised first.

Protocol: the parent writes frames to the child's stdin, each a kind byte, the payload's length (8 bytes,
big-endian) and the payload: a list of events, `marshal`led (b"M": the events are plain dicts, lists and
strings; marshal shares repeated strings such as a session's tool-call list, which makes the child's loads
~4x cheaper than JSON's) or as JSON (b"J": an event with another type in it); or a server's whole
`POST /v1/events/batch` body (b"B", `encode_request`: `server/_ingest.py`). The child answers each frame
with one JSON line on stdout, after its COMMIT: `{"ok": true, "accepted": n, "duplicates": n,
"rejected": n}` (for B, "rejected" lists the entries, and a batch refused whole is `{"ok": true,
"refused": {...}}`) or `{"ok": false, "error": "..."}`; its first line is `{"ok": true, "ready": true, "pid": n}`,
once the store is open. Frames are answered in order, so the parent may write the next batch before the
last one's reply comes (`submit`, then `collect`). A frame cut short (the parent died writing it) is not
stored. The child ends at EOF on stdin (the parent closed it, exited or was killed), or when its parent is
gone (a forked copy of the parent may hold the pipe open).

The child runs this file by path with `python -P` (the script's folder holds `http.py`, which must not
shadow the standard library) and imports `thoth_nb.engine.store` under stub `thoth_nb` and
`thoth_nb.engine` packages: their `__init__` modules import the whole SDK (~1.5 s here), the store module
needs only `_json` and `_exceptions`, so the child is ready in ~0.2 s. Nothing here imports the child side
into the parent, and the parent side uses only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["StoreWriter", "WriterError", "encode_batch", "encode_request"]

#: how long the parent waits for the child to open the store, and for one batch's reply, before it gives
#: the child up (kills it) and stores the batch itself
READY_TIMEOUT = 30.0
ACK_TIMEOUT = 60.0


class WriterError(Exception):
    """The writer child could not take a batch: not started, crashed, timed out or the store failed."""


def encode_batch(events: Sequence[Mapping[str, Any]]) -> bytes:
    """One frame for the child: marshal when every value is a plain built-in (exact types only: a dict
    subclass or an enum makes marshal refuse), JSON otherwise. Both give the child dicts that the store
    serialises to the same bytes as the originals, so the hash chain does not depend on the way taken."""
    try:
        kind, payload = b"M", marshal.dumps(events if type(events) is list else list(events))
    except ValueError:
        from thoth_nb import _json

        kind, payload = b"J", _json.dumps_bytes(list(events))
    return kind + len(payload).to_bytes(8, "big") + payload


def encode_request(data: bytes, tenant_id: str, max_events: int) -> bytes:
    """One frame for the child from a server's `POST /v1/events/batch` body (frame kind B): the child
    splits, checks and stores it as `engine.ingest.ingest_body`; its reply lists the rejected events, or
    is `{"ok": true, "refused": {status, error, message, field}}` for a batch refused as a whole."""
    if "\n" in tenant_id:
        raise ValueError("a tenant id cannot contain a newline")
    payload = b"%s\n%d\n%s" % (tenant_id.encode(), max_events, data)
    return b"B" + len(payload).to_bytes(8, "big") + payload


class StoreWriter:
    """The parent side: one child process storing into one SQLite file. Used by one thread at a time
    (the emitter thread); `close` may come from another thread (shutdown), hence the lock."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0, script: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT, ack_timeout: float = ACK_TIMEOUT,
                 checkpoints: str = "here") -> None:
        """`checkpoints`: "here" (the child's commits checkpoint the WAL, SQLite's default) or "elsewhere"
        (another connection does: the server's checkpoint thread)."""
        if checkpoints not in ("here", "elsewhere"):
            raise ValueError(f"checkpoints must be 'here' or 'elsewhere', not {checkpoints!r}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.checkpoints = checkpoints
        self._script = script or Path(__file__)
        self.ready_timeout = ready_timeout
        self.ack_timeout = ack_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._ready = False
        self._pending = 0
        self._started_at = 0.0
        self._owner = os.getpid()
        #: children started so far (the first start included)
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def start(self) -> None:
        """Start the child (returns at once; it opens the store meanwhile). OSError if it cannot start."""
        with self._lock:
            if self._proc is not None:
                return
            package_root = str(Path(__file__).resolve().parents[2])
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the child's life
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-P", str(self._script), package_root, str(self.path),
                     repr(float(self.busy_timeout)), str(os.getpid()), self.checkpoints],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0, close_fds=True,
                    start_new_session=True,  # a Ctrl-C in the terminal interrupts the parent, not a COMMIT here
                )
            except BaseException:
                stderr.close()
                raise
            self._stderr = stderr
            self._buffer = b""
            self._ready = False
            self._pending = 0
            self._started_at = time.monotonic()
            self.starts += 1

    def ready(self) -> bool:
        """Whether the child has opened the store (never waits). WriterError if it died starting."""
        with self._lock:
            if self._ready:
                return True
            if self._proc is None:
                return False
            line = self._read_line(0.0)
            if line is None:
                if time.monotonic() - self._started_at > self.ready_timeout:
                    self._kill()
                    raise WriterError(f"the store writer did not start within {self.ready_timeout:g} s")
                return False
            self._ready = self._reply(line).get("ready") is True
            if not self._ready:
                self._kill()
                raise WriterError(f"the store writer answered {line[:200]!r} instead of ready")
            return True

    @property
    def pending(self) -> int:
        """Frames written and not answered yet."""
        return self._pending

    def submit(self, frame: bytes) -> None:
        """Write one frame (`encode_batch`); its reply is read by a later `collect`. WriterError (and
        the child is stopped) if it cannot be written."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or not self._ready:
                raise WriterError("the store writer is not running")
            try:
                _write_all(proc.stdin.fileno(), frame)
            except OSError as exc:
                self._kill()
                raise WriterError(f"the store writer is gone ({exc}){self._stderr_tail()}") from None
            self._pending += 1

    def collect(self) -> dict[str, Any]:
        """The reply to the oldest unanswered frame, which comes after its COMMIT. WriterError if the
        batch may not be stored (the child is then stopped unless only the store refused): the caller
        stores it, and every later frame, another way (ingest is idempotent by event id, so a batch the
        child did commit before dying is not doubled)."""
        with self._lock:
            if self._proc is None or not self._pending:
                raise WriterError("the store writer is not running")
            line = self._read_line(self.ack_timeout)
            if line is None:
                self._kill()
                raise WriterError(f"the store writer did not answer within {self.ack_timeout:g} s")
            self._pending -= 1
            reply = self._reply(line)
            if not reply.get("ok"):
                raise WriterError(f"the store writer could not store a batch: {reply.get('error')}")
            return reply

    def send(self, frame: bytes) -> dict[str, Any]:
        """`submit` then `collect`: store one batch and wait for its reply."""
        self.submit(frame)
        return self.collect()

    def close(self, timeout: float = 5.0) -> None:
        """Close the child's stdin (it finishes what it has, then exits) and reap it. If another thread
        is stuck waiting on the child for longer than `timeout`, the child is killed (that thread then
        sees it gone and stores its batch another way)."""
        if not self._lock.acquire(timeout=timeout):
            proc = self._proc
            if proc is not None and self._owner == os.getpid():
                with contextlib.suppress(OSError):
                    proc.kill()
            if not self._lock.acquire(timeout=timeout):
                return
        try:
            self._close(timeout)
        finally:
            self._lock.release()

    def _close(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        self._pending = 0
        if proc is None or self._owner != os.getpid():  # a forked copy: the child is the parent's
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._close_streams(proc)

    def abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's writer without touching it. The pipe copies are closed
        here (unbuffered: nothing is flushed into the parent's stream), so only the parent holds them."""
        proc, self._proc = self._proc, None
        self._lock = threading.Lock()
        self._ready = False
        self._pending = 0
        self._buffer = b""
        self._owner = os.getpid()
        if proc is not None:
            _ABANDONED.append(proc)  # never waited on here (not our child); kept so __del__ stays quiet
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        os.close(stream.fileno())
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                os.close(self._stderr.fileno())
            self._stderr = None

    # -- internals (lock held) ---------------------------------------------------------------------

    def _read_line(self, timeout: float) -> bytes | None:
        """The next reply line, waiting up to `timeout` s (the GIL is released while waiting); None
        on timeout. EOF (the child died) raises WriterError."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            try:
                readable, _, _ = select.select([fd], [], [], max(0.0, remaining))
                if not readable:
                    return None
                chunk = os.read(fd, 65536)
            except OSError as exc:
                self._kill()
                raise WriterError(f"the store writer's pipe failed ({exc})") from None
            if not chunk:
                tail = self._stderr_tail()
                self._kill()
                raise WriterError(f"the store writer exited{tail}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _reply(self, line: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._kill()
            raise WriterError(f"the store writer sent {line[:200]!r}")
        return reply

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        self._pending = 0
        self._buffer = b""
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # reaped: no zombie
        self._close_streams(proc)

    def _close_streams(self, proc: subprocess.Popen[bytes]) -> None:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()
            self._stderr = None

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read()[-300:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {text}" if text else ""


_ABANDONED: list[subprocess.Popen[bytes]] = []


def _write_all(fd: int, data: bytes) -> None:
    """One `write` for the whole batch in the usual case (a blocking pipe write returns when all is
    written): one GIL release, not one per 64 KiB."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the child ---------------------------------------------------------------------------------------


def _import_store(package_root: str) -> Any:
    """`thoth_nb.engine.store.SQLiteStore` without running the `thoth_nb` and `thoth_nb.engine` package
    `__init__` modules (the whole SDK): empty package modules with the right `__path__` stand in."""
    import types

    sys.path.insert(0, package_root)  # the store module's own dependencies (orjson etc.) come from site
    for name in ("thoth_nb", "thoth_nb.engine"):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [os.path.join(package_root, *name.split("."))]
            sys.modules[name] = stub
    from thoth_nb.engine.store import SQLiteStore  # type: ignore[import-not-found, unused-ignore]

    return SQLiteStore


def _ingest_request(store: Any, payload: bytes) -> dict[str, Any]:
    """Frame kind B: a server's request body, stored by `engine.ingest.ingest_body` as the server would."""
    from thoth_nb.engine.ingest import BatchRefused, ingest_body  # type: ignore[import-not-found, unused-ignore]

    tenant, max_events, data = payload.split(b"\n", 2)
    try:
        result = ingest_body(store, data, int(max_events), tenant.decode())
    except BatchRefused as exc:  # the client's mistake, not the writer's: the server answers it as is
        return {"ok": True, "refused": exc.to_dict()}
    return {"ok": True, "accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected}


def serve(package_root: str, path: str, busy_timeout: float, parent: int, checkpoints: str = "here") -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this ends (EOF on stdin)
    out = sys.stdout.buffer
    store = _import_store(package_root)(path, busy_timeout=busy_timeout)
    if checkpoints == "elsewhere":
        store.defer_checkpoints()
    from thoth_nb import _json  # type: ignore[import-not-found, unused-ignore]

    busy = threading.Lock()

    def watch_parent() -> None:
        """A forked copy of the parent may hold our stdin open after the parent died: exit anyway,
        but never in the middle of a batch (what was read is committed first)."""
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                with busy:
                    os._exit(0)

    threading.Thread(target=watch_parent, name="thoth-nb-writer-watch", daemon=True).start()

    def reply(body: dict[str, Any]) -> None:
        out.write(json.dumps(body).encode() + b"\n")
        out.flush()

    reply({"ok": True, "ready": True, "pid": os.getpid()})
    source = sys.stdin.buffer
    while True:
        header = source.read(9)
        size = int.from_bytes(header[1:], "big") if len(header) == 9 else -1
        payload = source.read(size) if size >= 0 else b""
        if size < 0 or len(payload) != size:  # EOF, or a frame cut short by a parent that died writing it
            break
        with busy:
            body: dict[str, Any]
            try:
                if header[:1] == b"B":
                    body = _ingest_request(store, payload)
                else:
                    events = marshal.loads(payload) if header[:1] == b"M" else _json.loads(payload)
                    result = store.ingest_events(events)
                    body = {"ok": True, "accepted": result.accepted, "duplicates": result.duplicates,
                            "rejected": len(result.rejected)}
            except Exception as exc:  # reported; the parent stores the batch itself (and retries, spills)
                body = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                reply(body)
            except (BrokenPipeError, OSError):
                break
    store.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
