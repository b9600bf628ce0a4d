"""Approval cards in-process (no kernel): rendering, resolving from a card while another thread waits,
the HTTP fallback's one-time secrets, the wait hook's wake-ups, and bulk approve/deny."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import thoth_nb
from thoth_nb import _context

pytest.importorskip("ipywidgets")

from thoth_nb.notebook import approval
from thoth_nb.notebook._kernel_wait import KernelWaiter, detect_strategy

POLICY = """\
version: 1
default: allow
rules:
  - id: pay-needs-human
    tool: pay
    decision: step_up
    reason: payments need a human
    severity: high
"""


def pay(amount: int, to: str, memo: str = "") -> str:
    return f"paid {amount} to {to}"


@pytest.fixture
def governed_pay(thoth_home: Path) -> Any:
    policy = thoth_home / "policy.yaml"
    thoth_home.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    return thoth_nb.governed(pay, agent_id="agent-1", approved_scope=["pay"], tenant_id="t1", policy=str(policy),
                             enforcement="step_up", step_up_timeout_minutes=0.5)


@pytest.fixture
def cards() -> Iterator[approval.ApprovalCards]:
    shown: list[dict[str, Any]] = []
    cards = approval.ApprovalCards(None, KernelWaiter(None))
    cards.display = shown.append
    cards.shown = shown  # type: ignore[attr-defined]
    _context.add_listener(cards)
    _context.set_wait_hook(cards.waiter.wait)
    try:
        yield cards
    finally:
        _context.remove_listener(cards)
        _context.set_wait_hook(None)
        cards.close()


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_for_card(cards: approval.ApprovalCards, n: int = 1, timeout: float = 10.0) -> list[approval.ApprovalCard]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(cards.cards) >= n:
            return list(cards.cards.values())
        time.sleep(0.01)
    raise AssertionError(f"expected {n} cards, have {len(cards.cards)}")


def test_format_args_folds_long_values_and_escapes() -> None:
    text = approval.format_args({"to": "<bob>", "memo": "x" * 500, "items": [1, 2]})
    assert "&lt;bob&gt;" in text and "<bob>" not in text
    assert "<details>" in text and "(500 chars)" in text
    assert "items" in text and "1," in text
    assert "no arguments" in approval.format_args({})


def test_card_shows_the_hold_and_approve_resumes_the_waiting_thread(cards: approval.ApprovalCards,
                                                                     governed_pay: Any) -> None:
    thread, out = _in_thread(governed_pay, 5, to="bob")
    (card,) = _wait_for_card(cards)
    details = card.details.value
    assert "payments need a human" in details and "pay-needs-human" in details and "75" in details
    assert "bob" in details and "agent-1" in details
    assert "left" in card.countdown.value
    assert "thoth-nb approve apr_" in card.fallback.value
    bundle = cards.shown[0]  # type: ignore[attr-defined]
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == card.box.model_id
    assert card.approval_id in bundle["text/plain"]

    started = time.perf_counter()
    card.approve_once.click()
    thread.join(5)
    latency = time.perf_counter() - started
    assert out == {"result": "paid 5 to bob"}
    assert latency < 0.5, latency
    assert card.done and all(b.disabled for b in card.buttons)
    assert "Approved once" in card.header.value
    assert "the agent waited" in card.countdown.value and "by <b>" in card.countdown.value
    assert not cards.cards  # no longer pending


def test_deny_with_note_raises_in_the_waiting_thread(cards: approval.ApprovalCards, governed_pay: Any) -> None:
    thread, out = _in_thread(governed_pay, 5, to="bob")
    (card,) = _wait_for_card(cards)
    card.note.value = "not today"
    card.resolve(False, "once")
    thread.join(5)
    assert isinstance(out.get("error"), thoth_nb.ThothPolicyViolation)
    assert "denied" in str(out["error"])
    assert "Denied" in card.header.value


def test_session_scope_and_edited_arguments(cards: approval.ApprovalCards, governed_pay: Any) -> None:
    thread, out = _in_thread(governed_pay, 900, to="mallory")
    (card,) = _wait_for_card(cards)
    card.edit_button.click()
    assert card.editor.layout.display == ""
    card.editor.value = "{not json"
    card.approve_edited.click()
    assert "not valid JSON" in card.message.value and not card.done
    card.editor.value = json.dumps({"amount": 9, "to": "mallory"})
    card.approve_edited.click()
    thread.join(5)
    assert out == {"result": "paid 9 to mallory"}
    assert "with edited arguments" in card.header.value

    thread, out = _in_thread(governed_pay, 1, to="ann")
    (card,) = _wait_for_card(cards)
    card.approve_session.click()
    thread.join(5)
    assert out == {"result": "paid 1 to ann"}
    assert "for this session" in card.header.value
    assert governed_pay(1, to="ann") == "paid 1 to ann"  # granted: no new card
    assert not cards.cards


def test_several_holds_resolve_independently(cards: approval.ApprovalCards, governed_pay: Any) -> None:
    runs = [_in_thread(governed_pay, n, to=f"p{n}") for n in (1, 2, 3)]
    held = _wait_for_card(cards, 3)
    assert len({c.approval_id for c in held}) == 3
    by_amount = {c.call.tool_args["amount"]: c for c in held}  # type: ignore[index]
    by_amount[2].resolve(False, "once")
    for thread, out in runs:
        if thread is runs[1][0]:
            thread.join(5)
            assert isinstance(out.get("error"), thoth_nb.ThothPolicyViolation)
    assert runs[0][0].is_alive() and runs[2][0].is_alive()  # the others still wait
    by_amount[1].resolve(True, "once")
    by_amount[3].resolve(True, "once")
    for thread, _ in runs:
        thread.join(5)
    assert runs[0][1] == {"result": "paid 1 to p1"} and runs[2][1] == {"result": "paid 3 to p3"}


def test_a_resolution_made_elsewhere_updates_the_card(cards: approval.ApprovalCards, governed_pay: Any) -> None:
    thread, out = _in_thread(governed_pay, 5, to="bob")
    (card,) = _wait_for_card(cards)
    thoth_nb.deny(card.approval_id, reviewer="alice", note="from the CLI")
    thread.join(5)
    assert isinstance(out.get("error"), thoth_nb.ThothPolicyViolation)
    assert "Denied" in card.header.value and "alice" in card.countdown.value
    card.resolve(True, "once")  # a late click changes nothing
    assert "Denied" in card.header.value


def test_timeout_turns_the_card_into_a_denial(cards: approval.ApprovalCards, thoth_home: Path) -> None:
    policy = thoth_home / "policy.yaml"
    thoth_home.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    quick = thoth_nb.governed(pay, agent_id="a", approved_scope=["pay"], tenant_id="t1", policy=str(policy),
                              enforcement="step_up", step_up_timeout_minutes=0.01)
    with pytest.raises(thoth_nb.ThothPolicyViolation, match="time"):
        quick(5, to="bob")
    card = cards.history[-1]
    assert card.done and "Timed out" in card.header.value


def test_local_resolver_secrets_are_one_time_and_per_hold(cards: approval.ApprovalCards,
                                                          governed_pay: Any) -> None:
    cards.force_http = True
    thread, out = _in_thread(governed_pay, 5, to="bob")
    (card,) = _wait_for_card(cards)
    assert card.http is not None and card.http.port == cards.resolver.port
    url = f"http://127.0.0.1:{card.http.port}/thoth/resolve"
    other = cards.resolver.secret_for("apr_other")
    bad = httpx.post(url, json={"id": card.approval_id, "secret": other, "action": "approve"}, trust_env=False)
    assert bad.status_code == 403
    bad = httpx.post(url, json={"id": card.approval_id, "secret": card.http.secret, "action": "run"},
                     trust_env=False)
    assert bad.status_code == 400
    good = httpx.post(url, content=json.dumps({"id": card.approval_id, "secret": card.http.secret,
                                               "action": "approve"}),
                      headers={"Content-Type": "text/plain"}, trust_env=False)
    assert good.status_code == 200 and good.json()["status"] == "approved"
    assert good.headers["access-control-allow-origin"] == "*"
    again = httpx.post(url, json={"id": card.approval_id, "secret": card.http.secret, "action": "deny"},
                       trust_env=False)
    assert again.status_code == 403
    thread.join(5)
    assert out == {"result": "paid 5 to bob"}
    assert card.http.active is False


def test_wait_returns_at_once_after_a_resolution() -> None:
    waiter = KernelWaiter(None)
    assert waiter.strategy == "none"
    waiter.wait(0.0)  # first call records where this thread is
    threading.Timer(0.05, waiter.notify).start()
    started = time.perf_counter()
    waiter.wait(2.0)
    assert time.perf_counter() - started < 0.5
    waiter.notify()  # a resolution between two waits: the next wait does not sleep
    started = time.perf_counter()
    waiter.wait(2.0)
    assert time.perf_counter() - started < 0.05
    started = time.perf_counter()
    waiter.wait(0.2)  # nothing new: sleeps the full slice
    assert time.perf_counter() - started >= 0.19


class _FakeKernel:
    pass


def test_detect_strategy_by_feature() -> None:
    assert detect_strategy(None) == "none"
    assert detect_strategy(_FakeKernel()) == "none"
    six = _FakeKernel()
    six.msg_queue = object()  # type: ignore[attr-defined]
    six.shell_stream = object()  # type: ignore[attr-defined]
    assert detect_strategy(six) == "queue-pump"
    seven = _FakeKernel()
    seven._supports_kernel_subshells = True  # type: ignore[attr-defined]
    seven.shell_channel_thread = object()  # type: ignore[attr-defined]
    from ipykernel.comm.comm import BaseComm

    expected = "route-subshell" if hasattr(BaseComm, "_reply_subshell_for") else "frontend-subshell"
    assert detect_strategy(seven) == expected


def test_install_and_uninstall_without_a_kernel() -> None:
    cards = approval.install(None)
    try:
        assert cards in _context.listeners and approval.install(None) is cards
        assert _context.wait_hook is None  # no kernel: the driver keeps its own waits
    finally:
        approval.uninstall(None)
    assert cards not in _context.listeners and approval._installed is None


# --- bulk approve / deny -------------------------------------------------------------------------


def _pending(governed_pay: Any, n: int) -> list[tuple[threading.Thread, dict[str, Any]]]:
    runs = [_in_thread(governed_pay, i, to=f"bulk{i}") for i in range(n)]
    deadline = time.monotonic() + 10
    while len(thoth_nb.holds("pending")) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return runs


def test_bulk_approve_a_dataframe_records_the_reviewer(governed_pay: Any) -> None:
    pd = pytest.importorskip("pandas")
    runs = _pending(governed_pay, 3)
    frame = pd.DataFrame(thoth_nb.holds("pending"))
    records = thoth_nb.approve(frame, reviewer="carol")
    assert isinstance(records, list) and len(records) == 3
    assert {r["reviewer"] for r in records} == {"carol"}
    for thread, out in runs:
        thread.join(5)
        assert out["result"].startswith("paid")
    assert not thoth_nb.holds("pending")


def test_bulk_deny_ids_and_records(governed_pay: Any) -> None:
    runs = _pending(governed_pay, 2)
    pending = thoth_nb.holds("pending")
    records = thoth_nb.deny([pending[0]["approval_id"], pending[1]], note="bulk")
    assert [r["status"] for r in records] == ["denied", "denied"]
    assert all(r["reviewer"] for r in records)
    for thread, out in runs:
        thread.join(5)
        assert isinstance(out.get("error"), thoth_nb.ThothPolicyViolation)
    with pytest.raises(RuntimeError, match="0 resolved, 1 not"):
        thoth_nb.approve([pending[0]["approval_id"]])


def test_bulk_needs_an_id_column() -> None:
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match="approval_id"):
        thoth_nb.approve(pd.DataFrame({"x": [1]}))
