"""What would have made a blocked or held call pass: computed offline from the policy that decided it.

`Engine.explain` (PROTOCOL §6, `POST /v1/explain`) adds `counterfactual(policy, violation)` to its
answer. The violation record (a row of the store's `violations` table) says which rules matched;
this module reads those rules back from the policy and re-tests each of their conditions against
the recorded arguments, so the explanation names the condition that tripped and the alternative
that would not have:

    `path` matched glob 'secrets/**'; a `path` outside it would pass
    rate limit search-burst (5 calls per 60s) reached; the next call is allowed after 12:03:05 UTC
    tool 'send_email' is not in the approved scope [read_file, web_search]

Every matched BLOCK or STEP_UP rule has to be avoided for the call to pass (the strictest rule
decides), so each gets its own line. Nothing here runs a tool or changes any state.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from thoth_nb._models import MAX_DECIDE_DEPTH, DecisionType
from thoth_nb.engine.policy import _MISSING, Condition, Policy, RateLimit, Rule, _lookup, _strings, condition_matches

if TYPE_CHECKING:
    from thoth_nb.engine.decide import Engine

__all__ = [
    "call_times", "condition_counterfactual", "counterfactual", "enrich", "explanation_rows", "next_allowed_at",
    "rule_counterfactual",
]

_RANK = {DecisionType.ALLOW: 0, DecisionType.MODIFY: 1, DecisionType.STEP_UP: 2, DecisionType.BLOCK: 3}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _actual(cond: Condition, args: Mapping[str, Any] | None) -> Any:
    """The argument value the condition saw; for `"*"` the first string in the arguments that it matched."""
    if cond.field == "*":
        return next((s for s in _strings(args) if cond.test(s)), None)
    value = _lookup(args, cond.field)
    return None if value is _MISSING else value


def condition_counterfactual(cond: Condition, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """One condition against the arguments: did it hold, the value it saw, and the alternative that passes.

    `text` reads "<what happened>; <what would pass>", e.g. "`amount` = 500 > 100; `amount` ≤ 100 would pass"."""
    matched = condition_matches(cond, args)
    actual = _actual(cond, args)
    f = "an argument" if cond.field == "*" else f"`{cond.field}`"
    name = "no argument" if cond.field == "*" else f"`{cond.field}`"
    v, a = cond.value, _short(actual)
    op = cond.op
    if op == "equals":
        text = f"{f} equals {v!r}; any other value would pass"
    elif op == "not_equals":
        text = f"{f} is {a}, not {v!r}; {f} = {v!r} would pass"
    elif op == "regex":
        text = f"{f} ({a}) matched regex {v!r}; {'arguments' if cond.field == '*' else 'a value'} with no match " \
               "would pass"
    elif op == "glob":
        text = f"{f} ({a}) matched glob {v!r}; {'arguments' if cond.field == '*' else f'a {f}'} outside it would pass"
    elif op == "contains":
        text = f"{f} ({a}) contains {v!r}; {'arguments' if cond.field == '*' else 'a value'} without it would pass"
    elif op == "not_contains":
        text = f"{f} ({a}) does not contain {v!r}; a value containing it would pass"
    elif op == "in":
        text = f"{f} = {a} is one of {v!r}; a value outside that list would pass"
    elif op == "not_in":
        text = f"{f} = {a} is not one of {v!r}; one of those would pass"
    elif op in ("gt", "gte", "lt", "lte"):
        sign = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}[op]
        other = {"gt": "≤", "gte": "<", "lt": "≥", "lte": ">"}[op]
        text = f"{f} = {a} {sign} {v!r}; {f} {other} {v!r} would pass"
    elif op == "exists":
        text = (f"{f} is present; leaving {f} out would pass" if v else
                f"{name} is missing; providing {f} would pass")
    elif op == "length_gt":
        text = f"{f} has length {_length(actual)} > {v}; a length of at most {v} would pass"
    elif op == "length_lt":
        text = f"{f} has length {_length(actual)} < {v}; a length of at least {v} would pass"
    else:  # pragma: no cover - the parser admits no other operator
        text = f"{cond.describe()} held"
    return {"field": cond.field, "op": op, "value": v, "actual": actual, "matched": matched, "text": text}


def _length(value: Any) -> Any:
    return len(value) if hasattr(value, "__len__") else "?"


def rule_counterfactual(rule: Rule, args: Mapping[str, Any] | None,
                        session_id: str | None = None) -> dict[str, Any]:
    """Why `rule` matched these arguments and what would not have matched it.

    Returns {rule_id, decision, severity, condition, failed_conditions, alternatives, text}: the
    conditions that held (`failed_conditions`, from the caller's side), and `alternatives`, any one of
    which keeps this rule from matching (a call must break every matched `any:` group)."""
    failed: list[dict[str, Any]] = []
    alternatives: list[str] = []
    for cond in rule.all_of:
        item = condition_counterfactual(cond, args)
        if item["matched"]:
            failed.append(item)
            alternatives.append(item["text"].split("; ", 1)[1])
    group_texts = []
    for group in rule.any_of:
        items = [condition_counterfactual(c, args) for c in group]
        if all(i["matched"] for i in items):
            failed.extend(items)
            group_texts.append(" or ".join(i["text"].split("; ", 1)[1] for i in items))
    if group_texts:
        alternatives.append(" and ".join(f"({t})" for t in group_texts) if len(group_texts) > 1 else group_texts[0])
    if rule.after:
        where = f"session {session_id}" if session_id else "the session"
        steps = ", then ".join(
            "`" + "|".join(s.tool) + "`" + (" with " + " and ".join(c.describe() for c in s.conditions)
                                            if s.conditions else "") for s in rule.after)
        failed.append({"field": None, "op": "after", "value": [list(s.tool) for s in rule.after], "actual": None,
                       "matched": True, "text": f"it came after {steps} in {where}"})
        alternatives.append(f"the same call in a session without an earlier {steps} would pass")
    what = "; ".join(i["text"].split("; ", 1)[0] for i in failed) or f"rule applies to every `{rule.tools[0]}` call"
    if alternatives:
        text = f"rule {rule.id} ({rule.decision.value}): {what}; " + " — or ".join(alternatives)
    else:
        text = (f"rule {rule.id} ({rule.decision.value}) has no conditions: every call of "
                f"{', '.join(rule.tools)} matches it; only a policy change or a reviewer's approval lets it pass")
    return {"rule_id": rule.id, "decision": rule.decision.value, "severity": rule.severity,
            "condition": rule.describe(), "failed_conditions": failed, "alternatives": alternatives, "text": text}


def next_allowed_at(times: Sequence[float], limit: RateLimit) -> float | None:
    """When a call is allowed again under `limit`, given the (epoch) times of the calls its window counts.

    The engine keeps a call time t while t > now - per_seconds and blocks when, with the new call,
    more than max_calls remain; so with the times sorted, the next call passes from
    times[-max_calls] + per_seconds on. None when fewer than max_calls are counted (allowed now)."""
    ordered = sorted(times)
    if len(ordered) < limit.max_calls:
        return None
    return ordered[-limit.max_calls] + limit.per_seconds


def _clock_text(epoch: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return stamp.strftime("%H:%M:%S") + (f".{stamp.microsecond // 100000}" if stamp.microsecond else "") + " UTC"


def _rate_limit(limit: RateLimit, times: Sequence[float] | None) -> dict[str, Any]:
    head = f"rate limit {limit.id} ({limit.max_calls} calls per {limit.per_seconds:g}s) reached"
    at = next_allowed_at(times, limit) if times else None
    if times and at is None:
        tail = "the next call is allowed now"
    elif at is not None:
        tail = f"the next call is allowed after {_clock_text(at)}"
    else:
        tail = f"the next call is allowed once fewer than {limit.max_calls} calls fall in the last " \
               f"{limit.per_seconds:g}s"
    return {"rule_id": limit.id, "decision": limit.decision.value, "condition":
            f"more than {limit.max_calls} calls in {limit.per_seconds:g}s", "retry_at": (
                dt.datetime.fromtimestamp(at, dt.UTC).isoformat() if at is not None else None),
            "calls_in_window": len(times) if times else None, "alternatives": [tail], "text": f"{head}; {tail}"}


def counterfactual(policy: Policy, violation: Mapping[str, Any], *,
                   call_times: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The part of a §6 explanation that says what decided and what would have passed.

    `violation` is a store violation record (tool_name, agent_id, session_id, tool_args,
    matched_rule_ids, decision_reason_code, request, ...). `call_times` maps a rate-limit id to the
    epoch times of the calls its window counts (the engine gathers them), for the retry time.
    Returns {decided_by, failed_conditions, would_pass, what_would_pass}."""
    tool = str(violation.get("tool_name") or "")
    agent = str(violation.get("agent_id") or "")
    args = violation.get("tool_args")
    args = args if isinstance(args, Mapping) else None
    matched = [str(r) for r in violation.get("matched_rule_ids") or []]
    request = violation.get("request") if isinstance(violation.get("request"), Mapping) else {}
    parts: list[dict[str, Any]] = []
    if "approved_scope" in matched:
        parts.append(_scope(policy, tool, agent, request or {}))
    limits = {limit.id: limit for limit in policy.rate_limits}
    rules: list[Rule] = []
    missing: list[str] = []
    for rule_id in matched:
        if rule_id in ("approved_scope", "default") or rule_id.startswith("risk:"):
            continue
        if rule_id == "arguments_depth":  # decided by the engine itself (decide.py), not by a rule
            parts.append({"kind": "arguments_depth", "rule_id": rule_id, "decision": DecisionType.BLOCK.value,
                          "condition": f"arguments nest deeper than {MAX_DECIDE_DEPTH} levels",
                          "alternatives": [f"the same arguments nested at most {MAX_DECIDE_DEPTH} levels deep"],
                          "text": f"the arguments nest deeper than {MAX_DECIDE_DEPTH} levels, more than the policy's "
                                  "\"*\" conditions inspect; arguments nested less deeply would be checked normally"})
            continue
        if rule_id in limits:
            parts.append({"kind": "rate_limit", **_rate_limit(limits[rule_id], (call_times or {}).get(rule_id))})
            continue
        rule = policy.rule(rule_id)
        if rule is None:
            missing.append(rule_id)
        elif rule.decision is not DecisionType.ALLOW:
            rules.append(rule)
    rules.sort(key=lambda r: (_RANK[r.decision], r.risk), reverse=True)
    parts += [{"kind": "rule", **rule_counterfactual(r, args, violation.get("session_id"))} for r in rules]
    if "default" in matched:
        parts.append({"kind": "default", "rule_id": "default", "decision": policy.default.value,
                      "condition": f"no rule allows '{tool}'", "alternatives": [
                          f"a rule with decision: allow for `{tool}` matching these arguments would pass"],
                      "text": f"no rule allows '{tool}' and the policy default is {policy.default.value}; a rule "
                              f"with decision: allow for `{tool}` matching these arguments would let it pass"})
    risk = [r.split(":", 1)[1] for r in matched if r.startswith("risk:")]
    if risk or (not parts and violation.get("decision_reason_code") in ("high_risk_score", "step_up_high_risk")):
        parts.append(_risk(policy, risk, violation))
    for rule_id in missing:
        parts.append({"kind": "unknown", "rule_id": rule_id, "decision": None, "condition": None,
                      "alternatives": [], "text": f"rule {rule_id} decided, but the policy in force has no such "
                                                  "rule any more (it was changed since); it cannot be re-checked"})
    failed = [dict(c, rule_id=p["rule_id"]) for p in parts for c in p.get("failed_conditions", [])]
    decided_by = parts[0] if parts else None
    if not parts:
        summary = "nothing in the policy in force blocks this call any more; it would be allowed now"
    else:
        summary = "; and ".join(p["text"] for p in parts)
    return {
        "decided_by": {k: decided_by.get(k) for k in ("kind", "rule_id", "decision", "condition")}
        if decided_by else None,
        "failed_conditions": failed,
        "would_pass": [{k: p.get(k) for k in ("kind", "rule_id", "alternatives", "text", "retry_at")
                        if p.get(k) is not None} for p in parts],
        "what_would_pass": summary,
    }


def _scope(policy: Policy, tool: str, agent: str, request: Mapping[str, Any]) -> dict[str, Any]:
    scope = [str(s) for s in request.get("approved_scope") or []]
    agent_scope = policy.agent_scopes.get(agent)
    if not scope and agent_scope is None:  # a record without its request (e.g. a row of violations())
        text = f"tool '{tool}' is not in the agent's approved scope; adding it to approved_scope would let it pass"
        return {"kind": "approved_scope", "rule_id": "approved_scope", "decision": policy.scope_decision.value,
                "condition": "tool not in approved scope", "alternatives": [text.split("; ", 1)[1]], "text": text}
    if scope and tool in scope and agent_scope is not None and tool not in agent_scope:
        listed = ", ".join(agent_scope)
        text = (f"tool '{tool}' is not in the policy's approved scope for agent '{agent}' [{listed}]; adding it to "
                f"agents.{agent}.approved_scope in the policy would let it pass")
    else:
        listed = ", ".join(scope)
        extra = (f" and to agents.{agent}.approved_scope in the policy"
                 if agent_scope is not None and tool not in agent_scope else "")
        text = (f"tool '{tool}' is not in the approved scope [{listed}]; adding it to the agent's approved_scope"
                f"{extra} would let it pass")
    return {"kind": "approved_scope", "rule_id": "approved_scope", "decision": policy.scope_decision.value,
            "condition": f"tool not in approved scope [{listed}]", "alternatives": [text.split("; ", 1)[1]],
            "text": text}


def _risk(policy: Policy, factors: list[str], violation: Mapping[str, Any]) -> dict[str, Any]:
    score = float(violation.get("risk_score") or 0.0)
    named = ", ".join(f.replace("_", " ") for f in factors) or "the call's risk factors"
    threshold = policy.risk_block if score >= policy.risk_block else policy.risk_step_up
    hints = [h for f, h in (("rate_burst", "at a slower rate"), ("rare_tool", "once this tool is usual for the "
                                                                              "agent")) if f in factors]
    text = (f"progressive mode: risk {score:g} ≥ {threshold:g} (driven by {named}); a call scoring below "
            f"{policy.risk_step_up:g} (risk_thresholds.step_up) would pass"
            + (f", e.g. the same call {' or '.join(hints)}" if hints else ""))
    return {"kind": "risk", "rule_id": "risk", "decision": DecisionType.BLOCK.value if score >= policy.risk_block
            else DecisionType.STEP_UP.value, "condition": f"risk ≥ {threshold:g}", "alternatives": [
                f"a risk score below {policy.risk_step_up:g} would pass"], "text": text}


def call_times(engine: Engine, tenant_id: str, violation: Mapping[str, Any], policy: Policy) -> dict[str, list[float]]:
    """Epoch times of the calls each matched rate limit counts, for `next_allowed_at`.

    From the engine's own window when this process decided the session (exact, and about the next
    call from now); otherwise from the session's recorded TOOL_CALL_PRE events up to the violation
    (offline: a fresh engine over the store, another replica, after a restart)."""
    tool = str(violation.get("tool_name") or "")
    session = str(violation.get("session_id") or "")
    wanted = [limit for limit in policy.rate_limits if limit.id in (violation.get("matched_rule_ids") or [])]
    out: dict[str, list[float]] = {}
    if not wanted:
        return out
    state = getattr(engine, "_sessions", {}).get((tenant_id, session))
    windows = getattr(state, "rate", None) or {}
    offset = time.time() - engine._clock()
    for limit in wanted:
        window = windows.get((limit.id, tool))
        if window:
            out[limit.id] = [offset + t for t in window]
    missing = [limit for limit in wanted if limit.id not in out]
    if missing:
        from thoth_nb.engine.store import parse_ts

        created = parse_ts(str(violation.get("created_at"))).timestamp()
        longest = max(limit.per_seconds for limit in missing)
        since = dt.datetime.fromtimestamp(created - longest, dt.UTC)
        try:
            rows = engine.store.events(tenant_id, session_id=session, tool_name=tool, event_type="TOOL_CALL_PRE",
                                       since=since.isoformat())
        except Exception:  # an explanation never fails for want of the retry time
            rows = []
        times = [parse_ts(str(r["occurred_at"])).timestamp() for r in rows if r.get("occurred_at")]
        for limit in missing:
            out[limit.id] = [t for t in times if created - limit.per_seconds < t <= created]
    return out


def enrich(engine: Engine, policy: Policy, violation: Mapping[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """`Engine.explain`'s answer plus what would have passed (`counterfactual`), and a next step that says it."""
    extra = counterfactual(policy, violation, call_times=call_times(engine, str(answer.get("tenant_id") or ""),
                                                                    violation, policy))
    answer.update(extra)
    answer["what_to_do_next"] = f"What would pass: {extra['what_would_pass']}. {answer.get('what_to_do_next', '')}"
    return answer


def explanation_rows(answer: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An explanation as (label, text) rows for the cards (`%thoth explain`, the dashboard's Violations tab):
    what happened, why, the rule that decided, the conditions that failed, what would pass, next step."""
    rows = [("what happened", str(answer.get("what_happened") or "")),
            ("why", str(answer.get("why_it_was_blocked") or ""))]
    decided = answer.get("decided_by")
    if isinstance(decided, Mapping):
        rows.append(("decided by", f"{decided.get('kind')} {decided.get('rule_id')}: {decided.get('condition')} → "
                                   f"{decided.get('decision')}"))
    rows += [("condition that failed", str(c.get("text"))) for c in answer.get("failed_conditions") or []]
    rows += [("what would pass", str(p.get("text"))) for p in answer.get("would_pass") or []]
    next_step = str(answer.get("what_to_do_next") or "")
    if answer.get("what_would_pass"):
        next_step = next_step.removeprefix(f"What would pass: {answer['what_would_pass']}. ")
    rows += [("what to do next", next_step), ("impact", str(answer.get("business_impact") or "")),
             ("severity", str(answer.get("severity") or ""))]
    if not isinstance(decided, Mapping):  # an explanation from a server without counterfactuals
        rows += [(f"rule {c.get('rule_id')}", f"{c.get('condition')} → {c.get('decision')}")
                 for c in answer.get("conditions") or []]
    return rows
