"""LangGraph's async ToolNode gathers a step's tool calls without cancelling the siblings of a call that
interrupts, so a prompt resume can re-run the node while a sibling is still in flight: the resumed call
waits for that run and returns its output instead of deciding (and possibly running the tool) again."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("langgraph")

from thoth_nb.integrations import langgraph as lg


def test_a_call_still_in_flight_is_awaited_not_run_again() -> None:
    key = ("thread-a", "tools:1", "call-1")
    assert lg.settle(key, "search", {"q": "x"}) == (False, None)  # this run claims the call
    got: list[tuple[bool, object]] = []
    waiter = threading.Thread(target=lambda: got.append(lg.settle(key, "search", {"q": "x"})))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # the resumed call waits for the run in flight
    lg.remember(key, "search", {"q": "x"}, "results for x")
    lg.release(key)
    waiter.join(5)
    assert got == [(True, "results for x")]


async def test_a_failed_run_in_flight_lets_the_resumed_call_decide_afresh() -> None:
    key = ("thread-b", "tools:1", "call-2")
    assert await lg.asettle(key, "delete_file", {"path": "/p"}) == (False, None)
    waiting = asyncio.create_task(lg.asettle(key, "delete_file", {"path": "/p"}))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # waits without blocking the loop
    lg.release(key)  # the earlier run ended without an output (it raised or was paused)
    assert await asyncio.wait_for(waiting, 5) == (False, None)  # so this run claims it and decides
    lg.release(key)
