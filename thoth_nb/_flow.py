"""The sans-I/O governance flow (STYLE: httpx's auth_flow): PRE → decide → hold → run → POST.

`Governor.flow(call)` is a generator that yields effects (`Enforce`, `PollHold`, `Sleep`, `CancelHold`) and receives
their results; it performs no I/O. The sync driver and the async driver in `_instrument` only carry
effects out, so both behave identically. Enforcer failures arrive as `EnforcerError` thrown into
the generator and become decisions here, in one place (PROTOCOL §7, D3).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from thoth_nb import _context
from thoth_nb._config import ThothConfig
from thoth_nb._exceptions import EnforcerError, ThothPolicyViolation
from thoth_nb._models import (
    DEFAULT_REASONS,
    DecisionType,
    EnforcementDecision,
    EnforcementMode,
    apply_modified_args,
)
from thoth_nb._redact import redact_args, redact_text
from thoth_nb._transports.base import Transport

if TYPE_CHECKING:
    from thoth_nb._emitter import Emitter

__all__ = ["Call", "CancelHold", "Enforce", "Governor", "PollHold", "Sleep", "build_event", "failure_decision"]

logger = logging.getLogger("thoth")
_EXPLAIN_FIELDS = frozenset({
    "decision", "decision_reason_code", "action_classification", "violation_id", "risk_score", "matched_rule_ids",
    "step_up_timeout_seconds",
})
TIMEOUT_REASON = "step-up approval timed out — no approver response"
_HOSTNAME = socket.gethostname()


class Enforce:
    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class PollHold:
    __slots__ = ("token", "wait")

    def __init__(self, token: str, wait: float) -> None:
        self.token = token
        self.wait = wait


class Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class CancelHold:
    """Tell the enforcer the waiter gave up on a hold (best effort; the transport swallows failures)."""

    __slots__ = ("reason", "token")

    def __init__(self, token: str, reason: str) -> None:
        self.token = token
        self.reason = reason


Effect = Enforce | PollHold | Sleep | CancelHold


class Call:
    """One governed invocation, from PRE to POST. Cheap to create: one clock read and the attributes the
    hot path touches (slots); the rarely set ones (holds, streaming, errors) are class-level defaults
    until set, which then go to a per-instance dict. Wall-clock times are derived from the monotonic
    reads on the emitter thread."""

    __slots__ = (
        "__dict__",
        "args",
        "calls",
        "calls_len",
        "decision",
        "governor",
        "kwargs",
        "outcome",
        "result",
        "t0",
        "t1",
        "tool_args",
        "tool_name",
    )

    # rarely set: read from the class until an instance sets its own
    chunks: int = 0
    error: BaseException | None = None
    hold_reply: dict[str, Any] | None = None
    result_type: str = ""
    size: int | None = None
    waited: float = 0.0

    def __init__(self, governor: Governor, tool_name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 tool_args: dict[str, Any] | None) -> None:
        self.governor = governor
        self.tool_name = tool_name
        self.args = args
        self.kwargs = kwargs
        self.tool_args = tool_args
        self.decision: EnforcementDecision | None = None
        self.outcome = ""
        self.result: Any = None
        self.t1 = 0.0
        self.t0 = _perf_counter()
        calls = governor.session.calls
        self.calls = calls
        self.calls_len = len(calls)

    @property
    def started_ns(self) -> int:
        """Wall-clock start in ns since the epoch."""
        return wall_ns(self.t0)

    @property
    def duration_ms(self) -> float:
        return ((self.t1 or _perf_counter()) - self.t0) * 1000.0

    @property
    def config(self) -> ThothConfig:
        return self.governor.config


_perf_counter = time.perf_counter
_anchor_ns = time.time_ns() - time.perf_counter_ns()


def wall_ns(perf: float) -> int:
    """A `time.perf_counter()` reading as wall-clock ns; the anchor is refreshed on the emitter thread
    (`refresh_clock`), so a wall-clock step is picked up within one batch."""
    return _anchor_ns + int(perf * 1e9)


def refresh_clock() -> None:
    global _anchor_ns
    _anchor_ns = time.time_ns() - time.perf_counter_ns()


def failure_decision(exc: EnforcerError, config: ThothConfig) -> EnforcementDecision:
    """PROTOCOL §7: what an enforcer failure means. Fail closed unless fail_open and retryable."""
    status = exc.status
    if config.enforcement is EnforcementMode.OBSERVE:
        return EnforcementDecision(DecisionType.ALLOW, f"observe mode ignores enforcer errors ({exc.message})",
                                   "observe_mode")
    retryable = exc.kind in ("network", "timeout", "internal", "decode") or (
        status is not None and (status == 429 or status >= 500)
    )
    if exc.kind == "status" and not retryable:
        reason = f"enforcer rejected request (status={status}): {exc.message}"
        logger.warning("thoth: %s", reason)
        return EnforcementDecision(DecisionType.BLOCK, reason, "enforcer_rejected", "enforcer_error", 100.0)
    if config.fail_open:
        suffix = f"status={status}, fail-open" if status is not None else "fail-open"
        reason = f"enforcer unavailable ({suffix}): {exc.message}"
        logger.warning("thoth: %s; allowing the call because fail_open is set", reason)
        return EnforcementDecision(DecisionType.ALLOW, reason, "enforcer_unavailable_fail_open")
    reason = f"enforcer unavailable: {exc.message}"
    logger.warning("thoth: %s; blocking the call (fail closed; set fail_open=True to allow on outages)", reason)
    return EnforcementDecision(DecisionType.BLOCK, reason, "enforcer_unavailable", "enforcer_error", 100.0)


class Governor:
    """Everything one instrumented agent needs; one per `instrument()` configuration."""

    #: set by an integration (e.g. "openai_agents", "mcp"); recorded as metadata.framework in events
    framework: str | None = None

    def __init__(self, config: ThothConfig, transport: Transport, emitter: Emitter) -> None:
        self.config = config
        self.transport = transport
        self.emitter = emitter
        self.session = _context.session(config.session_id)
        self._static = {
            "agent_id": config.agent_id,
            "tenant_id": config.tenant_id,
            "user_id": config.user_id,
            "session_id": config.session_id,
            "approved_scope": config.approved_scope,
            "enforcement_mode": config.enforcement.value,
            "environment": config.environment,
            "enforcement_trace_id": config.enforcement_trace_id,
            "step_up_timeout_seconds": config.step_up_timeout_seconds,
        }
        optional = {
            "session_intent": config.session_intent,
            "purpose": config.purpose,
            "data_classification": config.data_classification,
            "task_context": config.task_context or None,
            "identity_binding": config.identity_binding,
            "metadata": {"policy_context": config.policy_context} if config.policy_context else None,
        }
        self._static.update({k: v for k, v in optional.items() if v is not None})
        self.event_base = _event_base(config)
        self.metadata_base = _metadata_base(config)
        #: the transport's in-process answer for a plain ALLOW (`Transport.allow_check`), or None
        make_check = getattr(transport, "allow_check", None)  # a duck-typed transport may not have one
        self.allow_check = make_check(self._static) if make_check is not None else None

    # -- calls -----------------------------------------------------------------------------------

    def begin(self, tool_name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              tool_args: dict[str, Any] | None) -> Call:
        call = Call(self, tool_name, args, kwargs, tool_args)
        self.emitter.emit(call)  # a bare Call is its PRE event (`build_event`)
        return call

    def request(self, call: Call) -> dict[str, Any]:
        body = self._static.copy()
        body["tool_name"] = call.tool_name
        if self.transport.wants_session_calls:
            body["session_tool_calls"] = self.session.recent(call.tool_name)
        if call.tool_args is not None:
            body["tool_args"] = call.tool_args
        return body

    def flow(self, call: Call, decided: EnforcementDecision | None = None) -> Generator[
            Effect, Any, EnforcementDecision]:
        """`decided`: the enforcer's answer when the driver already asked it (the sync fast path)."""
        config = self.config
        decision: EnforcementDecision
        if decided is not None:
            decision = decided
        else:
            try:
                decision = yield Enforce(self.request(call))
            except EnforcerError as exc:
                decision = failure_decision(exc, config)
        call.decision = decision
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("thoth decision tool=%s decision=%s reason=%s hold_token=%s", call.tool_name,
                         decision.decision.value, decision.reason, decision.hold_token)
        if config.enforcement is EnforcementMode.OBSERVE and not decision.allowed:
            decision = EnforcementDecision(
                DecisionType.ALLOW, f"observe mode: would have been {decision.decision.value} ({decision.reason})",
                "observe_mode", decision.action_classification, decision.risk_score, decision.violation_id,
                observed_decision=decision.decision, matched_rule_ids=decision.matched_rule_ids,
            )
            call.decision = decision
        if decision.decision is DecisionType.STEP_UP:
            if _context.listeners:
                self._tell("held", call)
            started = time.monotonic()
            decision = yield from self._await_hold(call, decision)
            call.waited = time.monotonic() - started
            call.decision = decision
        if _context.listeners:
            self._tell("decided", call)
        return decision

    def _await_hold(self, call: Call, held: EnforcementDecision) -> Generator[Effect, Any, EnforcementDecision]:
        """PROTOCOL §4 client: poll (or long-poll) until resolved, denied, or the timeout (deny)."""
        token = held.hold_token
        assert token is not None
        timeout = self.config.step_up_timeout_seconds
        if held.step_up_timeout_seconds:
            timeout = min(timeout, held.step_up_timeout_seconds)
        interval = self.config.step_up_poll_interval_ms / 1000.0
        deadline = time.monotonic() + timeout
        while True:
            long_poll = self.transport.long_poll  # may change: an HTTP transport learns its server ignores waits
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield CancelHold(token, "step-up approval timed out")
                return self._final(held, DecisionType.BLOCK, TIMEOUT_REASON, "step_up_timeout")
            reply: dict[str, Any] | None = None
            try:
                reply = yield PollHold(token, min(interval, remaining) if long_poll else 0.0)
            except EnforcerError as exc:
                if exc.kind == "status" and exc.status in (401, 403, 404):
                    return self._final(held, DecisionType.BLOCK,
                                       f"step-up hold could not be checked (status={exc.status}): {exc.message}",
                                       "step_up_denied")
                logger.warning("thoth: polling hold %s failed (%s); still waiting", token, exc.message)
            if reply is not None and reply.get("resolved"):
                call.hold_reply = reply
                return self._resolved(call, held, reply)
            if not long_poll or reply is None:
                yield Sleep(min(interval, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _final(held: EnforcementDecision, decision: DecisionType, reason: str, code: str) -> EnforcementDecision:
        return EnforcementDecision(
            decision, reason, code, held.action_classification, held.risk_score, held.violation_id, held.hold_token,
            matched_rule_ids=held.matched_rule_ids,
        )

    def _resolved(self, call: Call, held: EnforcementDecision, reply: Mapping[str, Any]) -> EnforcementDecision:
        for field, mine in (("tool_name", call.tool_name),):
            if reply.get(field) not in (None, mine):
                return self._final(held, DecisionType.BLOCK, "hold reply was for another call", "step_up_denied")
        final = EnforcementDecision.from_response({**reply, "hold_token": held.hold_token})
        if final.decision is DecisionType.STEP_UP:  # a resolved hold must be ALLOW/MODIFY/BLOCK
            final.decision = DecisionType.BLOCK
        final.violation_id = final.violation_id or held.violation_id
        final.decision_reason_code = final.decision_reason_code or held.decision_reason_code
        final.matched_rule_ids = final.matched_rule_ids or held.matched_rule_ids
        final.risk_score = final.risk_score or held.risk_score
        final.hold_token = held.hold_token
        if final.decision_reason_code == "step_up_timeout":
            final.reason = TIMEOUT_REASON  # the same words whichever side noticed the timeout first (D5)
        if final.decision is DecisionType.ALLOW and final.decision_reason_code == "allowed":
            final.decision_reason_code = "step_up_approved"
        return final

    # -- outcomes --------------------------------------------------------------------------------

    def violation(self, call: Call, decision: EnforcementDecision) -> ThothPolicyViolation:
        reason = decision.reason or DEFAULT_REASONS.get(decision.decision, "blocked by Thoth policy")
        if decision.decision is DecisionType.DEFER:
            reason = decision.defer_reason or decision.reason or DEFAULT_REASONS[DecisionType.DEFER]
            if decision.defer_timeout_seconds and decision.defer_timeout_seconds > 0:
                reason += f" (retry in {decision.defer_timeout_seconds:g}s)"
        call.t1 = time.perf_counter()
        call.outcome = "blocked"
        self.emitter.emit_durable(("block", call))  # on disk before the violation is raised (issue 9)
        if _context.listeners:
            self._tell("blocked", call)
        error = ThothPolicyViolation(call.tool_name, reason, decision.violation_id, decision=decision)
        error.explainer = lambda: self.explain(call, decision)
        return error

    def explain(self, call: Call, decision: EnforcementDecision) -> dict[str, Any] | None:
        """PROTOCOL §6 `/v1/explain`: the enforce body plus the decision; None if the enforcer has none."""
        body = self.request(call)
        body.update({k: v for k, v in decision.to_dict().items() if k in _EXPLAIN_FIELDS})
        try:
            return self.transport.explain(body)
        except Exception:
            logger.debug("thoth: explain failed", exc_info=True)
            return None

    @staticmethod
    def apply(decision: EnforcementDecision, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if decision.decision is DecisionType.MODIFY and decision.modified_tool_args is not None:
            return apply_modified_args(decision.modified_tool_args, args, kwargs)
        return args, kwargs

    def finished(self, call: Call, result: Any, result_type: str | None = None) -> None:
        call.t1 = _perf_counter()
        call.result = result
        if result_type is not None:
            call.result_type = result_type
        if not call.outcome:
            call.outcome = "ok"
        session = self.session
        calls = session.calls
        calls.append(call.tool_name)
        if len(calls) > _context.TRIM_AT:
            session.trim()
        decision = call.decision
        if decision is not None and decision.hold_token is not None:
            self.emitter.emit_durable(("post", call))  # a stepped-up call's outcome survives a kill too
        else:
            self.emitter.emit(("post", call))
        if _context.listeners:
            self._tell("finished", call)

    def failed(self, call: Call, error: BaseException, outcome: str = "error") -> None:
        call.error = error
        call.outcome = outcome
        self.finished(call, None)

    @staticmethod
    def _tell(phase: str, call: Call) -> None:
        for listener in list(_context.listeners):
            try:
                listener(phase, call)
            except Exception:  # observers never break a governed call
                logger.debug("thoth: listener failed", exc_info=True)


# --- events (built on the emitter thread) -------------------------------------------------------


_iso_second: list[Any] = [None, ""]


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    cached = _iso_second
    if cached[0] != seconds:  # events come in bursts: format the date once per second
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cached[0] = seconds
    return f"{cached[1]}.{rest // 1000:06d}Z"


_CONTENT = {
    "pre": "tool invocation requested",
    "post": "tool invocation completed",
}
_TYPES = {"pre": "TOOL_CALL_PRE", "post": "TOOL_CALL_POST", "block": "TOOL_CALL_BLOCK"}


try:
    from uuid_utils import uuid7 as _uuid7  # Rust, ~0.3 µs
except ImportError:  # pragma: no cover - without the `fast` extra
    _uuid7 = None  # type: ignore[assignment]


def _new_uuid() -> str:
    """A time-ordered UUIDv7 (RFC 9562): stores index event ids at the right edge of the b-tree instead of
    at random pages, which made SQLite ingest ~1.5x faster than with uuid4 (`benchmarks/store.py`)."""
    if _uuid7 is not None:
        return str(_uuid7())
    stamp = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (stamp << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _event_base(config: ThothConfig) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant_id": config.tenant_id,
        "session_id": config.session_id,
        "user_id": config.user_id,
        "agent_id": config.agent_id,
        "source_type": "agent_tool_call",
        "approved_scope": config.approved_scope,
        "enforcement_mode": config.enforcement.value,
        "endpoint_id": _HOSTNAME,
        "hostname": _HOSTNAME,
        "hash": "",
        "previous_hash": "",
        "signature": "",
        "chain_index": None,
    }
    if config.purpose:
        base["purpose"] = config.purpose
    if config.data_classification:
        base["data_classification"] = config.data_classification
    if config.task_context:
        base["task_context"] = config.task_context
        for key, target in (("initiated_by", "initiated_by"), ("task_id", "task_id"), ("chain", "delegation_chain")):
            if key in config.task_context:
                base[target] = config.task_context[key]
    return base


def _metadata_base(config: ThothConfig) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sdk_language": "python",
        "sdk_name": "thoth_nb",
        "environment": config.environment,
        "enforcement_trace_id": config.enforcement_trace_id,
    }
    for key in ("purpose", "data_classification"):
        value = getattr(config, key)
        if value:
            base[key] = value
    if config.task_context:
        base["task_context"] = config.task_context
    return base


def build_event(item: Call | tuple[str, Call]) -> dict[str, Any]:
    """Turn a queued item into a PROTOCOL §5 event (runs on the emitter thread): ids, wall clock times and
    JSON-safe arguments are made here, not on the calling thread. The item is a bare `Call` for its PRE
    event (no tuple allocated per call on the hot path) or `(phase, call)` with phase "post" or "block"."""
    if type(item) is Call:
        phase, call = "pre", item
    else:
        phase, call = item  # type: ignore[misc]
    refresh_clock()
    ns = wall_ns(call.t0 if phase == "pre" else call.t1)
    governor = call.governor
    decision = call.decision
    safe_args = redact_args(call.tool_args, governor.config) if call.tool_args is not None else None
    upto = call.calls_len + (1 if phase == "post" else 0)
    metadata = governor.metadata_base.copy()
    if governor.framework:
        metadata["framework"] = governor.framework
    metadata["tool_call"] = {"name": call.tool_name, "arguments": safe_args}
    if safe_args is not None:
        metadata["tool_args"] = safe_args
    metadata["event_phase"] = phase
    if phase != "pre":
        metadata["duration_ms"] = round(call.duration_ms, 3)
        if decision is not None:
            metadata["authorization_decision"] = decision.decision.value
            metadata["decision_reason_code"] = decision.decision_reason_code
            metadata["reason"] = decision.reason
            metadata["risk_score"] = decision.risk_score
            if decision.matched_rule_ids:
                metadata["matched_rule_ids"] = decision.matched_rule_ids
            if decision.hold_token:
                metadata["hold_token"] = decision.hold_token
                metadata["step_up_wait_ms"] = round(call.waited * 1000.0, 3)
                if call.hold_reply and call.hold_reply.get("reviewer"):
                    metadata["reviewer"] = call.hold_reply["reviewer"]
            if decision.observed_decision is not None:
                metadata["observed_decision"] = decision.observed_decision.value
            if decision.violation_id:
                metadata["violation_id"] = decision.violation_id
            if decision.action_classification:
                metadata["action_classification"] = decision.action_classification
    if phase == "post":
        metadata["outcome"] = call.outcome or "ok"
        if call.error is not None:
            metadata["error_type"] = type(call.error).__name__
            metadata["error"] = redact_text(str(call.error)[:512], governor.config)
        else:
            metadata["result_type"] = call.result_type or type(call.result).__name__
            if call.size is not None:
                metadata["result_size_bytes"] = call.size
            else:
                try:
                    metadata["result_size_bytes"] = len(str(call.result).encode("utf-8", "replace"))
                except Exception:
                    pass
        if call.chunks:
            metadata["chunk_count"] = call.chunks
    event = governor.event_base.copy()
    event["event_id"] = f"{event['tenant_id']}:{_new_uuid()}"
    event["tool_name"] = call.tool_name
    event["event_type"] = _TYPES[phase]
    event["content"] = _CONTENT.get(phase) or (decision.reason if decision is not None else "blocked")
    event["metadata"] = metadata
    event["session_tool_calls"] = call.calls[max(0, upto - 128) : upto]
    event["occurred_at"] = _iso(ns)
    event["ttl"] = ns // 1_000_000_000 + 90 * 86400
    if phase == "block" and decision is not None:
        event["violation_id"] = decision.violation_id
    return event
