"""The background event emitter (D7): never blocks a tool, loses nothing.

The calling thread appends a small tuple to a deque (~0.1 µs); a daemon thread turns tuples into
PROTOCOL §5 events (ids, timestamps and JSON happen here, off the hot path), sends them in batches,
retries network/429/5xx failures at 0.5/1/2 s, and spills what it still cannot deliver to a JSON-lines
file under `$THOTH_HOME/spill/`, which the next emitter for the same sink replays. Event ids are
unique and ingest is idempotent, so a replay never double-counts.

Embedded mode under load: once a batch holds `OFFLOAD_AT` events or more, an emitter whose sink is the
in-process SQLite store starts a writer child (`_transports/store_writer.py`) and hands it the batches,
each forgotten only after the child's reply, which comes after its COMMIT. The store's work (and the GIL
convoy every sqlite3 call joins beside a CPU-bound thread) leaves this process. A batch the child could not
store (it died, hung, or the store failed) is stored the in-process way (retries, then the spill file);
ingest is idempotent by event id, so a batch the child did commit before dying is not stored twice.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from thoth_nb import _json
from thoth_nb._config import thoth_home
from thoth_nb._exceptions import EnforcerError
from thoth_nb._frames_upkeep import FrameKeeperTrigger
from thoth_nb._transports.base import Transport
from thoth_nb._transports.store_writer import StoreWriter, WriterError, encode_batch

__all__ = ["Emitter", "all_emitters"]

logger = logging.getLogger("thoth_nb")

RETRY_DELAYS = (0.5, 1.0, 2.0)
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}

_EMITTERS: weakref.WeakSet[Emitter] = weakref.WeakSet()

#: a batch this large (events per `interval`: ~2,000 events/s and up) starts the writer child
OFFLOAD_AT = 200
#: a writer child idle this long (seconds) is stopped; the next busy batch starts another
WRITER_IDLE = 60.0
#: batches written to the writer child before the oldest one's reply is awaited
WINDOW = 2
#: after the writer child failed, wait this long (doubling per consecutive failure) before starting another
WRITER_BACKOFF = (0.5, 30.0)


class _Built:
    """A queued event that was already built (and journaled) on the calling thread."""

    __slots__ = ("event",)

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event


def all_emitters() -> list[Emitter]:
    return list(_EMITTERS)


Builder = Callable[[Any], Mapping[str, Any]]


class Emitter:
    """Bounded buffer + daemon thread + disk spill, for one sink (a transport)."""

    def __init__(
        self,
        transport: Transport,
        *,
        build: Builder | None = None,
        max_queue: int = 100_000,
        batch_size: int = 500,  # PROTOCOL §5: a server takes at most 500 events per batch
        interval: float = 0.1,
        high_water: int | None = None,
        spill_dir: Path | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        offload: str = "auto",
    ) -> None:
        """`offload`: "auto" stores through a writer child once batches reach `OFFLOAD_AT` events,
        "always" from the first batch, "never" in-process; only for the embedded SQLite store."""
        self.transport = transport
        self._build = build or (lambda item: item)
        self.max_queue = max_queue
        self.batch_size = batch_size
        #: above this backlog the calling thread yields the GIL on every event (back-pressure), so a
        #: thread producing events flat out cannot starve the emitter thread; see `emit`
        self.high_water = min(max_queue, high_water if high_water is not None else 10 * batch_size)
        self.interval = interval
        self.retry_delays = tuple(retry_delays)
        self.spill_dir = spill_dir
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._inflight = 0
        self._last_take = 0.0  # monotonic time the last batch was taken: the next is due an interval later
        self._stop = False
        self._thread: threading.Thread | None = None
        self._spill_lock = threading.Lock()
        self._journaled = 0  # events appended to the journal since it was last emptied
        self.sent = 0
        self.dropped = 0
        self.throttled = 0
        self.spilled = 0
        self.replayed = 0
        self.failures = 0
        self.last_error: str | None = None
        if offload not in ("auto", "always", "never"):
            raise ValueError(f"offload must be 'auto', 'always' or 'never', not {offload!r}")
        self.offload = offload
        self._writer_target = _offload_target(transport) if offload != "never" else None
        self._writer: StoreWriter | None = None
        self._writer_used = 0.0  # monotonic time of the last batch the writer took
        self._writer_retry_at = 0.0  # no new writer child before this (after a failure)
        self._writer_streak = 0  # consecutive writer failures
        self._unacked: collections.deque[list[Mapping[str, Any]]] = collections.deque()  # with the child
        self._unacked_events = 0
        self._sending: list[Mapping[str, Any]] | None = None  # the batch `_deliver` is trying to send
        #: batches the writer child stored, and times it failed (the batch then went the in-process way)
        self.offloaded = 0
        self.writer_failures = 0
        #: starts the frame keeper as the embedded store grows (`_frames_upkeep`)
        store = _offload_target(transport)
        self.keeper = FrameKeeperTrigger(store[0]) if store is not None else None
        _EMITTERS.add(self)
        self._replay_spill()

    # -- the hot path ----------------------------------------------------------------------------

    def emit(self, item: Any) -> None:
        """Queue one event (a raw item the builder turns into an event). Never raises, never waits on I/O.

        Back-pressure: with more than `high_water` events queued (the emitter thread is seconds behind),
        the caller yields the GIL once per event (`time.sleep(0)`). A CPU-bound producer otherwise keeps
        the GIL for a whole switch interval (5 ms) each time the emitter thread gives it up for SQLite or
        hashing, and the emitter falls ever further behind until events are dropped (`max_queue`)."""
        queue = self._queue
        depth = len(queue)
        if depth >= self.high_water:
            if depth >= self.max_queue:
                self.dropped += 1  # counted, shown in status(); only when back-pressure could not keep up
                return
            self.throttled += 1
            _yield_gil()
        queue.append(item)
        if self._thread is None:
            self._start()
        elif depth + 1 == self.batch_size:  # wake once per full batch, not on every append behind it
            self._wake.set()

    def emit_durable(self, item: Any) -> None:
        """Queue an event that must survive the process being killed right after (BLOCK, STEP_UP: issue 9).

        The event is built here, on the calling thread, and appended (fsync'd) to this process's journal
        before it is queued; the journal is replayed by the next emitter for the same sink if this process
        dies before delivering it (ingest is idempotent by event_id, so a replay never double-counts),
        and removed once everything queued is stored or spilled, or at a clean shutdown. ALLOW events stay
        in memory until the next batch (`interval`)."""
        try:
            event = self._build(item)
        except Exception:
            logger.exception("thoth: could not build an event; it is counted as dropped")
            self.dropped += 1
            return
        with self._spill_lock:  # journaled and queued together: `_drop_journal` sees both or neither
            try:
                self._append_locked(self._journal_path(), [event])
                self._journaled += 1
            except OSError as exc:  # still delivered from memory; only the kill-safety is lost
                logger.warning("thoth: could not journal a %s event to %s (%s)", event.get("event_type"),
                               self._journal_path(), exc)
            self.emit(_Built(event))

    def _journal_path(self) -> Path:
        base = self.spill_dir or (thoth_home() / "spill")
        return base / f"{self.transport.sink_id}.journal-{os.getpid()}"

    def _drop_journal(self, *, unless_pending: bool = False) -> None:
        """Everything taken so far is stored or spilled: the journal protects nothing that is not already on
        disk elsewhere, so a process that runs for days does not keep every event it ever journaled.
        `unless_pending`: keep it while events (maybe journaled) are still only in memory."""
        with contextlib.suppress(OSError), self._spill_lock:
            if unless_pending and (self._queue or self._unacked):
                return
            self._journal_path().unlink(missing_ok=True)
            self._journaled = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + self._inflight

    # -- thread ----------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._idle:
            if self._thread is None:
                _EMITTERS.add(self)
                self._stop = False
                self._thread = threading.Thread(target=self._run, name="thoth-nb-emitter", daemon=True)
                self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child the thread is gone: start fresh (the parent keeps its own queue). Locks
        are new too: another thread of the parent may have held one at the fork."""
        self._queue = collections.deque()
        self._thread = None
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._spill_lock = threading.Lock()
        self._journaled = 0  # the parent's journal is the parent's
        self._inflight = 0
        self._unacked = collections.deque()  # the parent's batches: the parent waits for their replies
        self._unacked_events = 0
        if self._writer is not None:
            self._writer.abandon_after_fork()  # the parent's child: not ours to stop or write to
            self._writer = None
        if self.keeper is not None:
            self.keeper.after_fork()

    def _run(self) -> None:
        while True:
            # a batch per interval (sooner when one is full or a flush asks), however long sending took
            due = self._last_take + self.interval - time.monotonic()
            if due > 0 or not self._queue:
                self._wake.wait(due if due > 0 else self.interval)
            self._wake.clear()
            self._drain()
            writer = self._writer
            if writer is not None and time.monotonic() - self._writer_used > WRITER_IDLE:
                self._writer = None
                writer.close()
            if self._stop and not self._queue:
                with self._idle:
                    self._idle.notify_all()
                return

    def _take(self) -> list[Any]:
        batch: list[Any] = []
        queue = self._queue
        with self._idle:
            while queue and len(batch) < self.batch_size:
                batch.append(queue.popleft())
            self._inflight = len(batch) + self._unacked_events
        if batch:
            self._last_take = time.monotonic()
        return batch

    def _drain(self) -> None:
        while True:
            raw = self._take()
            if not raw:
                self._settle(0)
                if self._journaled:
                    self._drop_journal(unless_pending=True)
                with self._idle:
                    self._inflight = 0
                    self._idle.notify_all()
                return
            events = []
            for item in raw:
                try:
                    events.append(item.event if type(item) is _Built else self._build(item))
                except Exception:  # bookkeeping must never take the emitter down
                    logger.exception("thoth: could not build an event; it is counted as dropped")
                    self.dropped += 1
            if not (events and self._offloaded(events, more=bool(self._queue))):
                self._settle(0)  # batches already with the child first: a session's events are chained in order
                self._deliver(events)
            if self.keeper is not None and events:
                self.keeper.stored(len(events), {event.get("tenant_id") or "" for event in events})
            with self._idle:
                self._inflight = self._unacked_events
                self._idle.notify_all()
            if len(raw) < self.batch_size and not self._wake.is_set() and not self._stop:
                # What was queued while this batch was sent waits until the next is due (`_run`), or a
                # batch is full, or a flush asks: taking it at once sent a steady stream of calls as
                # back-to-back batches of a few events, ~135 requests/s to a server instead of ~10.
                return

    # -- the writer child (embedded store) ------------------------------------------------------

    def _offloaded(self, events: list[Mapping[str, Any]], *, more: bool) -> bool:
        """Hand `events` to the writer child; False if it did not take them (the caller stores them).
        Up to `WINDOW` batches are with the child at once: this thread builds the next batch while
        the child stores the last one. A batch counts as sent when the child's reply comes."""
        writer = self._writer_for(len(events), more)
        if writer is None:
            return False
        try:
            writer.submit(encode_batch(events))
        except (WriterError, ValueError, TypeError) as exc:
            self._writer_failed(writer, f"{exc}; {len(events)} events are stored in-process")
            return False
        self._unacked.append(events)
        self._unacked_events += len(events)
        self._settle(WINDOW - 1)
        return True

    def _settle(self, keep: int) -> None:
        """Wait for the child's replies until at most `keep` batches are unanswered. If the child fails,
        every unanswered batch is stored in-process, oldest first."""
        unacked = self._unacked
        writer = self._writer
        while len(unacked) > keep:
            try:
                if writer is None:
                    raise WriterError("the store writer stopped")
                writer.collect()
            except WriterError as exc:
                waiting = sum(len(batch) for batch in unacked)
                if writer is not None:
                    self._writer_failed(writer, f"{exc}; {waiting} events are stored in-process")
                while unacked:
                    batch = unacked.popleft()
                    self._unacked_events -= len(batch)
                    self._deliver(batch)
                return
            batch = unacked.popleft()
            self._unacked_events -= len(batch)
            self._writer_streak = 0
            self._writer_used = time.monotonic()
            self.offloaded += 1
            self.sent += len(batch)

    def _writer_for(self, size: int, more: bool) -> StoreWriter | None:
        """The running writer child, if there is one ready; starts one when batches are big enough."""
        target = self._writer_target
        if target is None:
            return None
        writer = self._writer
        always = self.offload == "always"
        if writer is None:
            if not (always or size >= OFFLOAD_AT or more) or time.monotonic() < self._writer_retry_at:
                return None
            writer = StoreWriter(target[0], busy_timeout=target[1])
            try:
                writer.start()
            except OSError as exc:
                self.writer_failures += 1
                self.last_error = f"cannot start the store writer: {exc}"
                self._writer_retry_at = time.monotonic() + WRITER_BACKOFF[1]
                logger.warning("thoth: %s; events are stored in-process", self.last_error)
                return None
            self._writer = writer
            self._writer_used = time.monotonic()
        try:
            if always:  # wait for it: "always" means this batch goes through the child too
                deadline = time.monotonic() + writer.ready_timeout
                while not writer.ready() and time.monotonic() < deadline:
                    time.sleep(0.005)
            if writer.ready():
                return writer
        except WriterError as exc:
            self._writer_failed(writer, f"{exc}; events are stored in-process meanwhile")
        return None  # starting (~0.2 s): this batch is stored in-process meanwhile

    def _writer_failed(self, writer: StoreWriter, message: str) -> None:
        """Count the failure, stop the child, and start another no sooner than the back-off says."""
        self.writer_failures += 1
        self.failures += 1
        self.last_error = message
        self._writer_streak += 1
        first, cap = WRITER_BACKOFF
        self._writer_retry_at = time.monotonic() + min(cap, first * 2 ** (self._writer_streak - 1))
        logger.warning("thoth: %s", message)
        self._writer = None
        writer.close(timeout=1.0)

    @property
    def writer_pid(self) -> int | None:
        writer = self._writer
        return writer.pid if writer is not None else None

    def _deliver(self, events: list[Mapping[str, Any]]) -> bool:
        if not events:
            return True
        self._sending = events
        try:
            return self._deliver_with_retries(events)
        finally:
            self._sending = None

    def _deliver_with_retries(self, events: list[Mapping[str, Any]]) -> bool:
        delays = (0.0, *self.retry_delays)
        asked = 0.0
        for attempt, delay in enumerate(delays):
            wait = max(delay, asked) if delay else 0.0
            if wait:
                time.sleep(wait if not self._stop else min(wait, 0.05))
            try:
                self.transport.send_events(events)
            except EnforcerError as exc:
                self.failures += 1
                self.last_error = exc.message
                asked = exc.retry_after or 0.0  # honour the server's Retry-After (≤ 30 s)
                retryable = exc.kind in ("network", "timeout", "internal") or exc.status in _RETRYABLE_STATUS
                if not retryable:
                    logger.warning("thoth: %d events rejected by the sink and dropped: %s", len(events), exc.message)
                    self.dropped += len(events)
                    return False
                logger.debug("thoth: event delivery attempt %d failed: %s", attempt + 1, exc.message)
                continue
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.debug("thoth: event delivery failed: %s", exc, exc_info=True)
                continue
            self.sent += len(events)
            return True
        self._spill(events)
        return False

    # -- spill and replay ------------------------------------------------------------------------

    def _spill_path(self) -> Path:
        base = self.spill_dir or (thoth_home() / "spill")
        return base / f"{self.transport.sink_id}.jsonl"

    def _spill(self, events: Sequence[Mapping[str, Any]], *, kept_in: Sequence[Path] = ()) -> bool:
        """Append `events` to the spill file; False if the disk refused. `kept_in`: files that still hold
        these events (a replay's claimed files): then nothing is lost or counted as dropped, and the
        caller keeps those files for a later start to replay."""
        path = self._spill_path()
        try:
            self._append(path, events)
            self.spilled += len(events)
            logger.warning("thoth: sink unavailable (%s); %d events spilled to %s for replay",
                           self.last_error, len(events), path)
            return True
        except OSError as exc:
            if kept_in:
                logger.error("thoth: could not spill %d undelivered events to %s (%s); they stay in %s and the "
                             "next start replays them", len(events), path, exc, ", ".join(map(str, kept_in)))
                return False
            self.dropped += len(events)
            logger.error("thoth: could not spill %d events to %s (%s); they are lost and counted as dropped",
                         len(events), path, exc)
            return False

    def _append(self, path: Path, events: Sequence[Mapping[str, Any]]) -> None:
        """Append JSON lines and fsync; on failure the file is cut back to where it was (no half line)."""
        with self._spill_lock:
            self._append_locked(path, events)

    @staticmethod
    def _append_locked(path: Path, events: Sequence[Mapping[str, Any]]) -> None:
        data = b"".join(_json.dumps_bytes(event) + b"\n" for event in events)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:  # unbuffered: nothing is left in a buffer to be written after a failure
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # a full disk fails mid-batch: cut the file back, so no half line swallows the next
                # batch's first event and no event counted as dropped is replayed later
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    def _claim(self, path: Path) -> list[Path]:
        """Rename the spill file, and any file an earlier replayer claimed but died before finishing, to
        names this process owns (atomic: two processes never replay the same file)."""
        claimed: list[Path] = []

        def take(source: Path) -> None:
            target = path.with_suffix(f".replay-{os.getpid()}-{time.monotonic_ns()}")
            with contextlib.suppress(OSError):
                source.rename(target)
                claimed.append(target)

        with self._spill_lock:
            if path.exists():
                take(path)
            with contextlib.suppress(OSError):
                for orphan in sorted(path.parent.glob(f"{path.stem}.replay-*")):
                    found = re.search(r"\.replay-(\d+)-\d+$", orphan.name)
                    if found and not _alive(int(found.group(1))) and orphan not in claimed:
                        take(orphan)
                for journal in sorted(path.parent.glob(f"{path.stem}.journal-*")):  # of killed processes
                    found = re.search(r"\.journal-(\d+)$", journal.name)
                    if found and not _alive(int(found.group(1))):
                        take(journal)
        return claimed

    def _replay_spill(self) -> int:
        """Send events spilled by an earlier run; the file is removed only after the sink took them."""
        claimed = self._claim(self._spill_path())
        if not claimed:
            return 0
        events: list[Mapping[str, Any]] = []
        unreadable = 0
        for part in claimed:
            try:
                with part.open("rb") as fh:
                    for line in fh:
                        if line.strip():
                            try:
                                events.append(_json.loads(line))
                            except ValueError:
                                unreadable += 1
            except OSError as exc:
                logger.warning("thoth: could not read spill file %s (%s); a later start retries it", part, exc)
                return 0
        if unreadable:
            self.dropped += unreadable
            logger.warning("thoth: %d spilled lines could not be read and are counted as dropped", unreadable)
        delivered = 0
        kept = True
        for start in range(0, len(events), self.batch_size):
            chunk = events[start : start + self.batch_size]
            try:
                self.transport.send_events(chunk)
                delivered += len(chunk)
            except Exception as exc:
                self.last_error = str(exc)
                # a full disk refuses the re-spill: the claimed files still hold every event, so they stay
                # (replayed again by the next start; what was delivered meanwhile is a duplicate by id)
                kept = self._spill(events[start:], kept_in=claimed)
                break
        self.replayed += delivered
        if kept:
            for part in claimed:
                part.unlink(missing_ok=True)
        if delivered:
            logger.info("thoth: replayed %d spilled events to %s", delivered, self.transport.name)
        return delivered

    def replay_spill(self) -> int:
        return self._replay_spill()

    # -- public control --------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far was delivered (or spilled); False on timeout."""
        if not self._queue and not self._inflight:
            return True
        if self._thread is None:
            self._start()
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush, stop the thread, and spill whatever could not be sent in time."""
        self.flush(timeout)
        if self.keeper is not None:
            self.keeper.close()
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
            sending = self._sending
            if thread.is_alive() and sending:
                # The sink has not answered (a hung server: up to the read timeout). The daemon thread dies
                # with the interpreter and its batch with it, so spill a copy now; should the send still
                # succeed, the replay is a duplicate by event_id, which ingest ignores (D7).
                self.last_error = "the sink did not answer within the shutdown timeout"
                self._spill(list(sending))
        self._thread = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(timeout=2.0)
        leftover = []
        while self._queue:
            with contextlib.suppress(Exception):
                item = self._queue.popleft()
                leftover.append(item.event if type(item) is _Built else self._build(item))
        if leftover:
            self._spill(leftover)
        if not leftover and not self._queue and not self._inflight:
            self._drop_journal()  # everything it protected was delivered
        _EMITTERS.discard(self)  # a stopped emitter no longer counts in status(); emit() restarts it

    def stats(self) -> dict[str, Any]:
        return {
            "sink": self.transport.name,
            "queue_depth": self.queue_depth,
            "sent": self.sent,
            "dropped": self.dropped,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "throttled": self.throttled,
            "failures": self.failures,
            "last_error": self.last_error,
            "writer_pid": self.writer_pid,
            "offloaded_batches": self.offloaded,
            "writer_failures": self.writer_failures,
        }


_yield_gil = functools.partial(time.sleep, 0)


def _offload_target(transport: Transport) -> tuple[Path, float] | None:
    """(store file, busy timeout) when `transport` stores events into an embedded SQLite file that a
    writer child can open too; None otherwise (HTTP, a test's fake sink, a store of another kind)."""
    from thoth_nb._transports.embedded import EmbeddedTransport
    from thoth_nb.engine.store import SQLiteStore

    if type(transport) is not EmbeddedTransport:
        return None
    store = transport.engine.store
    # a relative path names the file it named when the store opened only while the cwd stays the same
    if type(store) is not SQLiteStore or not store.path.is_absolute():
        return None
    return store.path, float(store._busy_timeout)


def _reset_after_fork() -> None:
    for emitter in list(_EMITTERS):
        emitter._after_fork()
    util = sys.modules.get("multiprocessing.util")
    if util is not None:  # maybe a multiprocessing child: see _flush_at_multiprocessing_exit
        util.register_after_fork(_flush_all_at_exit, _flush_at_multiprocessing_exit)


def _flush_at_multiprocessing_exit(_: object) -> None:
    """A `multiprocessing` child started by fork (the default on Linux before Python 3.14) ends with
    `os._exit()`, so atexit never runs and every event it queued was lost. Its bootstrap clears the
    finalizers it inherited, then runs the after-fork callbacks (this one, registered from the fork hook
    above) and, when the target returns, the finalizers: there the emitters flush and shut down."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _flush_all_at_exit, exitpriority=10)


if hasattr(os, "register_at_fork"):  # instead of comparing os.getpid() on every emit
    os.register_at_fork(after_in_child=_reset_after_fork)


def _alive(pid: int) -> bool:
    """Is the process that claimed a spill file still running? (Windows: assume so; os.kill would kill.)"""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@atexit.register
def _flush_all_at_exit() -> None:
    for emitter in all_emitters():
        with contextlib.suppress(Exception):
            emitter.shutdown(timeout=3.0)
