"""Policy coverage: what the recorded traffic says about the policy, as one DataFrame of findings.

    report = thoth_nb.coverage(thoth_nb.events(since="7d"), "policy.yaml")
    report[report["finding"] == "rule never fired"]

Three findings:

- **tool without rule**: a tool an agent called (or listed in its tool inventory, PROTOCOL §6) that
  no rule names for that agent. Rules whose only tool pattern is `"*"` apply to every tool, so they
  do not count as covering it; the `detail` column lists them.
- **rule never fired**: a rule or rate limit of the policy that matched none of the recorded calls.
  A rule fired on a call when the call's agent and tool are the rule's and its `when`/`any`
  conditions hold on the call's arguments; sequence rules and rate limits need the session's
  history, so for those the calls are re-decided in order under the policy (`replay`, no tool runs).
- **always approved**: a tool whose step-up holds reviewers approved every time (at least
  `min_approvals` resolved holds, none denied or expired): a candidate for letting it through, by
  narrowing the rule that holds it (an allow rule does not outrank a step-up rule; `thoth_nb.replay`
  shows what the change would do first).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from thoth_nb.analytics.frames import _pd

if TYPE_CHECKING:
    import pandas as pd

    from thoth_nb.engine.policy import Policy

__all__ = ["COLUMNS", "FINDINGS", "coverage"]

FINDINGS = ("tool without rule", "rule never fired", "always approved")
COLUMNS = ["finding", "agent_id", "tool_name", "rule_id", "calls", "approvals", "detail"]


def coverage(events: pd.DataFrame, policy: Any, *, approvals: pd.DataFrame | None = None,
             inventory: list[Mapping[str, Any]] | None = None, min_approvals: int = 3) -> pd.DataFrame:
    """Findings about `policy` (a path, YAML text, dict or Policy) over the recorded calls in `events`.

    Columns: finding, agent_id, tool_name, rule_id, calls (recorded calls of the tool, or calls the
    rule could have matched), approvals (resolved holds), detail. `approvals` defaults to the
    store's holds and `inventory` to the store's tool inventory when `events` came from the embedded
    store. `result.attrs["thoth_coverage"]` counts each finding."""
    from thoth_nb.analytics.replay import load_candidate

    pd = _pd()
    if min_approvals < 1:
        raise ValueError(f"min_approvals must be at least 1; got {min_approvals}")
    candidate = load_candidate(policy)
    info = dict(events.attrs.get("thoth") or {})
    calls = events
    if "event_type" in events.columns:
        calls = events[(events["event_type"].astype(str) == "TOOL_CALL_PRE").to_numpy()]
    if "tool_name" not in calls.columns:
        raise ValueError("coverage needs a frame from thoth_nb.events() (a tool_name column per call)")
    if "tool_args" not in calls.columns and info.get("source") == "store":
        calls = calls.thoth.with_args()
    if info.get("source") == "store":
        borrowed = _Borrowed(info["path"])
        try:
            if approvals is None:
                from thoth_nb.analytics.frames import approvals as read_approvals

                approvals = read_approvals("all", tenant_id=info["tenant_id"], store=borrowed.store, limit=1_000_000)
            if inventory is None:
                inventory = borrowed.store.inventory(info["tenant_id"])
        finally:
            borrowed.close()
    agents = calls["agent_id"].astype(str) if "agent_id" in calls.columns else pd.Series("agent", index=calls.index)
    tools = calls["tool_name"].astype(str)
    rows = _tools_without_rule(candidate, agents, tools, inventory or [])
    rows += _rules_never_fired(candidate, calls, agents, tools)
    if approvals is not None and len(approvals):
        rows += _always_approved(approvals, min_approvals)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["finding"] = pd.Categorical(frame["finding"], categories=list(FINDINGS))
    frame = frame.sort_values(["finding", "calls"], ascending=[True, False], kind="stable").reset_index(drop=True)
    frame["calls"] = frame["calls"].astype("int64")
    frame["approvals"] = frame["approvals"].astype("int64")
    frame.attrs["thoth_coverage"] = {
        "calls": len(calls), "policy": candidate.source or "<policy>",
        **{finding: int((frame["finding"] == finding).sum()) for finding in FINDINGS}}
    return frame  # type: ignore[no-any-return]


class _Borrowed:
    """The store at `path`: the one this process already has open (left open), else a new one (closed after)."""

    def __init__(self, path: str) -> None:
        from pathlib import Path

        from thoth_nb import _runtime
        from thoth_nb.engine.store import SQLiteStore

        here = [s for s in list(_runtime._stores.values()) if Path(s.path).resolve() == Path(path).resolve()]
        self.store: Any = here[0] if here else SQLiteStore(path)
        self.owned = not here

    def close(self) -> None:
        if self.owned:
            self.store.close()


def _specific(policy: Policy, agent: str, tool: str) -> tuple[list[str], list[str]]:
    """(rules naming this tool for this agent, rules that apply only through the "*" pattern)."""
    named: list[str] = []
    wildcard: list[str] = []
    for rule in policy.rules_for(agent, tool):
        (wildcard if all(p == "*" for p in rule.tools) else named).append(rule.id)
    return named, wildcard


def _tools_without_rule(policy: Policy, agents: Any, tools: Any, inventory: list[Mapping[str, Any]]
                        ) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], int] = dict(collections.Counter(zip(agents, tools, strict=True)))
    for item in inventory:
        key = (str(item.get("agent_id") or ""), str(item.get("tool_name") or ""))
        if key[1] and key not in counts:
            counts[key] = 0
    rows = []
    for (agent, tool), n in counts.items():
        named, wildcard = _specific(policy, agent, tool)
        if named:
            continue
        limits = [limit.id for limit in policy.limits_for(agent, tool)]
        detail = ("only wildcard rules apply: " + ", ".join(wildcard)) if wildcard else "no rule applies"
        if limits:
            detail += f"; rate limits: {', '.join(limits)}"
        if n == 0:
            detail += "; in the agent's tool inventory, never called"
        rows.append({"finding": FINDINGS[0], "agent_id": agent, "tool_name": tool, "rule_id": None, "calls": n,
                     "approvals": 0, "detail": detail})
    return rows


def _rules_never_fired(policy: Policy, calls: Any, agents: Any, tools: Any) -> list[dict[str, Any]]:
    """Per rule, how many calls it could have matched and how many it matched; rows for those at zero."""
    from thoth_nb.engine.policy import RateLimit, Rule

    args = calls["tool_args"].tolist() if "tool_args" in calls.columns else [None] * len(calls)
    fired: dict[str, int] = {}
    applicable: dict[str, int] = {}
    for agent, tool, arguments in zip(agents, tools, args, strict=True):
        for rule in policy.rules_for(agent, tool):
            applicable[rule.id] = applicable.get(rule.id, 0) + 1
            if not rule.after and rule.matches(arguments if isinstance(arguments, Mapping) else None):
                fired[rule.id] = fired.get(rule.id, 0) + 1
        for limit in policy.limits_for(agent, tool):
            applicable[limit.id] = applicable.get(limit.id, 0) + 1
    if any(rule.after for rule in policy.rules) or policy.rate_limits:
        for rule_id, n in _replayed(policy, calls, tools).items():
            fired[rule_id] = fired.get(rule_id, 0) + n
    rows = []
    entries: list[Rule | RateLimit] = [*policy.rules, *policy.rate_limits]
    for entry in entries:
        if fired.get(entry.id):
            continue
        seen = applicable.get(entry.id, 0)
        if not seen:
            detail = f"no recorded call of {', '.join(entry.tools)}" + (
                f" by agent {entry.agent_id}" if entry.agent_id else "")
        elif isinstance(entry, RateLimit):
            detail = f"{seen} call(s) recorded; never more than {entry.max_calls} in {entry.per_seconds:g}s"
        else:
            detail = f"{seen} call(s) recorded; its conditions held on none"
        kind = "rate limit" if isinstance(entry, RateLimit) else "rule"
        rows.append({"finding": FINDINGS[1], "agent_id": entry.agent_id, "tool_name": ", ".join(entry.tools),
                     "rule_id": entry.id, "calls": seen, "approvals": 0, "detail": f"{kind}: {detail}"})
    return rows


def _replayed(policy: Policy, calls: Any, tools: Any) -> dict[str, int]:
    """Matches of sequence rules and rate limits: the calls re-decided in order (observe: every verdict)."""
    from thoth_nb.analytics.replay import replay

    if not len(calls):
        return {}
    result = replay(calls, policy, mode="observe", approved_scope=sorted(set(tools)), changes_only=False)
    out: dict[str, int] = {}
    for rules in result["after_rules"]:
        for rule_id in rules:
            out[rule_id] = out.get(rule_id, 0) + 1
    return out


def _always_approved(approvals: Any, min_approvals: int) -> list[dict[str, Any]]:
    resolved = approvals[approvals["status"].astype(str).isin(["approved", "denied", "expired"]).to_numpy()]
    rows = []
    for (agent, tool), group in resolved.groupby([resolved["agent_id"].astype(str),
                                                   resolved["tool_name"].astype(str)], sort=True):
        statuses = group["status"].astype(str)
        approved = int((statuses == "approved").sum())
        if approved < min_approvals or approved != len(group):
            continue
        reviewers = sorted({str(r) for r in group["reviewer"].dropna()}) if "reviewer" in group else []
        reasons = sorted({str(r) for r in group["reason"].dropna()}) if "reason" in group else []
        detail = (f"approved {approved} of {approved} holds" + (f" by {', '.join(reviewers)}" if reviewers else "")
                  + (f"; held because: {'; '.join(reasons[:3])}" if reasons else "")
                  + "; candidate for letting it through (narrow the rule that holds it, try it with replay)")
        rows.append({"finding": FINDINGS[2], "agent_id": agent, "tool_name": tool, "rule_id": None,
                     "calls": len(group), "approvals": approved, "detail": detail})
    return rows
