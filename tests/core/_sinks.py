"""A sink that stores into a SQLite store and can be told to fail like a dead server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thoth_nb._exceptions import EnforcerError
from thoth_nb._models import EnforcementDecision
from thoth_nb._transports.base import Transport
from thoth_nb.engine.store import SQLiteStore


class FlakySink(Transport):
    name = "flaky"

    def __init__(self, db: Path, *, failing: bool = False) -> None:
        self.store = SQLiteStore(db)
        self.failing = failing
        self.attempts = 0

    @property
    def sink_id(self) -> str:
        return "flaky-test-sink"

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.attempts += 1
        if self.failing:
            raise EnforcerError("network", "connection refused")
        self.store.ingest_events(events)

    def enforce(self, body: Mapping[str, Any]) -> EnforcementDecision:  # pragma: no cover - unused
        raise NotImplementedError

    async def aenforce(self, body: Mapping[str, Any]) -> EnforcementDecision:  # pragma: no cover
        raise NotImplementedError

    def poll_hold(self, token: str, wait: float) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    async def apoll_hold(self, token: str, wait: float) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError
