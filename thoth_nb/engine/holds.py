"""Waiting on holds (D5): the record lives in the store; this only wakes waiters quickly.

A waiter in this process is woken at once by `notify()`; a resolution written by another process
(the CLI, a server, another kernel) is seen by re-reading the store every `recheck` seconds, so an
embedded hold resumes within ~50 ms of any approval instead of a full poll interval.
"""

from __future__ import annotations

import threading
import weakref

__all__ = ["HoldBoard", "board_for"]


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


_boards: weakref.WeakKeyDictionary[object, HoldBoard] = weakref.WeakKeyDictionary()
_boards_lock = threading.Lock()


def board_for(store: object) -> HoldBoard:
    """The board of one store, shared by every engine over it in this process: `thoth_nb.approve()`
    resolves through the default engine, and must wake a waiter of an engine with another policy at
    once rather than at its next re-check."""
    with _boards_lock:
        board = _boards.get(store)
        if board is None:
            board = _boards[store] = HoldBoard()
            subscribe = getattr(store, "subscribe_holds", None)  # PostgreSQL: other replicas' resolutions
            if subscribe is not None and subscribe(board.notify) is not None:
                board.recheck = 1.0  # pushed at once; the re-read is only a fallback
        return board
