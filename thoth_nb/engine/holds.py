"""Waiting on holds (D5): the record lives in the store; this only wakes waiters quickly.

A waiter in this process is woken at once by `notify()`; a resolution written by another process
(the CLI, a server, another kernel) is seen by re-reading the store every `recheck` seconds, so an
embedded hold resumes within ~50 ms of any approval instead of a full poll interval.
"""

from __future__ import annotations

import threading

__all__ = ["HoldBoard"]


class HoldBoard:
    def __init__(self, recheck: float = 0.05) -> None:
        self._cond = threading.Condition()
        self.recheck = recheck

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, at most one re-check interval, returning early on any resolution here."""
        with self._cond:
            self._cond.wait(min(max(0.0, seconds), self.recheck))
