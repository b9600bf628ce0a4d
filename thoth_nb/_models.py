"""Types shared by the SDK, the engine and the server: enums, decisions, events, argument shaping.

The wire names are PROTOCOL.md's; these are the Python spellings of the seed's types.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_REASONS",
    "MAX_DECIDE_DEPTH",
    "BehavioralEvent",
    "DecisionType",
    "EnforcementDecision",
    "EnforcementMode",
    "EventType",
    "SourceType",
    "apply_modified_args",
    "json_safe",
    "parse_decision_value",
    "tool_args_of",
]

logger = logging.getLogger("thoth_nb")


class EnforcementMode(enum.StrEnum):
    OBSERVE = "observe"
    STEP_UP = "step_up"
    BLOCK = "block"
    PROGRESSIVE = "progressive"


class DecisionType(enum.StrEnum):
    ALLOW = "ALLOW"
    BLOCK = "BLOCK"
    STEP_UP = "STEP_UP"
    MODIFY = "MODIFY"
    DEFER = "DEFER"


class EventType(enum.StrEnum):
    TOOL_CALL_PRE = "TOOL_CALL_PRE"
    TOOL_CALL_POST = "TOOL_CALL_POST"
    TOOL_CALL_BLOCK = "TOOL_CALL_BLOCK"
    LLM_INVOCATION = "LLM_INVOCATION"


class SourceType(enum.StrEnum):
    AGENT_TOOL_CALL = "agent_tool_call"
    AGENT_LLM_INVOCATION = "agent_llm_invocation"


_DECISION_ALIASES = {
    "ALLOW": DecisionType.ALLOW,
    "BLOCK": DecisionType.BLOCK,
    "DENY": DecisionType.BLOCK,
    "STEP_UP": DecisionType.STEP_UP,
    "CHALLENGE": DecisionType.STEP_UP,
    "ESCALATE": DecisionType.STEP_UP,
    "REVIEW": DecisionType.STEP_UP,
    "MODIFY": DecisionType.MODIFY,
    "MODIFIED": DecisionType.MODIFY,
    "TRANSFORM": DecisionType.MODIFY,
    "DEFER": DecisionType.DEFER,
    "DEFERRED": DecisionType.DEFER,
    "HOLD": DecisionType.DEFER,
}

DEFAULT_REASONS = {
    DecisionType.BLOCK: "blocked by Thoth policy",
    DecisionType.DEFER: "deferred pending additional context",
}


def parse_decision_value(value: object) -> DecisionType | None:
    """PROTOCOL §3.3: trimmed, upper-cased, aliases folded; None when unknown (callers BLOCK)."""
    if not isinstance(value, str):
        return None
    return _DECISION_ALIASES.get(value.strip().upper().replace("-", "_"))


def _camel_to_snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out).lstrip("_")


@dataclasses.dataclass(slots=True)
class EnforcementDecision:
    """What the enforcer answered for one tool call (PROTOCOL §3.2)."""

    decision: DecisionType
    reason: str = ""
    decision_reason_code: str = ""
    action_classification: str = ""
    risk_score: float = 0.0
    violation_id: str | None = None
    hold_token: str | None = None
    step_up_timeout_seconds: float | None = None
    modified_tool_args: dict[str, Any] | None = None
    modification_reason: str | None = None
    defer_reason: str | None = None
    defer_timeout_seconds: float | None = None
    matched_rule_ids: list[str] = dataclasses.field(default_factory=list)
    observed_decision: DecisionType | None = None
    score_components: dict[str, Any] | None = None  # what drove a progressive-mode risk score (§3.2 pass-through)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def allowed(self) -> bool:
        return self.decision in (DecisionType.ALLOW, DecisionType.MODIFY)

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> EnforcementDecision:
        """Parse a §3.2 body; camelCase accepted; an unknown or missing decision is a BLOCK."""
        data: dict[str, Any] = {}
        for key, value in body.items():
            data[_camel_to_snake(key) if any(c.isupper() for c in key) else key] = value
        raw_decision = data.get("decision")
        if raw_decision is None:
            raw_decision = data.get("authorization_decision")
        decision = parse_decision_value(raw_decision)
        reason = data.get("reason") or data.get("modification_reason") or data.get("defer_reason") or ""
        code = str(data.get("decision_reason_code") or "")
        if decision is None:
            decision = DecisionType.BLOCK
            reason = f"unsupported authorization decision {raw_decision!r}"
            code = code or "unsupported_decision"
        if decision is DecisionType.STEP_UP and not data.get("hold_token"):
            decision = DecisionType.BLOCK
            reason = "step-up decision without a hold token"
        modified = data.get("modified_tool_args")
        observed = parse_decision_value(data.get("observed_decision"))
        try:
            risk = float(data.get("risk_score") or 0.0)
        except (TypeError, ValueError):
            risk = 0.0
        return cls(
            decision=decision,
            reason=str(reason),
            decision_reason_code=code,
            action_classification=str(data.get("action_classification") or ""),
            risk_score=risk,
            violation_id=data.get("violation_id") or None,
            hold_token=data.get("hold_token") or None,
            step_up_timeout_seconds=_opt_float(data.get("step_up_timeout_seconds")),
            modified_tool_args=modified if isinstance(modified, dict) else None,
            modification_reason=data.get("modification_reason"),
            defer_reason=data.get("defer_reason"),
            defer_timeout_seconds=_opt_float(data.get("defer_timeout_seconds")),
            matched_rule_ids=list(data.get("matched_rule_ids") or []),
            observed_decision=observed,
            score_components=dict(data["score_components"]) if isinstance(data.get("score_components"), dict)
            else None,
            raw=dict(body),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "raw" and v not in (None, [], "")}
        out["decision"] = self.decision.value
        if self.observed_decision is not None:
            out["observed_decision"] = self.observed_decision.value
        return out

    def _repr_html_(self) -> str:
        from thoth_nb._render import decision_html

        return decision_html(self)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass(slots=True)
class BehavioralEvent:
    """One recorded event (PROTOCOL §5); `to_dict()` is the wire form."""

    event_id: str
    tenant_id: str
    session_id: str
    user_id: str
    agent_id: str
    tool_name: str
    event_type: EventType
    source_type: SourceType
    occurred_at: str
    content: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    approved_scope: list[str] = dataclasses.field(default_factory=list)
    session_tool_calls: list[str] = dataclasses.field(default_factory=list)
    enforcement_mode: str = "block"
    violation_id: str | None = None
    endpoint_id: str | None = None
    hostname: str | None = None
    purpose: str | None = None
    data_classification: str | None = None
    task_context: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["event_type"] = self.event_type.value
        out["source_type"] = self.source_type.value
        return {k: v for k, v in out.items() if v is not None}


# --- tool arguments -----------------------------------------------------------------------------

_MAX_DEPTH = 5
#: How deep a policy looks into nested tool arguments ("*" conditions). Deeper arguments cannot be checked,
#: so the engine blocks them (D3) instead of letting a value hidden at depth 40 slip past a rule.
MAX_DECIDE_DEPTH = 32


_PLAIN = (str, int, bool, type(None))


def json_safe(value: Any, depth: int = 0, _seen: set[int] | None = None, max_depth: int = _MAX_DEPTH) -> Any:
    """PROTOCOL §3.4: make any value JSON-safe without ever raising; containers below `max_depth` are cut."""
    if depth == 0 and type(value) is dict and all(type(v) in _PLAIN and type(k) is str for k, v in value.items()):
        return value  # the common case: a flat dict of plain values is already safe
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > max_depth:
        return "[truncated]"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        seen = _seen if _seen is not None else set()
        if id(value) in seen:
            return "[circular]"
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    (k if isinstance(k, str) else str(k)): json_safe(v, depth + 1, seen, max_depth)
                    for k, v in value.items()
                }
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [json_safe(v, depth + 1, seen, max_depth) for v in items]
        finally:
            seen.discard(id(value))
    try:
        return str(value)
    except Exception:  # a hostile __str__ must not break the call
        return f"<unprintable {type(value).__name__}>"


def tool_args_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """PROTOCOL §3.4 shape: lone dict → it; only kwargs → kwargs; none → None; else args/kwargs."""
    if not args:
        return dict(kwargs) if kwargs else None
    if len(args) == 1 and not kwargs and isinstance(args[0], dict):
        return args[0]
    out: dict[str, Any] = {"args": list(args)}
    if kwargs:
        out["kwargs"] = dict(kwargs)
    return out


def apply_modified_args(
    modified: Mapping[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """PROTOCOL §3.5: rewrite the call's arguments from a MODIFY decision; first match wins."""
    if isinstance(modified.get("args"), list):
        new_kwargs = modified.get("kwargs")
        return tuple(modified["args"]), dict(new_kwargs) if isinstance(new_kwargs, dict) else kwargs
    if len(args) == 1 and not kwargs and isinstance(args[0], dict):
        return (dict(modified),), {}
    for key in ("arg0", "input"):
        if key in modified and len(modified) == 1:
            return (modified[key],), {}
    if "arg0" in modified:
        positional = []
        index = 0
        while f"arg{index}" in modified:
            positional.append(modified[f"arg{index}"])
            index += 1
        if index == len(modified):
            return tuple(positional), {}
    if not args:
        return (), dict(modified)
    logger.warning("thoth: could not apply modified tool args %r; running with the original args", modified)
    return args, kwargs
