"""The one interface both enforcers sit behind (D4): embedded in-process, or HTTP (PROTOCOL.md)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from thoth_nb._models import EnforcementDecision

__all__ = ["Transport"]


class Transport(abc.ABC):
    """Enforce, wait on holds, ship events. Failures raise `EnforcerError`; the flow decides what they mean."""

    #: whether `poll_hold(token, wait)` blocks up to `wait` seconds until the hold resolves
    long_poll: bool = False
    #: a short description for status displays and error messages
    name: str = "transport"
    #: whether enforce bodies carry `session_tool_calls` (PROTOCOL §3.1, on the wire); the embedded
    #: engine keeps each session's history itself, so building the list per call would be wasted
    wants_session_calls: bool = True

    @abc.abstractmethod
    def enforce(self, body: Mapping[str, Any]) -> EnforcementDecision: ...

    def allow_check(self, static: Mapping[str, Any]) -> Callable[[str, dict[str, Any] | None],
                                                                 EnforcementDecision | None] | None:
        """An in-process shortcut for the commonest answer, or None (the default: always `enforce`).

        `static` is an enforce body without `tool_name` and `tool_args` (one governor's fixed fields). The
        check, called with a call's tool name and named arguments, returns exactly what `enforce` would
        return when that is a plain ALLOW (and records the call as `enforce` would); None means "call
        `enforce`", with nothing recorded. The sync wrapper uses it to skip building the body."""
        return None

    @abc.abstractmethod
    async def aenforce(self, body: Mapping[str, Any]) -> EnforcementDecision: ...

    @abc.abstractmethod
    def poll_hold(self, token: str, wait: float) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def apoll_hold(self, token: str, wait: float) -> dict[str, Any]: ...

    @abc.abstractmethod
    def send_events(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    def cancel_hold(self, token: str, reason: str) -> None:
        """Best effort: tell the enforcer the waiter gave up (interrupt), so the hold is not approved later."""

    async def acancel_hold(self, token: str, reason: str) -> None:
        """`cancel_hold` for an async caller (in-process by default: nothing to wait on)."""
        self.cancel_hold(token, reason)

    def explain(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    def send_inventory(self, tenant_id: str, agent_id: str, tools: Sequence[Mapping[str, Any]]) -> None:
        """Advisory list of an agent's tools (PROTOCOL §6); never grants anything."""

    def close(self) -> None:
        """Release connections."""

    @property
    def sink_id(self) -> str:
        """Names this transport's event sink, so spilled events replay to the same place."""
        return self.name
