"""Policy tests in cells: state the decision you expect for example calls, see which ones the policy gets wrong.

    thoth_nb.policy_test("policy.yaml", [
        {"tool": "read_file", "args": {"path": "secrets/a.env"}, "expect": "block"},
        {"tool": "read_file", "args": {"path": "notes.md"}, "expect": "allow"},
    ])

A case is a mapping with `tool` (required) and `expect` (allow, step_up, block, modify; required),
and optionally `args`, `agent` (default "agent"), `user`, `scope` (the approved scope; default: just
this tool, so the scope check is not what is tested unless you give one), `session` (cases with
the same session id are decided in order in one session, which is how sequence rules and rate
limits are tested), `before` (earlier calls, `[{tool, args}]`, made in the case's session first and
not checked), `mode` (see below), `at` (seconds, or a time, for rate-limit windows) and `name`.

`mode` "policy" (the default) checks the policy's own verdict: the decision its rules give, before
an enforcement mode maps it (step_up mode softens BLOCK, block mode hardens STEP_UP). Any
enforcement mode (observe, step_up, block, progressive) checks what enforcement in that mode
answers instead. Nothing runs a tool: a fresh engine over a scratch store decides each case.

`regression_cases(frame)` turns recorded traffic into cases that expect what happened then: an
events frame (`thoth_nb.events()`: every call, with its session and time, so sequence rules and
rate limits replay), a violations frame (`thoth_nb.violations()`) or an approvals frame
(`thoth_nb.approvals()`; a held call is expected to be held again, or to pass with
`approved_expect="allow"` when you are writing the allow rule reviewers keep asking for).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thoth_nb.analytics.frames import _pd

if TYPE_CHECKING:
    import pandas as pd


__all__ = ["DECISIONS", "RESULT_COLUMNS", "normalize_decision", "policy_test", "regression_cases", "summary"]

DECISIONS = ("ALLOW", "MODIFY", "STEP_UP", "BLOCK")
RESULT_COLUMNS = ["case", "tool", "agent", "args", "mode", "expected", "actual", "passed", "rule", "rules",
                  "reason", "what_would_pass"]
_CASE_KEYS = {"name", "tool", "tool_name", "args", "tool_args", "agent", "agent_id", "user", "user_id", "scope",
              "approved_scope", "session", "session_id", "before", "mode", "at", "expect", "expected", "note"}
_MODES = ("policy", "observe", "step_up", "block", "progressive")
_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: cases without `at` are a millisecond apart from here


def normalize_decision(value: Any, where: str = "expect") -> str:
    """'allow', 'Step-Up', 'STEP_UP' → 'STEP_UP'; anything else is a ValueError naming the choices."""
    text = str(value).strip().upper().replace("-", "_").replace(" ", "_") if value is not None else ""
    if text == "STEPUP":
        text = "STEP_UP"
    if text not in DECISIONS:
        raise ValueError(f"{where}: {value!r} is not a decision; use one of allow, step_up, block, modify")
    return text


def _pick(case: Mapping[str, Any], *keys: str) -> Any:
    return next((case[k] for k in keys if k in case and case[k] is not None), None)


def _time(value: Any, default: float, where: str) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _START + float(value) if value < 1e9 else float(value)
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValueError(f"{where}: `at` must be seconds from the start, an epoch time or an ISO time; got {value!r}")


def _cases(cases: Any) -> list[dict[str, Any]]:
    """Cases from a list of mappings, a DataFrame, or a mapping with `cases:`; each checked for its keys."""
    if hasattr(cases, "to_dict") and hasattr(cases, "columns"):
        cases = cases.to_dict("records")
    if isinstance(cases, Mapping):
        cases = cases.get("cases", [cases] if "tool" in cases or "tool_name" in cases else None)
    if not isinstance(cases, Iterable) or isinstance(cases, (str, bytes)):
        raise TypeError("cases must be a list of mappings like {tool: read_file, args: {...}, expect: block}")
    out = []
    for i, case in enumerate(cases):
        where = f"case {i + 1}"
        if not isinstance(case, Mapping):
            raise TypeError(f"{where}: each case must be a mapping like {{tool: read_file, expect: block}}; "
                            f"got {type(case).__name__}")
        where = f"case {i + 1}" + (f" ({case['name']})" if case.get("name") else "")
        unknown = sorted(str(k) for k in set(case) - _CASE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; a case has: tool, args, expect, agent, scope, "
                             "session, before, mode, at, user, name")
        tool = _pick(case, "tool", "tool_name")
        if not isinstance(tool, str) or not tool:
            raise ValueError(f"{where}: needs `tool:` naming the tool called")
        expected = _pick(case, "expect", "expected")
        if expected is None:
            raise ValueError(f"{where}: needs `expect:` (allow, step_up or block)")
        args = _pick(case, "args", "tool_args")
        if args is not None and not isinstance(args, Mapping):
            raise ValueError(f"{where}: `args` must be a mapping of argument names to values; got {args!r}")
        scope = _pick(case, "scope", "approved_scope")
        if isinstance(scope, str):
            scope = [s.strip() for s in scope.split(",") if s.strip()]
        if scope is not None and (not isinstance(scope, Sequence) or not all(isinstance(s, str) for s in scope)):
            raise ValueError(f"{where}: `scope` must be a list of tool names")
        mode = str(case.get("mode") or "policy").lower()
        if mode not in _MODES:
            raise ValueError(f"{where}: mode {mode!r} is not one of {', '.join(_MODES)}")
        before = case.get("before") or []
        if not isinstance(before, list) or not all(isinstance(b, Mapping) and isinstance(_pick(b, "tool", "tool_name"),
                                                                                         str) for b in before):
            raise ValueError(f"{where}: `before` must be a list of earlier calls like [{{tool: read_file, args: ...}}]")
        out.append({"name": str(case.get("name") or i + 1), "where": where, "tool": tool,
                    "args": dict(args) if args is not None else None,
                    "agent": str(_pick(case, "agent", "agent_id") or "agent"),
                    "user": str(_pick(case, "user", "user_id") or "policy-test"),
                    "scope": list(scope) if scope is not None else None,
                    "session": _pick(case, "session", "session_id"), "before": before, "mode": mode,
                    "at": case.get("at"), "expected": normalize_decision(expected, f"{where}: expect")})
    return out


def _request(case: Mapping[str, Any], tool: str, args: Any, session: str, tenant_id: str) -> dict[str, Any]:
    """The §3.1 enforce body of one call of a case ("policy" mode is observe: the verdict, unmapped)."""
    body = {"agent_id": case["agent"], "tenant_id": tenant_id, "user_id": case["user"], "tool_name": tool,
            "session_id": session, "enforcement_mode": "observe" if case["mode"] == "policy" else case["mode"],
            "approved_scope": case["scope"] if case["scope"] is not None else [tool]}
    if isinstance(args, Mapping):
        body["tool_args"] = dict(args)
    return body


def policy_test(policy: Any, cases: Any, *, mode: str | None = None, tenant_id: str = "policy-test") -> pd.DataFrame:
    """Decide every case under `policy` (a path, YAML text, a dict or a Policy) and compare with `expect`.

    Returns one row per case: case, tool, agent, args, mode, expected, actual, passed, rule (the rule
    that decided), rules (every rule that matched), reason, and what_would_pass (for a call that did
    not pass, what would have: `thoth_nb.engine.explain`). `result.attrs["thoth_policy_test"]` has
    the counts; `mode` overrides every case's mode."""
    from thoth_nb.analytics.replay import load_candidate
    from thoth_nb.engine.decide import Engine
    from thoth_nb.engine.explain import counterfactual
    from thoth_nb.engine.store import SQLiteStore

    pd = _pd()
    candidate = load_candidate(policy)
    checked = _cases(cases)
    if mode is not None:
        if mode.lower() not in _MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(_MODES)}")
        for case in checked:
            case["mode"] = mode.lower()
    rows: list[dict[str, Any]] = []
    now = [_START]
    with tempfile.TemporaryDirectory(prefix="thoth-policy-test-") as folder:
        store = SQLiteStore(Path(folder) / "cases.db")
        try:
            engine = Engine(store, candidate, clock=lambda: now[0])
            for i, case in enumerate(checked):
                now[0] = _time(case["at"], max(now[0], _START + i * 0.001), case["where"])
                session = str(case["session"] or f"case-{i + 1}")
                for earlier in case["before"]:
                    engine.decide(_request(case, str(_pick(earlier, "tool", "tool_name")),
                                           _pick(earlier, "args", "tool_args"), session, tenant_id))
                body = _request(case, case["tool"], case["args"], session, tenant_id)
                decision = engine.decide(body)
                actual = (decision.observed_decision if case["mode"] in ("policy", "observe") and
                          decision.observed_decision is not None else decision.decision).value
                rules = list(decision.matched_rule_ids)
                why = ""
                if actual != "ALLOW":
                    record = {"tool_name": case["tool"], "agent_id": case["agent"], "session_id": session,
                              "tool_args": case["args"], "matched_rule_ids": rules, "risk_score": decision.risk_score,
                              "decision_reason_code": decision.decision_reason_code, "request": body}
                    explained = counterfactual(candidate, record)
                    why = explained["what_would_pass"]
                    decided = explained["decided_by"]
                    rule = str(decided["rule_id"]) if decided else (rules[0] if rules else "")
                else:
                    rule = ""
                rows.append({"case": case["name"], "tool": case["tool"], "agent": case["agent"], "args": case["args"],
                             "mode": case["mode"], "expected": case["expected"], "actual": actual,
                             "passed": actual == case["expected"], "rule": rule, "rules": rules,
                             "reason": decision.reason if actual != "ALLOW" else "", "what_would_pass": why})
        finally:
            store.close()
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    frame["passed"] = frame["passed"].astype(bool)
    failed = int((~frame["passed"]).sum())
    frame.attrs["thoth_policy_test"] = {"cases": len(frame), "passed": len(frame) - failed, "failed": failed,
                                        "policy": candidate.source or "<policy>"}
    return frame  # type: ignore[no-any-return]


def summary(result: pd.DataFrame) -> str:
    """One line: "policy.yaml: 3 of 4 cases pass; failing: 2 (read_file: expected BLOCK, got ALLOW)"."""
    stats = result.attrs.get("thoth_policy_test") or {}
    failing = result[~result["passed"]]
    text = f"{stats.get('policy', 'policy')}: {len(result) - len(failing)} of {len(result)} cases pass"
    if len(failing):
        text += "; failing: " + "; ".join(f"{r.case} ({r.tool}: expected {r.expected}, got {r.actual})"
                                          for r in failing.itertuples())
    return text



# --- regression cases from recorded traffic ------------------------------------------------------


def regression_cases(frame: pd.DataFrame, *, approved_expect: str | None = None,
                     decisions: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Cases that expect what was recorded, from an events, violations or approvals frame.

    Events frame: every completed or blocked call, in order, with its session, time, recorded mode
    and scope when the store has them, expecting the recorded decision (observe-mode calls expect
    what enforcement would have done). Violations frame: each violation's tool, arguments and
    decision. Approvals frame: each hold expects STEP_UP (in step_up mode), or `approved_expect`
    for the approved ones. Violation and approval cases have no session: a sequence rule or rate
    limit that needed earlier calls will not fire again (use the events frame for those).
    `decisions` keeps only cases expecting those decisions (e.g. ["BLOCK", "STEP_UP"]).
    Feed the result to `policy_test` (or dump it as YAML into a `%%thoth_policy` cell)."""
    kind = (frame.attrs.get("thoth") or {}).get("kind")
    columns = set(frame.columns)
    if kind == "approvals" or {"approval_id", "status"} <= columns:
        cases = _from_approvals(frame, approved_expect)
    elif kind == "violations" or {"violation_id", "decision_reason_code", "observed"} <= columns:
        cases = _from_violations(frame)
    elif "event_type" in columns or "tool_name" in columns:
        cases = _from_events(frame)
    else:
        raise ValueError("regression_cases needs a frame from thoth_nb.events(), thoth_nb.violations() or "
                         "thoth_nb.approvals()")
    if decisions is not None:
        keep = {normalize_decision(d, "decisions") for d in decisions}
        cases = [c for c in cases if c["expect"] in keep]
    return cases


def _args(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _mode_for(decision: str) -> str:
    """The enforcement mode that reproduces a recorded final decision whose mode the record does not keep:
    a STEP_UP was held in step_up or progressive mode (step_up mode holds the same calls, unless the risk
    score drove it), a BLOCK came from a hard rule or from block mode (block mode blocks both)."""
    return "step_up" if decision == "STEP_UP" else "block"


def _from_violations(frame: Any) -> list[dict[str, Any]]:
    out = []
    for row in frame.sort_values("created_at", kind="stable").to_dict("records"):
        decision = str(row.get("decision") or "")
        if decision not in DECISIONS:
            continue
        out.append({"name": f"{row['tool_name']} {row.get('violation_id') or ''}".strip(),
                    "tool": str(row["tool_name"]), "args": _args(row.get("tool_args")),
                    "agent": str(row.get("agent_id") or "agent"), "expect": decision,
                    "mode": "policy" if row.get("observed") else _mode_for(decision),
                    "note": f"recorded {row.get('created_at')}: {row.get('reason')}"})
    return out


def _from_approvals(frame: Any, approved_expect: str | None) -> list[dict[str, Any]]:
    approved = normalize_decision(approved_expect, "approved_expect") if approved_expect else "STEP_UP"
    out = []
    for row in frame.sort_values("created_at", kind="stable").to_dict("records"):
        status = str(row.get("status") or "")
        out.append({"name": f"{row['tool_name']} {row.get('approval_id') or ''}".strip(),
                    "tool": str(row["tool_name"]), "args": _args(row.get("tool_args")),
                    "agent": str(row.get("agent_id") or "agent"),
                    "expect": approved if status == "approved" else "STEP_UP", "mode": _mode_for("STEP_UP"),
                    "note": f"held: {row.get('reason')}; {status}" + (f" by {row['reviewer']}"
                                                                     if row.get("reviewer") else "")})
    return out


def _from_events(frame: Any) -> list[dict[str, Any]]:
    from thoth_nb.analytics.baseline import load_fields
    from thoth_nb.analytics.replay import _STORE_FIELDS, _recorded, _rule_list, pre_calls

    pd = _pd()
    info = dict(frame.attrs.get("thoth") or {})
    pre = pre_calls(frame, info)
    recorded = _recorded(pd, frame, pre, info)
    if info.get("source") == "store" and len(pre) and "seq" in pre.columns:
        fields = load_fields(pre, info["path"], info["tenant_id"],
                             {k: _STORE_FIELDS[k] for k in ("enforcement_mode", "approved_scope")})
    else:
        fields = pd.DataFrame(index=pre.index, columns=["enforcement_mode", "approved_scope"])
    out = []
    for (index, row), before in zip(pre.iterrows(), recorded["before"], strict=True):
        if not isinstance(before, str) or before not in DECISIONS:
            continue  # a call with no recorded outcome (still running, or its events were lost)
        mode = fields.at[index, "enforcement_mode"]
        scope = fields.at[index, "approved_scope"]
        case: dict[str, Any] = {"name": f"{row['tool_name']} #{row['seq']}" if "seq" in row else str(row["tool_name"]),
                                "tool": str(row["tool_name"]), "args": _args(row.get("tool_args")),
                                "agent": str(row.get("agent_id") or "agent"), "session": str(row["session_id"]),
                                "expect": before}
        if isinstance(mode, str) and mode:
            case["mode"] = "policy" if mode == "observe" else mode
        else:
            case["mode"] = "block"
        if scope is not None and not isinstance(scope, float):
            case["scope"] = _rule_list(scope)
        if "occurred_at" in row and row["occurred_at"] is not None and not pd.isna(row["occurred_at"]):
            case["at"] = row["occurred_at"].isoformat()
        out.append(case)
    return out

