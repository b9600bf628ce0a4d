"""PROTOCOL §7 through a real socket: every way an enforcer can misbehave gives the documented decision.

| outcome | default | fail_open |: 2xx unknown decision BLOCK/BLOCK; 2xx body that won't decode BLOCK/ALLOW;
401/403/other 4xx BLOCK/BLOCK; 429 and 5xx BLOCK/ALLOW; network error and timeout BLOCK/ALLOW. Enforce is
never retried (one request per call).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _faults import RawEnforcer

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._transports import http as http_transport

pytestmark = pytest.mark.timeout(60)

ALLOW = b'{"decision": "ALLOW", "authorization_decision": "ALLOW", "reason": "ok"}'

# (id, status line, body, extra headers, lying content-length, default outcome, fail_open outcome, reason part)
CASES: list[tuple[str, str, bytes, str, int | None, str, str, str]] = [
    ("500", "500 Internal Server Error", b'{"error": "boom"}', "", None, "BLOCK", "ALLOW", "status=500"),
    ("502", "502 Bad Gateway", b"<html>bad gateway</html>", "", None, "BLOCK", "ALLOW", "status=502"),
    ("503", "503 Service Unavailable", b'{"message": "down"}', "", None, "BLOCK", "ALLOW", "status=503"),
    ("429", "429 Too Many Requests", b'{"message": "slow down"}', "Retry-After: 7\r\n", None, "BLOCK", "ALLOW",
     "status=429"),
    ("401", "401 Unauthorized", b'{"message": "bad key"}', "", None, "BLOCK", "BLOCK", "status=401"),
    ("403", "403 Forbidden", b'{"message": "wrong role"}', "", None, "BLOCK", "BLOCK", "status=403"),
    ("400", "400 Bad Request", b'{"message": "no"}', "", None, "BLOCK", "BLOCK", "status=400"),
    ("404", "404 Not Found", b"", "", None, "BLOCK", "BLOCK", "status=404"),
    ("truncated-json", "200 OK", b'{"decision": "ALL', "", None, "BLOCK", "ALLOW", "not JSON"),
    ("malformed-json", "200 OK", b"decision=ALLOW", "", None, "BLOCK", "ALLOW", "not JSON"),
    ("empty-200", "200 OK", b"", "", None, "BLOCK", "ALLOW", "not JSON"),
    ("json-not-object", "200 OK", b'["ALLOW"]', "", None, "BLOCK", "ALLOW", "not an object"),
    ("cut-connection", "200 OK", ALLOW[:20], "", len(ALLOW), "BLOCK", "ALLOW", "enforcer unavailable"),
    ("unknown-decision", "200 OK", b'{"decision": "PERHAPS", "reason": "?"}', "", None, "BLOCK", "BLOCK",
     "unsupported authorization decision"),
    ("missing-decision", "200 OK", b'{"reason": "no decision at all"}', "", None, "BLOCK", "BLOCK",
     "unsupported authorization decision"),
    ("step-up-no-token", "200 OK", b'{"decision": "STEP_UP", "reason": "needs a human"}', "", None, "BLOCK",
     "BLOCK", ""),
    ("deny-alias", "200 OK", b'{"decision": " deny ", "reason": "policy says no"}', "", None, "BLOCK", "BLOCK",
     "policy says no"),
    ("allow", "200 OK", ALLOW, "", None, "ALLOW", "ALLOW", ""),
]


@pytest.fixture
def raw() -> Iterator[RawEnforcer]:
    server = RawEnforcer()
    yield server
    thoth_nb.flush(timeout=5)
    server.close()


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 5 s read timeout of PROTOCOL §2, shortened so the slow-enforcer case stays fast."""
    monkeypatch.setattr(http_transport, "ENFORCE_TIMEOUT", httpx.Timeout(connect=1.0, read=0.4, write=1.0, pool=1.0))


def _tool(raw: RawEnforcer, fail_open: bool, ran: list[str], *, is_async: bool = False) -> Any:
    cfg: dict[str, Any] = {"api_url": raw.url, "api_key": "thk_test", "agent_id": "a", "tenant_id": "t",
                           "approved_scope": ["lookup"], "fail_open": fail_open, "tool_inventory": False}

    if is_async:
        async def lookup(q: str) -> str:
            ran.append(q)
            return q

        return thoth_nb.governed(**cfg)(lookup)

    def lookup(q: str) -> str:  # type: ignore[misc]
        ran.append(q)
        return q

    return thoth_nb.governed(**cfg)(lookup)


def _outcome(call: Any) -> tuple[str, str]:
    try:
        call()
    except ThothPolicyViolation as exc:
        return "BLOCK", exc.reason
    return "ALLOW", ""


@pytest.mark.parametrize("fail_open", [False, True], ids=["closed", "fail_open"])
@pytest.mark.parametrize(("case", "status", "body", "headers", "length", "closed", "opened", "why"), CASES,
                         ids=[c[0] for c in CASES])
def test_enforcer_answers_give_the_documented_decision(
    raw: RawEnforcer, fail_open: bool, case: str, status: str, body: bytes, headers: str, length: int | None,
    closed: str, opened: str, why: str,
) -> None:
    raw.answer(status, body, headers=headers, length=length)
    ran: list[str] = []
    tool = _tool(raw, fail_open, ran)
    decision, reason = _outcome(lambda: tool("x"))
    expected = opened if fail_open else closed
    assert decision == expected, reason
    assert ran == (["x"] if expected == "ALLOW" else [])
    if why and decision == "BLOCK":
        assert why in reason, reason
    assert raw.enforce_count() == 1, "enforce must never be retried"


@pytest.mark.parametrize("fail_open", [False, True], ids=["closed", "fail_open"])
@pytest.mark.parametrize("case", ["503", "malformed-json", "unknown-decision", "403", "cut-connection"])
def test_async_tools_get_the_same_decisions(raw: RawEnforcer, fail_open: bool, case: str) -> None:
    _, status, body, headers, length, closed, opened, _ = next(c for c in CASES if c[0] == case)
    raw.answer(status, body, headers=headers, length=length)
    ran: list[str] = []
    tool = _tool(raw, fail_open, ran, is_async=True)
    decision, reason = _outcome(lambda: asyncio.run(tool("x")))
    assert decision == (opened if fail_open else closed), reason
    assert raw.enforce_count() == 1


@pytest.mark.parametrize("fail_open", [False, True], ids=["closed", "fail_open"])
def test_slow_enforcer_times_out_within_the_read_timeout(raw: RawEnforcer, fail_open: bool) -> None:
    """The answer would come after the read timeout: the call does not wait for it."""
    raw.answer("200 OK", ALLOW)
    raw.delay = 3.0
    ran: list[str] = []
    tool = _tool(raw, fail_open, ran)
    started = time.monotonic()
    decision, reason = _outcome(lambda: tool("x"))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"waited {elapsed:.2f} s for a slow enforcer"
    if fail_open:
        assert decision == "ALLOW" and ran == ["x"]
    else:
        assert decision == "BLOCK" and "timed out" in reason and ran == []
    assert raw.enforce_count() == 1


def test_fail_open_reason_names_the_status(raw: RawEnforcer) -> None:
    """The ALLOW given under fail_open says why, so an audit can find calls that ran unchecked."""
    raw.answer("503 Service Unavailable", b"{}")
    seen: list[Any] = []
    from thoth_nb import _context

    def listener(phase: str, call: Any) -> None:
        if phase == "decided":
            seen.append(call.decision)

    _context.listeners.append(listener)
    try:
        ran: list[str] = []
        assert _tool(raw, True, ran)("x") == "x"
    finally:
        _context.listeners.remove(listener)
    assert seen and seen[-1].reason.startswith("enforcer unavailable (status=503, fail-open)")
    assert seen[-1].decision_reason_code == "enforcer_unavailable_fail_open"
