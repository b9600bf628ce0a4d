"""The decision engine behind `/v1/enforce`: scope, rules, rate limits, modes, holds, violations.

The embedded enforcer calls `Engine.decide()` in-process; `thoth-nb serve` calls the same method
from HTTP handlers. The ALLOW path touches no storage (events record it); every other decision is
written to the store before it is returned, so any process can see and resolve it.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from thoth_nb import _json
from thoth_nb._models import MAX_DECIDE_DEPTH, DecisionType, EnforcementDecision, EnforcementMode, json_safe
from thoth_nb.engine.holds import board_for
from thoth_nb.engine.policy import (
    SEVERITY_RISK,
    ArgumentsTooDeep,
    Policy,
    RateLimit,
    Rule,
    condition_matches,
    tool_matches,
)
from thoth_nb.engine.risk import RiskModel, combine
from thoth_nb.engine.store import HoldConflict, HoldNotFound, SQLiteStore, format_ts, parse_ts

__all__ = ["Engine", "RequestError", "args_hash", "wire_response"]

_RANK = {DecisionType.ALLOW: 0, DecisionType.MODIFY: 1, DecisionType.STEP_UP: 2, DecisionType.BLOCK: 3}
REQUIRED = ("agent_id", "tenant_id", "tool_name", "session_id", "approved_scope", "enforcement_mode")
MAX_HOLD_SECONDS = 24 * 3600.0
DEFAULT_HOLD_SECONDS = 15 * 60.0
_HISTORY = 128
_PLAIN_MODES = frozenset({"block", "observe", "step_up"})


class RequestError(ValueError):
    """An enforce request the engine cannot decide on (the server answers 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def args_hash(tool_args: Any) -> str:
    """The identity of a call's arguments, which a hold and a session grant are bound to (D5)."""
    return hashlib.sha256(_json.canonical(tool_args if tool_args is not None else {})).hexdigest()


def new_violation_id() -> str:
    return f"vio_{uuid.uuid4().hex}"


def wire_response(decision: EnforcementDecision) -> dict[str, Any]:
    """§3.2 body: `authorization_decision` always equals `decision`."""
    body = decision.to_dict()
    body["authorization_decision"] = body["decision"]
    body.setdefault("reason", "")
    body.setdefault("decision_reason_code", "")
    body.setdefault("action_classification", "")
    body["risk_score"] = decision.risk_score
    return body


#: Every plain ALLOW is this one object (never mutated): no allocation on the hot path.
_ALLOWED = EnforcementDecision(DecisionType.ALLOW, "allowed", "allowed", "read", 0.0)


class _Verdict:
    """The policy's answer before the enforcement mode is applied."""

    __slots__ = ("code", "components", "decision", "floor", "hard", "matched", "reason", "risk")

    def __init__(self, decision: DecisionType, reason: str, code: str, risk: float,
                 matched: list[str], hard: bool = False) -> None:
        self.decision = decision
        self.reason = reason
        self.code = code
        self.risk = risk
        self.matched = matched
        self.hard = hard
        self.floor = DecisionType.ALLOW  # progressive mode: the decision the risk score asks for at least
        self.components: dict[str, float] | None = None


class _SessionState:
    __slots__ = ("history", "rate", "times", "violations")

    def __init__(self) -> None:
        self.history: collections.deque[tuple[str, Mapping[str, Any] | None]] = collections.deque(maxlen=_HISTORY)
        self.rate: dict[tuple[str, str], collections.deque[float]] = {}
        self.times: collections.deque[float] = collections.deque()  # progressive mode: recent call times
        self.violations = 0


class _SharedSessionState(_SessionState):
    """One call's view of a session whose state lives in the store (`store.shared_state`): the
    history and rate-window counts were read (and this call counted) in one store round trip."""

    __slots__ = ("counts", "record")

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}
        self.record = False  # the tenant's policy has sequence rules: remember this call in the store


_BURST_KEY = "__risk_burst__"


#: what a retry of one call repeats exactly (request-id dedupe answers only a repeat of all of them)
_CALL_FIELDS = ("agent_id", "user_id", "session_id", "tool_name", "tool_args", "enforcement_mode", "approved_scope")


def _call_of(request: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(request.get(field) for field in _CALL_FIELDS)


def _decision_from(data: Mapping[str, Any]) -> EnforcementDecision:
    """An EnforcementDecision back from the {"decision": to_dict(), "raw": raw} a store dedupe row holds."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(EnforcementDecision)}
    body = {k: v for k, v in dict(data["decision"]).items() if k in fields and k != "raw"}
    body["decision"] = DecisionType(body["decision"])
    if body.get("observed_decision") is not None:
        body["observed_decision"] = DecisionType(body["observed_decision"])
    return EnforcementDecision(**body, raw=dict(data.get("raw") or {}))


class Engine:
    """Decides tool calls for any number of tenants over one store.

    With a store whose `shared_state` is true (PostgreSQL, several server replicas) nothing that
    decides a call stays in this process: rate windows, session history for sequence rules, the
    progressive-mode violation count and burst window, and request-id dedupe live in the store, and
    the clock is wall time so every replica counts the same windows. With SQLite (one process) they
    stay in memory, and the ALLOW path touches no storage."""

    def __init__(
        self,
        store: SQLiteStore,
        policy: Policy,
        *,
        policy_for: Callable[[str], Policy | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = bool(getattr(store, "shared_state", False))
        if self.shared and clock is time.monotonic:
            clock = time.time  # windows are compared across processes (and hosts)
        self._sequences: dict[int, tuple[Policy, bool]] = {}
        self.store = store
        self.default_policy = policy
        self._policy_for = policy_for
        self._clock = clock
        self._sessions: collections.OrderedDict[tuple[str, str], _SessionState] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.board = board_for(store)
        self._recent: collections.OrderedDict[
            tuple[str, str], tuple[float, EnforcementDecision, tuple[Any, ...]]
        ] = collections.OrderedDict()
        self.risk = RiskModel(clock)

    # -- policy ----------------------------------------------------------------------------------

    def policy(self, tenant_id: str) -> Policy:
        if self._policy_for is not None:
            found = self._policy_for(tenant_id)
            if found is not None:
                return found
        return self.default_policy

    def set_policy(self, policy: Policy) -> None:
        self.default_policy = policy

    # -- sessions --------------------------------------------------------------------------------

    def _session(self, tenant_id: str, session_id: str) -> _SessionState:
        key = (tenant_id, session_id)
        state = self._sessions.get(key)
        if state is None:
            with self._lock:
                state = self._sessions.get(key)
                if state is None:
                    state = self._sessions[key] = _SessionState()
                    if len(self._sessions) > 10_000:
                        self._sessions.popitem(last=False)
        return state

    # -- deciding --------------------------------------------------------------------------------

    def validate(self, request: Mapping[str, Any]) -> None:
        for field in REQUIRED:
            if field not in request or request[field] is None:
                raise RequestError(field, "field required")
        for field in ("agent_id", "tenant_id", "tool_name", "session_id"):
            if not isinstance(request[field], str) or not request[field]:
                raise RequestError(field, "must be a non-empty string")
        scope = request["approved_scope"]
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise RequestError("approved_scope", "must be a list of tool names")
        try:
            EnforcementMode(str(request["enforcement_mode"]).lower())
        except ValueError:
            raise RequestError("enforcement_mode", "must be one of observe, step_up, block, progressive") from None
        args = request.get("tool_args")
        if args is not None and not isinstance(args, dict):
            raise RequestError("tool_args", "must be an object")

    def decide(self, request: Mapping[str, Any], *, dedupe: bool = False) -> EnforcementDecision:
        """Decide one call. `request` is the §3.1 body (already validated by the caller).

        With `dedupe`, a `request_id` seen in the last 10 minutes for the same call gets that call's
        decision again (a caller's retry). The same id on another call (another tool, other arguments,
        session or mode) is decided afresh: a client reusing ids must not turn a BLOCK into a stale ALLOW."""
        tenant = request["tenant_id"]
        if self.shared and dedupe and request.get("request_id"):
            return self._decide_once(request)
        if dedupe and request.get("request_id"):
            key = (tenant, str(request["request_id"]))
            call = _call_of(request)
            cached = self._recent.get(key)
            if cached is not None and self._clock() - cached[0] < 600 and cached[2] == call:
                return cached[1]
        decision = self._decide(request)
        if dedupe and request.get("request_id"):
            with self._lock:
                self._recent[key] = (self._clock(), decision, call)
                while len(self._recent) > 50_000:
                    self._recent.popitem(last=False)
        return decision

    def _decide_once(self, request: Mapping[str, Any]) -> EnforcementDecision:
        """Request-id dedupe in the store: a retry through any replica gets the first decision. The
        stored id carries a digest of the call, so the same id on another call is its own entry."""
        call = hashlib.sha256(_json.canonical(list(_call_of(request)))).hexdigest()[:32]
        tenant, request_id = request["tenant_id"], f"{request['request_id']}#{call}"
        stored = self.store.dedupe_get(tenant, request_id, 600.0, now=self._clock())
        if stored is not None:
            return _decision_from(stored)
        try:
            decision = self._decide(request)
        except BaseException:  # PostgreSQL holds this id's claim: free it so a retry decides at once
            release = getattr(self.store, "dedupe_release", None)
            if release is not None:
                release(tenant, request_id)
            raise
        kept = self.store.dedupe_put(tenant, request_id, {"decision": decision.to_dict(), "raw": decision.raw},
                                     600.0, now=self._clock())
        return decision if kept["decision"] == decision.to_dict() else _decision_from(kept)

    def _has_sequences(self, policy: Policy) -> bool:
        cached = self._sequences.get(id(policy))
        if cached is None or cached[0] is not policy:
            cached = (policy, any(rule.after for rule in policy.rules))
            with self._lock:
                if len(self._sequences) > 1000:
                    self._sequences.clear()
                self._sequences[id(policy)] = cached
        return cached[1]

    def _shared_session(self, policy: Policy, request: Mapping[str, Any]) -> _SessionState:
        """Read this session's history and count this call in its rate windows, in the store."""
        state = _SharedSessionState()
        agent, tool = request["agent_id"], request["tool_name"]
        state.record = self._has_sequences(policy)
        plan = policy.plan_for(agent, tool)
        wants_history = state.record and plan.has_after
        windows = [(limit.id, tool, float(limit.per_seconds), int(limit.max_calls) + 1) for limit in plan.limits]
        progressive = str(request["enforcement_mode"]).lower() == "progressive"
        if progressive:
            windows.append((_BURST_KEY, "*", float(self.risk.burst_seconds), 3 * int(self.risk.burst_calls) + 1))
        if not wants_history and not windows:
            return state
        history, hits = self.store.session_step(
            request["tenant_id"], request["session_id"], history=wants_history, keep=_HISTORY, windows=windows,
            now=self._clock(),
        )
        state.history.extend(history)
        if progressive:
            burst = hits.pop()
            state.times.extend(burst[:-1])  # the risk model appends this call itself
        for (limit_id, limit_tool, _, _), window in zip(windows, hits, strict=False):
            state.counts[(limit_id, limit_tool)] = len(window)
        return state

    def _remember(self, state: _SessionState, request: Mapping[str, Any], tool: str,
                  args: Mapping[str, Any] | None) -> None:
        if isinstance(state, _SharedSessionState):
            if state.record:
                self.store.record_call(request["tenant_id"], request["session_id"], tool, json_safe(args),
                                       keep=_HISTORY, now=self._clock())
        else:
            state.history.append((tool, args))

    def plain_allow_check(self, static: Mapping[str, Any]) -> Callable[[str, Mapping[str, Any] | None],
                                                                       EnforcementDecision | None] | None:
        """`_decide`'s first branch for an in-process caller whose requests differ only in `tool_name` and
        `tool_args` (`static` holds the rest: one governor's fixed fields, `EmbeddedTransport.allow_check`).

        The returned check answers `_ALLOWED` exactly when `_decide(static + tool_name + tool_args)` would
        take that branch, after recording the call in its session as the branch does; otherwise None,
        having recorded nothing, and the caller asks `_decide`. Policy, plan and session are looked up on
        every call (a reloaded policy or an evicted session is seen at once); `approved_scope` is the
        caller's own list, read on every call. None instead of a check where that branch never applies
        (shared state, a mode other than block/observe/step_up)."""
        mode = static["enforcement_mode"]
        if self.shared or mode not in _PLAIN_MODES:
            return None
        tenant, session_id, agent = static["tenant_id"], static["session_id"], static["agent_id"]
        scope = static["approved_scope"]
        key = (tenant, session_id)

        def check(tool: str, args: Mapping[str, Any] | None) -> EnforcementDecision | None:
            if self._policy_for is not None:  # per-tenant policies: `_decide` asks for the tenant's
                return None
            plan = self.default_policy._plans.get((agent, tool))  # made (and cached) by `_decide`'s first call
            if plan is None or not plan.plain_allow or tool not in scope or plan.candidates(args):
                return None
            state = self._sessions.get(key) or self._session(tenant, session_id)
            state.history.append((tool, args))
            return _ALLOWED

        return check

    def _decide(self, request: Mapping[str, Any]) -> EnforcementDecision:
        tenant = request["tenant_id"]
        agent = request["agent_id"]
        tool = request["tool_name"]
        args = request.get("tool_args")
        policy = self.default_policy if self._policy_for is None else self.policy(tenant)
        if self.shared:
            state = self._shared_session(policy, request)
        else:
            state = self._sessions.get((tenant, request["session_id"])) or self._session(tenant, request["session_id"])
        mode = request["enforcement_mode"]
        plan = policy._plans.get((agent, tool)) or policy.plan_for(agent, tool)
        if (plan.plain_allow and mode in _PLAIN_MODES and tool in request["approved_scope"]
                and not plan.candidates(args)):
            # the common case: in scope, no rule can match, no rate limit, default allow (what
            # _policy_verdict would find, without the call)
            if self.shared:
                self._remember(state, request, tool, args)
            else:
                state.history.append((tool, args))
            return _ALLOWED
        verdict = self._policy_verdict(policy, request, state, agent, tool, args)
        if mode == "progressive" or (mode not in _PLAIN_MODES and str(mode).lower() == "progressive"):
            verdict = self._progressive_risk(policy, tenant, agent, tool, state, verdict)
        if verdict is None:
            self._remember(state, request, tool, args)
            return _ALLOWED
        decision = self._apply_mode(policy, request, state, verdict)
        if decision.decision is not DecisionType.BLOCK:  # a blocked call never ran: sequence rules skip it
            self._remember(state, request, tool, args)
        return decision

    def _progressive_risk(self, policy: Policy, tenant: str, agent: str, tool: str, state: _SessionState,
                          verdict: _Verdict | None) -> _Verdict | None:
        """Progressive mode: combine the verdict with the risk score (thoth_nb.engine.risk explains how)."""
        if isinstance(state, _SharedSessionState):  # the agent's tool counts come from the store
            seen, total = self.store.agent_tool_count(tenant, agent, tool, now=self._clock())
            with self._lock:
                self.risk._agents.pop((tenant, agent), None)
                self.risk.seed(tenant, agent, {tool: seen, "\x00other tools": total - seen})
                components = self.risk.assess(tenant, agent, tool, state.times)
        else:
            components = self.risk.assess(tenant, agent, tool, state.times)
        if verdict is None and not components:
            return None  # the common case: nothing matched, nothing unusual
        if verdict is not None:
            components = {"rule": verdict.risk, **components}
        risk = combine(components)
        floor = (DecisionType.BLOCK if risk >= policy.risk_block else
                 DecisionType.STEP_UP if risk >= policy.risk_step_up else DecisionType.ALLOW)
        if verdict is None:
            if floor is DecisionType.ALLOW:
                return None
            drivers = [k for k in components if k != "rule"]
            verdict = _Verdict(floor, f"unusual call for agent '{agent}': " + ", ".join(
                f"{k.replace('_', ' ')} (+{components[k]:g})" for k in drivers) + f"; risk {risk:g} ≥ "
                f"{policy.risk_block if floor is DecisionType.BLOCK else policy.risk_step_up:g}",
                "step_up_high_risk" if floor is DecisionType.STEP_UP else "high_risk_score", risk, [])
        if floor is not DecisionType.ALLOW:
            verdict.matched = [*verdict.matched, *(f"risk:{k}" for k in components if k != "rule")]
        verdict.risk = risk
        verdict.floor = floor
        verdict.components = {**components, "risk_score": risk, "step_up_at": policy.risk_step_up,
                              "block_at": policy.risk_block}
        return verdict

    def _policy_verdict(self, policy: Policy, request: Mapping[str, Any], state: _SessionState, agent: str,
                        tool: str, args: Mapping[str, Any] | None) -> _Verdict | None:
        plan = policy._plans.get((agent, tool)) or policy.plan_for(agent, tool)
        if tool not in request["approved_scope"] or plan.out_of_agent_scope:
            return _Verdict(
                policy.scope_decision,
                f"tool '{tool}' is not in the approved scope of agent '{agent}'",
                "policy_scope_violation",
                SEVERITY_RISK[policy.scope_severity],
                ["approved_scope"],
                policy.scope_hard,
            )
        candidates = plan.candidates(args)
        if not candidates and not plan.limits and policy.default is DecisionType.ALLOW:
            return None  # the common case, decided without allocating anything
        best: Rule | None = None
        matched: list[str] = []
        try:
            for rule in candidates:
                if rule.matches(args) and (not rule.after or self._after_matches(rule, state)):
                    matched.append(rule.id)
                    if best is None or (_RANK[rule.decision], rule.risk) > (_RANK[best.decision], best.risk):
                        best = rule
        except ArgumentsTooDeep:
            return _Verdict(DecisionType.BLOCK, f"the arguments of '{tool}' nest deeper than {MAX_DECIDE_DEPTH} "
                            "levels, too deep for the policy to check; pass them flatter (e.g. as a JSON string "
                            "the tool parses)", "arguments_too_deep", 90.0, ["arguments_depth"])
        limited = self._rate_limited(plan.limits, state, tool) if plan.limits else None
        if limited is not None:
            matched.append(limited.matched[0])
            if best is None or _RANK[limited.decision] >= _RANK[best.decision]:
                limited.matched = matched
                return limited
        if best is not None and best.decision is not DecisionType.ALLOW:
            code = "forbidden_action_static_policy" if best.decision is DecisionType.BLOCK else "step_up_high_risk"
            return _Verdict(best.decision, best.reason, code, best.risk, matched, best.hard)
        if best is None and policy.default is not DecisionType.ALLOW:
            return _Verdict(policy.default, f"no rule allows '{tool}' and the policy default is "
                            f"{policy.default.value.lower()}", "default_decision", 50.0, ["default"])
        return None

    def _after_matches(self, rule: Rule, state: _SessionState) -> bool:
        """Sequence rules: each `after` step must match some earlier call of the session, in order."""
        history = list(state.history)
        position = 0
        for step in rule.after:
            while position < len(history):
                tool, args = history[position]
                position += 1
                if tool_matches(step.tool, tool) and all(condition_matches(c, args) for c in step.conditions):
                    break
            else:
                return False
        return True

    def _rate_limited(self, limits: tuple[RateLimit, ...], state: _SessionState, tool: str) -> _Verdict | None:
        hit: _Verdict | None = None
        if isinstance(state, _SharedSessionState):  # counted in the store, this call included
            for limit in limits:
                if state.counts.get((limit.id, tool), 0) > limit.max_calls and (
                        hit is None or _RANK[limit.decision] > _RANK[hit.decision]):
                    hit = _Verdict(limit.decision, limit.reason, "rate_limited", 60.0, [limit.id])
            return hit
        now = self._clock()
        for limit in limits:
            window = state.rate.get((limit.id, tool))
            if window is None:
                window = state.rate[(limit.id, tool)] = collections.deque()
            cutoff = now - limit.per_seconds
            while window and window[0] <= cutoff:
                window.popleft()
            window.append(now)
            if len(window) > limit.max_calls and (hit is None or _RANK[limit.decision] > _RANK[hit.decision]):
                hit = _Verdict(limit.decision, limit.reason, "rate_limited", 60.0, [limit.id])
        return hit

    def _apply_mode(self, policy: Policy, request: Mapping[str, Any], state: _SessionState,
                    verdict: _Verdict) -> EnforcementDecision:
        """PROTOCOL §8: map the policy's verdict through the enforcement mode."""
        mode = str(request["enforcement_mode"]).lower()
        v = verdict.decision
        if isinstance(state, _SharedSessionState):
            first_violation = self.store.bump_violations(request["tenant_id"], request["session_id"],
                                                         now=self._clock()) == 0
        else:
            first_violation = state.violations == 0
            state.violations += 1
        if mode == "observe":
            final = DecisionType.ALLOW
        elif mode == "block":
            final = DecisionType.BLOCK if v in (DecisionType.BLOCK, DecisionType.STEP_UP) else v
        elif mode == "step_up":
            final = DecisionType.BLOCK if (v is DecisionType.BLOCK and verdict.hard) else (
                DecisionType.STEP_UP if v in (DecisionType.BLOCK, DecisionType.STEP_UP) else v
            )
        else:  # progressive
            if v is DecisionType.BLOCK and verdict.hard:
                final = DecisionType.BLOCK
            elif v is DecisionType.STEP_UP or (v is DecisionType.BLOCK and first_violation):
                final = DecisionType.STEP_UP
            else:
                final = v
            if _RANK[verdict.floor] > _RANK.get(final, 0):  # the risk score only ever raises it
                final = verdict.floor
        violation_id = new_violation_id()
        tool_args = request.get("tool_args")
        classification = "scope" if verdict.code == "policy_scope_violation" else "policy"
        decision = EnforcementDecision(
            decision=final,
            reason=verdict.reason,
            decision_reason_code=verdict.code,
            action_classification=classification,
            risk_score=verdict.risk,
            violation_id=violation_id,
            matched_rule_ids=verdict.matched,
            score_components=verdict.components,
        )
        if mode == "observe":
            decision.observed_decision = v
            decision.decision_reason_code = "observe_mode"
            decision.reason = f"observe mode: would have been {v.value} ({verdict.reason})"
        if final is DecisionType.BLOCK and v is DecisionType.STEP_UP and mode == "block":
            decision.reason = f"{verdict.reason} (step-up required; enforcement mode 'block' blocks instead)"
        if final is DecisionType.STEP_UP:
            self._hold(request, decision, policy)
        self.store.record_violation(
            {
                "violation_id": violation_id,
                "tenant_id": request["tenant_id"],
                "session_id": request["session_id"],
                "agent_id": request["agent_id"],
                "user_id": request.get("user_id") or "system",
                "tool_name": request["tool_name"],
                "decision": final.value if mode != "observe" else v.value,
                "observed": mode == "observe",
                "reason": verdict.reason,
                "decision_reason_code": decision.decision_reason_code,
                "risk_score": verdict.risk,
                "matched_rule_ids": verdict.matched,
                "tool_args": json_safe(tool_args),
                "request": self._recorded_request(request, state),
            }
        )
        return decision

    @staticmethod
    def _recorded_request(request: Mapping[str, Any], state: _SessionState) -> dict[str, Any]:
        """The request as stored with a violation; an in-process caller (the embedded transport) sends
        no `session_tool_calls`, so the session's own history stands in for them."""
        recorded = {k: json_safe(v) for k, v in request.items() if k != "tool_args"}
        if "session_tool_calls" not in recorded:
            recorded["session_tool_calls"] = [tool for tool, _ in state.history][-_HISTORY:]
        return recorded

    # -- holds -----------------------------------------------------------------------------------

    def _hold(self, request: Mapping[str, Any], decision: EnforcementDecision, policy: Policy) -> None:
        tenant = request["tenant_id"]
        tool_args = json_safe(request.get("tool_args"))
        digest = args_hash(tool_args)
        granted = self.store.has_grant(tenant, request["session_id"], request["tool_name"], digest)
        if granted is not None:
            decision.decision = DecisionType.ALLOW
            decision.decision_reason_code = "step_up_granted"
            decision.reason = f"approved for this session by hold {granted} ({decision.reason})"
            return
        seconds = DEFAULT_HOLD_SECONDS
        asked = request.get("step_up_timeout_seconds")
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
            seconds = min(float(asked), MAX_HOLD_SECONDS)
        now = time.time()
        token = "hold_" + secrets.token_urlsafe(18)
        approval_id = "apr_" + uuid.uuid4().hex[:20]
        user_agent = str(request.get("_user_agent") or "thoth-nb/")
        self.store.create_hold(
            {
                "approval_id": approval_id,
                "hold_token": token,
                "tenant_id": tenant,
                "agent_id": request["agent_id"],
                "user_id": request.get("user_id") or "system",
                "session_id": request["session_id"],
                "tool_name": request["tool_name"],
                "args_hash": digest,
                "tool_args": tool_args,
                "reason": decision.reason,
                "decision_reason_code": decision.decision_reason_code,
                "risk_score": decision.risk_score,
                "matched_rule_ids": decision.matched_rule_ids,
                "violation_id": decision.violation_id,
                "allow_modify": user_agent.startswith("thoth-nb/"),
                "created_at": format_ts(now),
                "expires_at": format_ts(now + seconds),
            }
        )
        decision.hold_token = token
        decision.step_up_timeout_seconds = seconds
        decision.raw = {"approval_id": approval_id, "args_hash": digest}

    def hold_status(self, token: str, tenant_id: str | None = None) -> dict[str, Any]:
        """§4 reply for a hold; HoldNotFound for an unknown token (or one of another tenant)."""
        record = self.store.get_hold(token, tenant_id)
        if record is None or (record["hold_token"] != token and record["approval_id"] != token):
            raise HoldNotFound(token)
        if record["status"] == "pending" and parse_ts(record["expires_at"]).timestamp() <= time.time():
            self.store.expire_holds()
            record = self.store.get_hold(token, tenant_id) or record
        return hold_reply(record)

    def wait_hold(self, token: str, wait_seconds: float, tenant_id: str | None = None) -> dict[str, Any]:
        """Long-poll: answer as soon as the hold resolves, or after `wait_seconds` with the pending reply."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            reply = self.hold_status(token, tenant_id)
            if reply["resolved"] or time.monotonic() >= deadline:
                return reply
            self.board.wait(deadline - time.monotonic())

    def resolve(self, key: str, *, approve: bool, reviewer: str | None = None, note: str | None = None,
                modified_args: Mapping[str, Any] | None = None, scope: str = "once",
                tenant_id: str | None = None) -> dict[str, Any]:
        """Approve or deny a pending hold by approval id or hold token; wakes its waiter at once."""
        if scope not in ("once", "session"):
            raise ValueError("scope must be 'once' or 'session'")
        if modified_args is not None:
            if not approve:
                raise ValueError("modified_args only make sense when approving")
            record = self.store.get_hold(key, tenant_id)
            if record is None:
                raise HoldNotFound(key)
            if not record["allow_modify"]:
                raise ValueError("this hold was raised by a client that cannot apply modified arguments")
        try:
            return self.store.resolve_hold(
                key, status="approved" if approve else "denied", reviewer=reviewer, note=note,
                modified_args=modified_args, grant_scope=scope, tenant_id=tenant_id,
            )
        finally:
            self.board.notify()

    # -- explanations ----------------------------------------------------------------------------

    def explain(self, tenant_id: str, violation_id: str) -> dict[str, Any]:
        """A human explanation of a violation from the rule that decided it (PROTOCOL §6)."""
        rows = self.store.violations(tenant_id, violation_id=violation_id, limit=1)
        if not rows:
            raise LookupError(violation_id)
        row = rows[0]
        policy = self.policy(tenant_id)
        rules = [r for r in (policy.rule(rid) for rid in row["matched_rule_ids"]) if r is not None]
        conditions = "; ".join(f"{r.id}: {r.describe()}" for r in rules)
        if row["decision_reason_code"] == "policy_scope_violation" or "approved_scope" in row["matched_rule_ids"]:
            why = f"'{row['tool_name']}' is not in the agent's approved_scope."
            next_step = f"Add '{row['tool_name']}' to approved_scope if this agent should use it."
        elif row["decision_reason_code"] == "rate_limited":
            why = row["reason"]
            next_step = "Slow the agent down, or raise max_calls for this tool in the policy's rate_limits."
        else:
            why = row["reason"] + (f" (rule {conditions})" if conditions else "")
            next_step = "Change the arguments so the rule no longer matches, or ask a reviewer to approve it."
        severity = "critical" if row["risk_score"] >= 90 else "high" if row["risk_score"] >= 70 else (
            "medium" if row["risk_score"] >= 40 else "low")
        answer = {
            "violation_id": violation_id,
            "what_happened": f"Agent '{row['agent_id']}' called '{row['tool_name']}'; Thoth answered "
                             f"{row['decision']}.",
            "why_it_was_blocked": why,
            "what_to_do_next": next_step,
            "business_impact": "The tool did not run." if not row["observed"] else
                               "Observe mode: the tool ran; this is what enforcement would have done.",
            "severity": severity,
            "tenant_id": tenant_id,
            "session_id": row["session_id"],
            "agent_id": row["agent_id"],
            "user_id": row["user_id"],
            "tool_name": row["tool_name"],
            "timestamp": row["created_at"],
            "decision_reason_code": row["decision_reason_code"],
            "action_classification": "scope" if "approved_scope" in row["matched_rule_ids"] else "policy",
            "risk_score": row["risk_score"],
            "matched_rule_ids": row["matched_rule_ids"],
            "conditions": [{"rule_id": r.id, "condition": r.describe(), "decision": r.decision.value,
                            "severity": r.severity} for r in rules],
        }
        from thoth_nb.engine.explain import enrich  # what would have passed (the rule and condition that failed)

        return enrich(self, policy, row, answer)


def hold_reply(record: Mapping[str, Any]) -> dict[str, Any]:
    """§4 body from a hold record: pending carries decision STEP_UP; resolved carries decision = resolution."""
    status = record["status"]
    base: dict[str, Any] = {
        "hold_token": record["hold_token"],
        "approval_id": record["approval_id"],
        "tool_name": record["tool_name"],
        "args_hash": record["args_hash"],
        "expires_at": record["expires_at"],
        "violation_id": record.get("violation_id"),
    }
    if status == "pending":
        return {**base, "resolved": False, "resolution": None, "decision": "STEP_UP", "status": "pending"}
    if status == "approved":
        resolution = "ALLOW"
        reason = f"approved by {record.get('reviewer') or 'a reviewer'}"
        code = "allowed"
    elif status == "denied":
        resolution = "BLOCK"
        reason = f"denied by {record.get('reviewer') or 'a reviewer'}" + (
            f": {record['note']}" if record.get("note") else "")
        code = "step_up_denied"
    else:
        resolution = "BLOCK"
        reason = "step-up auth timeout — no approver response"
        code = "step_up_timeout"
    reply = {
        **base,
        "resolved": True,
        "resolution": resolution,
        "decision": resolution,
        "status": status,
        "reason": reason,
        "decision_reason_code": code,
        "reviewer": record.get("reviewer"),
        "note": record.get("note"),
        "resolved_at": record.get("resolved_at"),
        "grant_scope": record.get("grant_scope"),
    }
    if status == "approved" and record.get("modified_args") is not None:
        reply["decision"] = "MODIFY"
        reply["modified_tool_args"] = record["modified_args"]
    return reply


__all__ += ["HoldConflict", "HoldNotFound", "hold_reply"]
