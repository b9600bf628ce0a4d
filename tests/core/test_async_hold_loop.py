"""An async governed call held for approval never blocks its event loop on the HTTP transport's own
requests: the one-time `/readyz` probe (does the server long-poll?) and the cancel of a timed-out hold
go through the async client, so other tasks keep running meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._transports.http import HTTPTransport
from thoth_nb.testing import ScriptedEnforcer

URL = "http://enforcer.test"
SLOW = 0.4  # what the fake server takes for /readyz and for a cancel


class SlowServer:
    """One scripted enforcer behind two mocks: the sync client's sleeps (blocking whoever calls it), the
    async client's awaits. `paths` records which client asked for what."""

    def __init__(self, enforcer: ScriptedEnforcer) -> None:
        self.enforcer = enforcer
        self.paths: list[tuple[str, str]] = []

    def _slow(self, request: httpx.Request) -> bool:
        return request.url.path == "/readyz" or request.url.path.endswith("/cancel")

    def sync(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(("sync", request.url.path))
        if self._slow(request):
            time.sleep(SLOW)
        return self._answer(request)

    async def asyncio_(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(("async", request.url.path))
        if self._slow(request):
            await asyncio.sleep(SLOW)
        else:  # a long-poll waits as a server would (an instant answer would make the loop spin, not wait)
            await asyncio.sleep(float(request.url.params.get("wait", 0)))
        return self._answer(request)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ok", "long_poll": True})
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={"cancelled": True})
        return self.enforcer(request)


async def atool(path: str) -> str:
    return "ran " + path


def governed(server: SlowServer, **extra: Any) -> Any:
    transport = HTTPTransport(URL, transport=httpx.MockTransport(server.sync),
                              async_transport=httpx.MockTransport(server.asyncio_))
    config = {"agent_id": "a", "tenant_id": "t", "approved_scope": ["atool"], "api_url": URL,
              "step_up_poll_interval_ms": 10, **extra}
    return thoth_nb.governed(transport=transport, **config)(atool)


async def longest_stall(work: Any) -> tuple[Any, float]:
    """Run `work` beside a ticker; return its outcome and the longest the loop went without a tick."""
    stalls: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now
        stalls.append(time.perf_counter() - last)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running before the work starts
    try:
        outcome: Any = await work
    except ThothPolicyViolation as exc:
        outcome = exc
    finally:
        done.set()
        await tick
    return outcome, max(stalls)


def step_up(token: str) -> dict[str, Any]:
    return {"decision": "STEP_UP", "hold_token": token, "violation_id": "v1", "risk_score": 70}


async def test_the_long_poll_probe_of_an_async_step_up_does_not_block_the_loop() -> None:
    enforcer = ScriptedEnforcer(step_up("h1"))
    enforcer.holds["h1"] = {"resolved": True, "decision": "ALLOW", "reason": "approved"}
    server = SlowServer(enforcer)
    outcome, stall = await longest_stall(governed(server)("/x"))
    assert outcome == "ran /x"
    assert ("async", "/readyz") in server.paths and ("sync", "/readyz") not in server.paths
    assert stall < SLOW / 2, f"the event loop stood still {stall:.2f} s"


async def test_the_cancel_of_a_timed_out_async_hold_does_not_block_the_loop() -> None:
    enforcer = ScriptedEnforcer(step_up("h2"))
    enforcer.holds["h2"] = {"resolved": False, "decision": "STEP_UP"}
    server = SlowServer(enforcer)
    outcome, stall = await longest_stall(governed(server, step_up_timeout_minutes=0.1 / 60)("/y"))
    assert isinstance(outcome, ThothPolicyViolation) and "timed out" in str(outcome)
    assert ("async", "/v1/enforce/hold/h2/cancel") in server.paths
    assert ("sync", "/v1/enforce/hold/h2/cancel") not in server.paths
    assert stall < SLOW / 2, f"the event loop stood still {stall:.2f} s"
