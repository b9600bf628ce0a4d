"""The embedded enforcer: the engine in-process, the same decisions as `thoth-nb serve` (D4)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from thoth_nb._exceptions import EnforcerError
from thoth_nb._models import EnforcementDecision
from thoth_nb._transports.base import Transport
from thoth_nb.engine.decide import Engine
from thoth_nb.engine.store import HoldConflict, HoldNotFound

__all__ = ["EmbeddedTransport"]

_ASYNC_SLICE = 0.2


class EmbeddedTransport(Transport):
    long_poll = True
    wants_session_calls = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = f"embedded ({engine.store.path})"

    @property
    def sink_id(self) -> str:
        return "embedded-" + hashlib.sha256(str(self.engine.store.path).encode()).hexdigest()[:12]

    def enforce(self, body: Mapping[str, Any]) -> EnforcementDecision:
        try:
            return self.engine._decide(body)  # no request-id dedupe in-process: skip `decide`'s checks
        except Exception as exc:  # the engine failing is the enforcer failing: fail closed upstream
            raise EnforcerError("internal", f"embedded enforcer error: {type(exc).__name__}: {exc}") from exc

    def allow_check(self, static: Mapping[str, Any]) -> Callable[[str, dict[str, Any] | None],
                                                                 EnforcementDecision | None] | None:
        return self.engine.plain_allow_check(static)

    async def aenforce(self, body: Mapping[str, Any]) -> EnforcementDecision:
        return self.enforce(body)

    def poll_hold(self, token: str, wait: float) -> dict[str, Any]:
        try:
            return self.engine.wait_hold(token, wait)
        except HoldNotFound:
            raise EnforcerError("status", f"unknown hold {token}", status=404) from None
        except Exception as exc:
            raise EnforcerError("internal", f"embedded hold error: {exc}") from exc

    async def apoll_hold(self, token: str, wait: float) -> dict[str, Any]:
        # wait in short slices so cancelling the task (Interrupt) lands promptly
        return await asyncio.to_thread(self.poll_hold, token, min(wait, _ASYNC_SLICE))

    def cancel_hold(self, token: str, reason: str) -> None:
        try:
            self.engine.resolve(token, approve=False, reviewer="thoth_nb", note=reason)
        except (HoldConflict, HoldNotFound):
            pass

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        try:
            self.engine.store.ingest_events(events)
        except Exception as exc:
            raise EnforcerError("internal", f"could not store events: {exc}") from exc

    def explain(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        violation_id = body.get("violation_id")
        if not violation_id:
            return None
        try:
            return self.engine.explain(str(body["tenant_id"]), str(violation_id))
        except LookupError:
            return None

    def send_inventory(self, tenant_id: str, agent_id: str, tools: Sequence[Mapping[str, Any]]) -> None:
        self.engine.store.upsert_inventory(tenant_id, agent_id, tools)
