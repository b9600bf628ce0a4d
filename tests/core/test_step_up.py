"""Embedded step-up: a held call waits on the store and is resolved from anywhere (D5)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation

paid: list[int] = []


def pay(amount: int) -> str:
    paid.append(amount)
    return f"paid {amount}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    paid.clear()


def first_hold(timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = thoth_nb.holds()
        if pending:
            return pending[0]
        time.sleep(0.01)
    raise AssertionError("no hold appeared")


def resolve_later(approve: bool, delay: float = 0.0, **options: Any) -> dict[str, float]:
    stamp: dict[str, float] = {}

    def run() -> None:
        hold = first_hold()
        time.sleep(delay)
        stamp["resolved"] = time.monotonic()
        (thoth_nb.approve if approve else thoth_nb.deny)(hold["approval_id"], reviewer="rev", **options)

    threading.Thread(target=run, daemon=True).start()
    return stamp


@pytest.fixture
def step_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "enforcement": "step_up", "step_up_timeout_minutes": 1, "step_up_poll_interval_ms": 5000}


def test_approved_from_another_thread_resumes_fast(step_cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**step_cfg)(pay)
    stamp = resolve_later(True)
    assert tool(500) == "paid 500"
    resumed = time.monotonic() - stamp["resolved"]
    assert resumed < 0.1 * 5, f"resumed {resumed:.3f}s after approval with a 5 s poll interval"
    assert paid == [500]
    [hold] = thoth_nb.holds("approved")
    assert hold["reviewer"] == "rev" and hold["tool_name"] == "pay" and hold["tool_args"] == {"amount": 500}
    thoth_nb.flush()
    from thoth_nb._runtime import local_store

    post = next(e for e in local_store().events("t") if e["event_type"] == "TOOL_CALL_POST")
    assert post["metadata"]["hold_token"] == hold["hold_token"] and post["metadata"]["reviewer"] == "rev"
    assert post["metadata"]["decision_reason_code"] == "step_up_approved"


def test_denied_raises_with_reason(step_cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**step_cfg)(pay)
    resolve_later(False, note="too much")
    with pytest.raises(ThothPolicyViolation, match="denied by rev: too much") as info:
        tool(500)
    assert info.value.violation_id and paid == []


def test_timeout_denies(step_cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**{**step_cfg, "step_up_timeout_minutes": 0.005})(pay)
    with pytest.raises(ThothPolicyViolation, match="step-up approval timed out"):
        tool(500)
    assert paid == []
    [hold] = thoth_nb.holds("all")
    assert hold["status"] in ("denied", "expired")  # the waiter gave up: nobody can approve it later


async def test_async_tool_waits_without_blocking_the_loop(step_cfg: dict[str, Any]) -> None:
    import asyncio

    async def apay(amount: int) -> str:
        paid.append(amount)
        return "ok"

    tool = thoth_nb.governed(**step_cfg)(apay)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    resolve_later(True, delay=0.5)
    started = time.monotonic()
    assert await tool(500) == "ok"
    held_for = time.monotonic() - started
    task.cancel()
    # the event loop kept running while the call was held (a blocked loop would tick once at most)
    assert held_for >= 0.4 and ticks >= 5, (held_for, ticks)


def test_approve_from_another_process_via_cli(step_cfg: dict[str, Any], thoth_home: Any) -> None:
    tool = thoth_nb.governed(**step_cfg)(pay)
    result: dict[str, Any] = {}

    def call() -> None:
        result["value"] = tool(700)

    worker = threading.Thread(target=call)
    worker.start()
    hold = first_hold()
    env = {**os.environ, "THOTH_HOME": str(thoth_home)}
    listed = subprocess.run([sys.executable, "-m", "thoth_nb.cli", "holds"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert hold["approval_id"] in listed.stdout
    done = subprocess.run([sys.executable, "-m", "thoth_nb.cli", "approve", hold["approval_id"], "--reviewer",
                           "cli-user"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    worker.join(timeout=10)
    assert result["value"] == "paid 700"
    again = subprocess.run([sys.executable, "-m", "thoth_nb.cli", "deny", hold["approval_id"]], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already approved" in again.stderr


def test_interrupt_while_held_denies_the_hold(step_cfg: dict[str, Any]) -> None:
    import _thread
    import signal

    tool = thoth_nb.governed(**step_cfg)(pay)
    armed = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:  # Ctrl-C, raised once per arming
        if armed.is_set():
            armed.clear()
            raise KeyboardInterrupt

    done = threading.Event()

    def interrupt() -> None:
        first_hold(timeout=30.0)
        # A KeyboardInterrupt that lands while the main thread runs a finalizer (the garbage collector
        # runs them anywhere) is swallowed by Python ("Exception ignored in ..."), as a second Ctrl-C
        # would then be needed by hand: if the hold is still pending 3 s later, interrupt again.
        while not done.is_set() and thoth_nb.holds():
            armed.set()
            _thread.interrupt_main()
            done.wait(3.0)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    helper = threading.Thread(target=interrupt, daemon=True)
    try:
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            tool(500)
    finally:
        done.set()
        helper.join(timeout=10)
        armed.clear()
        signal.signal(signal.SIGINT, previous)  # (an interrupt still pending finds on_interrupt disarmed)
    assert paid == []
    [hold] = thoth_nb.holds("denied")
    assert "interrupted" in hold["note"]


def test_unknown_hold_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="no hold 'apr_nope'"):
        thoth_nb.approve("apr_nope")


def test_session_scope_approval_allows_same_args_again(step_cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**step_cfg)(pay)
    resolve_later(True, scope="session")
    assert tool(500) == "paid 500"
    assert tool(500) == "paid 500"  # no second hold: granted for the session with these arguments
    assert len(thoth_nb.holds("all")) == 1
