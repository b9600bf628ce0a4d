"""Starting the frame keeper (`analytics/_frame_keeper.py`) for an embedded SQLite store as it grows.

The emitter (events the SDK stores) and `thoth-nb serve` on SQLite (events it ingests) each hold one
`FrameKeeperTrigger` per store file and tell it what they stored. Every `KEEP_EVERY` events it starts
the keeper, a low-priority process that brings the DataFrame disk cache of each tenant written since
up to the store's last row; `close` starts it once more when at least `KEEP_AT_EXIT` were stored since.
So the first `events()` of a fresh kernel on a store written by thoth_nb maps a file instead of decoding
every row. The keeper is started by module name (this core module imports nothing from analytics), in a
session of its own (one started at exit outlives the process); one at a time per trigger: while one
runs, the next waits for the next count. THOTH_FRAME_KEEPER=0 or THOTH_FRAME_CACHE=0: never started.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from thoth_nb._config import frame_keeper_enabled, thoth_home

logger = logging.getLogger("thoth_nb")

#: events stored between two runs of the keeper; at least this many since the last run start one at close
KEEP_EVERY = 50_000
KEEP_AT_EXIT = 10_000
#: the keeper skips stores smaller than this (None: its default, the size from which reads are cached)
KEEP_MIN_ROWS: int | None = None


class FrameKeeperTrigger:
    """Counts what was stored into one SQLite store file and starts the frame keeper when it is due.
    Thread-safe (the server stores on several worker threads)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._since = 0  # events stored since the keeper last started
        self._tenants: set[str] = set()  # their tenants
        self.process: Any = None  # the last keeper started (a subprocess.Popen)

    @property
    def since(self) -> int:
        return self._since

    def stored(self, count: int, tenants: Iterable[str]) -> None:
        with self._lock:
            self._since += count
            self._tenants.update(tenants)
            due = self._since >= KEEP_EVERY
        if due:
            self.start()

    def close(self) -> None:
        if self._since >= KEEP_AT_EXIT:
            self.start()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.process = None  # the parent's

    def start(self) -> None:
        """Start the keeper for the tenants stored since its last run, without waiting for it; nothing
        when one still runs (the count goes on) or it is turned off (the count starts again)."""
        with self._lock:
            running = self.process is not None and self.process.poll() is None
            if running:
                return
            tenants = sorted(t for t in self._tenants if t)
            self._since, self._tenants, self.process = 0, set(), None
        if not tenants or not frame_keeper_enabled():
            return
        try:
            folder = thoth_home() / "frames-cache"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(folder / "keeper.log", "wb") as err:  # the last run's complaints, if any
                process = subprocess.Popen(
                    [sys.executable, "-m", "thoth_nb.analytics._frame_keeper", str(self.store), *tenants,
                     *(["--min-rows", str(KEEP_MIN_ROWS)] if KEEP_MIN_ROWS is not None else [])],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                    start_new_session=True)
        except OSError as exc:  # upkeep only: readers decode the store instead
            logger.debug("thoth: frame keeper not started: %s", exc)
            return
        with self._lock:
            self.process = process
