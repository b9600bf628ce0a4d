"""Process-wide state the core shares with the notebook layer: sessions, live listeners, cell overrides."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thoth_nb._flow import Call

__all__ = [
    "Session", "add_listener", "config_override", "listeners", "remove_listener", "session", "set_wait_hook",
    "wait_hook",
]

TRIM_AT = 4096
_KEEP = 128


class Session:
    """The completed tool calls of one session. The list is only appended to (and replaced, never
    cut, when it grows long) so a pending event can keep `(list, length)` as a cheap snapshot."""

    __slots__ = ("calls", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.calls: list[str] = []

    def completed(self, tool_name: str) -> None:
        calls = self.calls
        calls.append(tool_name)
        if len(calls) > TRIM_AT:
            self.trim()

    def trim(self) -> None:
        """Start a new list with the newest calls (the old one stays intact for pending events)."""
        self.calls = self.calls[-_KEEP:]

    def recent(self, current: str | None = None) -> list[str]:
        """PROTOCOL §3.1 session_tool_calls: completed calls plus the current one, newest 128."""
        out = self.calls[-_KEEP:]
        if current is not None and (not out or out[-1] != current):
            out.append(current)
            if len(out) > _KEEP:
                del out[0]
        return out


_sessions: dict[str, Session] = {}
_sessions_lock = threading.Lock()


def session(session_id: str) -> Session:
    found = _sessions.get(session_id)
    if found is None:
        with _sessions_lock:
            found = _sessions.setdefault(session_id, Session(session_id))
    return found


#: Callbacks told about every governed call as it happens: `(phase, call)` with phase one of
#: "decided", "finished", "blocked". Used by the notebook's live feed. Errors in them are swallowed.
listeners: list[Callable[[str, Call], None]] = []


def add_listener(fn: Callable[[str, Call], None]) -> None:
    if fn not in listeners:
        listeners.append(fn)


def remove_listener(fn: Callable[[str, Call], None]) -> None:
    if fn in listeners:
        listeners.remove(fn)


#: Set by the notebook layer while a kernel is busy: `hook(seconds)` waits up to `seconds` while
#: letting the kernel handle widget messages (D6). When set, the sync driver polls holds with
#: wait=0 and calls the hook between polls instead of blocking inside the transport.
wait_hook: Callable[[float], None] | None = None


def set_wait_hook(hook: Callable[[float], None] | None) -> None:
    global wait_hook
    wait_hook = hook


#: Config overrides for code running inside a `%%thoth` cell (or a `thoth_nb.governing()` block).
config_override: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "thoth_config_override", default=None
)
