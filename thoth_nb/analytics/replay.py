"""What-if replay: re-decide recorded tool calls under a candidate policy, and show what would change.

    changes = thoth_nb.replay(thoth_nb.events(since="7d"), policy="stricter.yaml")
    thoth_nb.analytics.replay.rule_counts(changes)

Every recorded TOOL_CALL_PRE event becomes an enforce request (tool, arguments, agent, session,
user, approved scope, enforcement mode) decided, in recorded order, by a fresh `Engine` over a
temporary SQLite store with the candidate policy; the engine's clock is the recorded time, so rate
limits and progressive-mode bursts see the calls as they happened. Replay only decides: it never
runs a tool, never creates a hold anyone waits on, and never writes to your store.

`before` is what was recorded for the call (the decision on its TOOL_CALL_POST/BLOCK event; STEP_UP
when the call waited for a hold; for observe-mode calls the decision enforcement would have taken),
`after` is the candidate's decision read the same way. Not replayed: reviewers' session-wide grants
(a STEP_UP approved "for the session" is a STEP_UP again here) and hold outcomes. Replay sees the
arguments as events recorded them, that is redacted (thoth_nb/_redact.py): a rule that tests a masked
value (an API key's prefix, a mailbox; email domains are kept) cannot fire again, so turn such patterns
off with `redact=`/`redact_defaults=` where replaying them matters.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thoth_nb.analytics.baseline import _pd, load_fields

if TYPE_CHECKING:
    import pandas as pd

    from thoth_nb.engine.policy import Policy

__all__ = ["load_candidate", "replay", "rule_counts"]

_STORE_FIELDS = {
    "enforcement_mode": "$.enforcement_mode",
    "approved_scope": "$.approved_scope",
    "observed_decision": "$.metadata.observed_decision",
    "hold_token": "$.metadata.hold_token",
    "matched_rule_ids": "$.metadata.matched_rule_ids",
}


def load_candidate(policy: Any) -> Policy:
    """A Policy from a Policy, a mapping, YAML text, or a path to a YAML file."""
    from thoth_nb.engine.policy import Policy, load_policy, parse_policy

    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, Mapping):
        return parse_policy(policy, name="<candidate policy>")
    if isinstance(policy, Path):
        return load_policy(policy)
    if isinstance(policy, str):
        # one line with no ':' cannot be a policy mapping: a path, so a missing file says "not found"
        if "\n" not in policy and not policy.lstrip().startswith("{") and (
                Path(policy).expanduser().exists() or policy.endswith((".yaml", ".yml")) or ":" not in policy):
            return load_policy(policy)
        return parse_policy(policy, name="<candidate policy>")
    raise TypeError(f"policy must be a path, YAML text, a dict or a Policy; got {type(policy).__name__}")


def _effective(decision: Any, observed: Any, held: Any) -> Any:
    """The decision to compare: the observe-mode verdict when there is one, STEP_UP when a hold was raised."""
    if isinstance(observed, str) and observed:
        return observed
    if isinstance(held, str) and held:
        return "STEP_UP"
    return decision if isinstance(decision, str) and decision else None


_OUTCOMES = ("TOOL_CALL_POST", "TOOL_CALL_BLOCK")


def call_numbers(events: Any) -> np.ndarray:
    """Per row of an events frame (by position): the number of its call within its (session, tool) in
    time order, so the k-th TOOL_CALL_PRE and the POST/BLOCK event answering it share k (events carry no
    call id; a session's calls of one tool are answered in order). -1 for other rows and for an outcome
    whose PRE is not in the frame: a frame cut by a time bound mid-call (`events(since=...)`) starts with
    one, and numbering it too gave every later call of that tool the outcome of the call before it.

    An outcome is such an orphan when no PRE of its (session, tool) is waiting for one: with PRE +1 and
    outcome -1 its running sum S falls below min(0, every earlier S)."""
    pd = _pd()
    kinds = events["event_type"].astype(str).to_numpy()
    step = np.where(kinds == "TOOL_CALL_PRE", 1, np.where(np.isin(kinds, _OUTCOMES), -1, 0))
    keys = [c for c in ("occurred_at", "seq") if c in events.columns]
    order = (events[keys].reset_index(drop=True).sort_values(keys, kind="stable").index.to_numpy() if keys
             else np.arange(len(events)))
    work = pd.DataFrame({"session": events["session_id"].astype(str).to_numpy()[order],
                         "tool": events["tool_name"].astype(str).to_numpy()[order], "step": step[order]})
    group = [work["session"], work["tool"]]
    total = work["step"].groupby(group, sort=False).cumsum()
    floor = total.groupby(group, sort=False).cummin().groupby(group, sort=False).shift(fill_value=0).clip(upper=0)
    paired = ((work["step"] == 1) | ((work["step"] == -1) & (total >= floor))).to_numpy()
    numbered = work[paired]
    out = np.full(len(events), -1, dtype=np.int64)
    out[order[paired]] = numbered.groupby(["session", "tool", "step"], sort=False).cumcount().to_numpy()
    return out


def _recorded(pd: Any, events: Any, pre: Any, info: Mapping[str, Any]) -> Any:
    """Per PRE row: the recorded decision and rule ids from the call's POST/BLOCK event (the k-th PRE of a
    (session, tool) pairs with its k-th outcome, see `call_numbers`)."""
    if "event_type" not in events.columns:
        return pd.DataFrame({"before": [None] * len(pre), "before_rules": [[] for _ in range(len(pre))]},
                            index=pre.index)
    numbers = call_numbers(events)
    kinds = events["event_type"].astype(str).to_numpy()
    answered = np.isin(kinds, _OUTCOMES) & (numbers >= 0)
    outcome = events[answered]
    if info.get("source") == "store" and len(outcome):
        extra = load_fields(outcome, info["path"], info["tenant_id"],
                            {k: _STORE_FIELDS[k] for k in ("observed_decision", "hold_token", "matched_rule_ids")})
    else:
        extra = pd.DataFrame(index=outcome.index, columns=["observed_decision", "hold_token", "matched_rule_ids"])
    decisions = outcome["decision"].astype(object) if "decision" in outcome.columns else [None] * len(outcome)
    before = [_effective(d, o, h) for d, o, h in zip(decisions, extra["observed_decision"], extra["hold_token"],
                                                     strict=True)]
    rules = [_rule_list(r) for r in extra["matched_rule_ids"]]
    keyed_out = pd.DataFrame({"session_id": outcome["session_id"].astype(str).to_numpy(),
                              "tool_name": outcome["tool_name"].astype(str).to_numpy(),
                              "before": before, "before_rules": rules, "k": numbers[answered]})
    keyed_pre = pd.DataFrame({"session_id": pre["session_id"].astype(str).to_numpy(),
                              "tool_name": pre["tool_name"].astype(str).to_numpy()}, index=pre.index)
    keyed_pre["k"] = keyed_pre.groupby(["session_id", "tool_name"], sort=False).cumcount()
    merged = keyed_pre.reset_index().merge(keyed_out, on=["session_id", "tool_name", "k"], how="left")
    merged = merged.set_index("index")
    merged["before_rules"] = [r if isinstance(r, list) else [] for r in merged["before_rules"]]
    return merged[["before", "before_rules"]]


def pre_calls(events: Any, info: Mapping[str, Any]) -> Any:
    """The TOOL_CALL_PRE rows of an events frame, with their arguments, in recorded order."""
    pre = events
    if "event_type" in events.columns:
        pre = events[(events["event_type"].astype(str) == "TOOL_CALL_PRE").to_numpy()]
    if "tool_args" not in pre.columns and info.get("source") == "store":
        pre = pre.thoth.with_args()
    order_keys = [c for c in ("occurred_at", "seq") if c in pre.columns]
    return pre.sort_values(order_keys, kind="stable") if order_keys else pre


def _rule_list(value: Any) -> list[str]:
    if isinstance(value, str):
        from thoth_nb import _json

        try:
            value = _json.loads(value)
        except ValueError:
            return [value]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def replay(
    events: pd.DataFrame,
    policy: Any,
    *,
    mode: str | None = None,
    approved_scope: list[str] | None = None,
    tenant_id: str | None = None,
    changes_only: bool = True,
) -> pd.DataFrame:
    """Re-decide the recorded calls in `events` under the candidate `policy` (path, YAML text, dict or
    Policy) and return the calls whose decision would change (all calls with `changes_only=False`).

    Columns: seq, occurred_at, session_id, agent_id, tool_name, tool_args, mode, before, after,
    changed, transition ("ALLOW→BLOCK"), before_rules, after_rules, after_reason, after_code,
    risk_score. `mode` replays every call in that enforcement mode instead of the recorded one
    (the default, "block" when it was not recorded); `approved_scope` replaces the recorded scope
    (default: the recorded one, else every tool seen for that agent). Counts per rule are in
    `rule_counts(result)`; run statistics in `result.attrs["thoth_replay"]`.
    """
    from thoth_nb._models import DecisionType
    from thoth_nb.analytics.frames import default_tenant
    from thoth_nb.engine.decide import Engine
    from thoth_nb.engine.store import SQLiteStore

    pd = _pd()
    candidate = load_candidate(policy)
    info = dict(events.attrs.get("thoth") or {})
    pre = pre_calls(events, info)
    n = len(pre)
    tenant = str(info.get("tenant_id") or default_tenant(tenant_id))
    if info.get("source") == "store" and n and "seq" in pre.columns:
        fields = load_fields(pre, info["path"], info["tenant_id"],
                             {k: _STORE_FIELDS[k] for k in ("enforcement_mode", "approved_scope")})
    else:
        fields = pd.DataFrame(index=pre.index, columns=["enforcement_mode", "approved_scope"])
        for column in ("enforcement_mode", "approved_scope"):
            if column in pre.columns:
                fields[column] = pre[column]
    recorded = _recorded(pd, events, pre, info)
    agents = pre["agent_id"].astype(str).to_numpy() if "agent_id" in pre.columns else np.array(["agent"] * n)
    tools = pre["tool_name"].astype(str).to_numpy()
    sessions = pre["session_id"].astype(str).to_numpy()
    users = pre["user_id"].astype(str).to_numpy() if "user_id" in pre.columns else np.array(["system"] * n)
    args_col = pre["tool_args"].to_numpy(dtype=object) if "tool_args" in pre.columns else np.array([None] * n)
    seen: dict[str, list[str]] = {}
    if approved_scope is None:
        for agent, tool in zip(agents, tools, strict=True):
            found = seen.setdefault(agent, [])
            if tool not in found:
                found.append(tool)
    modes = [mode or (m if isinstance(m, str) and m else "block") for m in fields["enforcement_mode"]]
    scopes = [approved_scope or (_rule_list(s) if s is not None and not isinstance(s, float) else None)
              or seen.get(agent, [tool])
              for s, agent, tool in zip(fields["approved_scope"], agents, tools, strict=True)]
    times = (pre["occurred_at"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
             if "occurred_at" in pre.columns else np.arange(n, dtype=np.float64))
    now = [0.0]
    after: list[Any] = [None] * n
    after_rules: list[list[str]] = [[] for _ in range(n)]
    reasons: list[str] = [""] * n
    codes: list[str] = [""] * n
    risks = np.zeros(n)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thoth-replay-") as folder:
        store = SQLiteStore(Path(folder) / "replay.db")
        store._db.execute("PRAGMA synchronous=OFF")  # a scratch store: durability is not wanted here
        engine = Engine(store, candidate, clock=lambda: now[0])
        allow = DecisionType.ALLOW
        try:
            for i in range(n):
                now[0] = float(times[i])
                args = args_col[i]
                request = {"agent_id": agents[i], "tenant_id": tenant, "user_id": users[i], "tool_name": tools[i],
                           "session_id": sessions[i], "approved_scope": scopes[i],
                           "enforcement_mode": modes[i], "session_tool_calls": [tools[i]]}
                if isinstance(args, dict):
                    request["tool_args"] = args
                decision = engine.decide(request)
                after[i] = (decision.observed_decision or decision.decision).value
                if decision.decision is not allow or decision.observed_decision is not None:
                    after_rules[i] = list(decision.matched_rule_ids)
                    reasons[i] = decision.reason
                    codes[i] = decision.decision_reason_code
                    risks[i] = decision.risk_score
        finally:
            store.close()
    elapsed = time.perf_counter() - started
    out = pd.DataFrame({
        "seq": pre["seq"].to_numpy() if "seq" in pre.columns else np.arange(n),
        "occurred_at": pre["occurred_at"].reset_index(drop=True) if "occurred_at" in pre.columns else pd.NaT,
        "session_id": sessions, "agent_id": agents, "tool_name": tools, "tool_args": list(args_col),
        "mode": modes, "before": recorded["before"].to_numpy(), "after": after,
        "before_rules": list(recorded["before_rules"]), "after_rules": after_rules,
        "after_reason": reasons, "after_code": codes, "risk_score": risks,
    })
    out["before"] = out["before"].astype(object)
    known = out["before"].notna().to_numpy()
    before_s = pd.Series(np.where(known, out["before"].to_numpy(), "?"), dtype=object).astype(str)
    out.insert(9, "changed", (before_s != out["after"].astype(str)).to_numpy() & known)
    out.insert(10, "transition", np.where(out["changed"], before_s + "→" + out["after"].astype(str), ""))
    for column in ("session_id", "agent_id", "tool_name", "mode", "before", "after", "transition"):
        out[column] = out[column].astype("category")
    stats = {"calls": n, "changed": int(out["changed"].sum()), "seconds": elapsed,
             "decisions_per_second": n / elapsed if elapsed > 0 else float("inf"),
             "policy": candidate.source or "<candidate policy>",
             "transitions": {str(k): int(v) for k, v in out.loc[out["changed"], "transition"].value_counts().items()
                             if v},
             "rule_counts": _counts(out)}
    result = out[out["changed"].to_numpy()].reset_index(drop=True) if changes_only else out
    result.attrs["thoth_replay"] = stats
    return result  # type: ignore[no-any-return]


def _counts(out: Any) -> list[dict[str, Any]]:
    tally: dict[str, dict[str, int]] = {}
    for column, key in (("before_rules", "before"), ("after_rules", "after")):
        for rules, changed in zip(out[column], out["changed"], strict=True):
            for rule in rules:
                row = tally.setdefault(rule, {"before": 0, "after": 0, "changed": 0})
                row[key] += 1
                if changed and key == "after":
                    row["changed"] += 1
    return [{"rule_id": k, **v} for k, v in sorted(tally.items())]


def rule_counts(replayed: pd.DataFrame) -> pd.DataFrame:
    """Per rule id: calls it matched in the recording (`before`), under the candidate (`after`), and
    how many changed decisions it drove (`changed`), from a `replay()` result (over all calls)."""
    pd = _pd()
    stats = replayed.attrs.get("thoth_replay") or {}
    rows = stats.get("rule_counts")
    if rows is None:
        rows = _counts(replayed)
    frame = pd.DataFrame(rows, columns=["rule_id", "before", "after", "changed"])
    return frame.sort_values(["changed", "after"], ascending=False, kind="stable").reset_index(  # type: ignore[no-any-return]
        drop=True)
