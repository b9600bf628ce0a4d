"""`POST /v1/events/batch` on a SQLite store, stored by a child process instead of this one.

Why: an ingest batch costs ~60 µs of CPU per event (parse, check, chain, hash, insert), and on a
worker thread of the server it holds the GIL in stretches of milliseconds. Every `/v1/enforce` that
arrives meanwhile waits for it: with the SDK's own events flowing into the same server, a governed
call measured 1.50-1.62x a do-nothing round trip against 1.33x with its events sent elsewhere. The
child (`_transports.store_writer`, frame kind B) runs `engine.ingest.ingest_body` on the request body
as it came, so the answer is the same as in-process; this process only passes bytes and waits with
the GIL released. If the child cannot start or fails, the batch is stored in-process as before.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from thoth_nb._transports.store_writer import StoreWriter, WriterError, encode_request
from thoth_nb.engine.ingest import BatchRefused
from thoth_nb.engine.store import IngestResult

__all__ = ["IngestChild"]

logger = logging.getLogger("thoth_nb")

#: after a failure, the next child starts no sooner than this (seconds)
RETRY_AFTER = 30.0
#: an idle child is stopped after this long (seconds) and started again by the next batch
IDLE_AFTER = 120.0


class IngestChild:
    """One child storing request bodies into `path`, one batch at a time (a lock keeps their order)."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer: StoreWriter | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._used = 0.0
        self._closed = False
        #: batches the child stored, and failures (each then stored in-process)
        self.batches = 0
        self.failures = 0
        self.last_error = ""

    @property
    def pid(self) -> int | None:
        writer = self._writer
        return writer.pid if writer is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Start the child now and wait until it has opened the store (else it starts with the first
        batch, which is then stored in-process). WriterError if it is not ready within `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._retry_at = 0.0
            while self._ready_writer() is None:
                if self._writer is None:
                    raise WriterError(f"the ingest child did not start: {self.last_error}")
                if time.monotonic() > deadline:
                    raise WriterError(f"the ingest child was not ready within {timeout:g} s")
                time.sleep(0.01)

    def ingest(self, data: bytes, tenant_id: str, max_events: int) -> IngestResult | None:
        """Store one request body through the child. None when the child is not ready (starting, or
        failed): the caller stores the batch in-process. BatchRefused exactly as `ingest_body` raises it."""
        try:
            frame = encode_request(data, tenant_id, max_events)
        except ValueError:  # a tenant id the frame cannot carry: stored in-process
            return None
        with self._lock:
            writer = self._ready_writer()
            if writer is None:
                return None
            try:
                reply = writer.send(frame)
            except WriterError as exc:
                self._failed(writer, str(exc))
                return None
            self._used = time.monotonic()
            self.batches += 1
        refused = reply.get("refused")
        if refused is not None:
            raise BatchRefused.from_dict(refused)
        return IngestResult(int(reply["accepted"]), int(reply["duplicates"]), list(reply["rejected"]))

    def _ready_writer(self) -> StoreWriter | None:
        writer = self._writer
        now = time.monotonic()
        if writer is not None and now - self._used > IDLE_AFTER:
            self._writer = None
            writer.close(timeout=1.0)
            writer = None
        if writer is None:
            if self._closed or now < self._retry_at:
                return None
            writer = StoreWriter(self.path, busy_timeout=self.busy_timeout, checkpoints="elsewhere")
            try:
                writer.start()
            except OSError as exc:
                self._failed(writer, f"cannot start the ingest child: {exc}")
                return None
            self._writer = writer
            self._used = now
        try:
            return writer if writer.ready() else None  # starting (~0.2 s): stored in-process meanwhile
        except WriterError as exc:
            self._failed(writer, str(exc))
            return None

    def _failed(self, writer: StoreWriter, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self._retry_at = time.monotonic() + RETRY_AFTER
        self._writer = None
        logger.warning("thoth: the ingest child failed (%s); batches are stored in-process", message)
        writer.close(timeout=1.0)

    def close(self) -> None:
        """Stop the child after the batch it is storing (if any); no new one starts."""
        with self._lock:
            self._closed = True
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "batches": self.batches, "failures": self.failures, "last_error": self.last_error}
