"""Rich displays for what `%thoth` returns: status, explanations, hold records, policies, violations
and sessions. Each has `_repr_html_` for notebooks and a plain `__repr__` for terminals and logs."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from thoth_nb._render import DECISION_COLOURS

__all__ = ["Explanation", "HoldRecord", "PolicyView", "SessionView", "StatusReport", "ViolationView"]

_TABLE = "border-collapse:collapse;font-size:12px"
_TH = "text-align:left;padding:1px 8px 1px 0;color:#57606a;font-weight:600;vertical-align:top"
_TD = "text-align:left;padding:1px 8px 1px 0;vertical-align:top"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _badge(label: str, key: str | None = None) -> str:
    colour = DECISION_COLOURS.get(key or label, "#57606a")
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 6px;font-weight:600;'
            f'font-family:monospace">{_e(label)}</span>')


def _pairs(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th style='{_TH}'>{_e(k)}</th><td style='{_TD}'>{v}</td></tr>" for k, v in rows)
    return f"<table style='{_TABLE}'>{body}</table>"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th style='{_TH}'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{_TD}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{_TABLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class StatusReport:
    """`%thoth status`: agents governed here, the enforcer, queue depth and dropped events."""

    def __init__(self, status: Mapping[str, Any], instrumented: Iterable[Any], *, feed: bool) -> None:
        self.status = dict(status)
        self.instrumented = list(instrumented)
        self.feed = feed

    @property
    def queue_depth(self) -> int:
        return sum(int(e.get("queue_depth") or 0) for e in self.status.get("emitters", []))

    @property
    def dropped(self) -> int:
        return int(self.status.get("dropped_events") or 0)

    def _agents(self) -> list[dict[str, Any]]:
        by_agent = {a["agent_id"]: a for a in self.status.get("agents", [])}
        rows = []
        for item in self.instrumented:
            live = by_agent.get(item.agent_id, {})
            rows.append({"name": item.name or type(item.target).__name__, "agent_id": item.agent_id,
                         "mode": item.mode, "tenant_id": item.options.get("tenant_id", ""),
                         "enforcer": live.get("enforcer", item.options.get("api_url") or "embedded"),
                         "scope": ", ".join(item.options.get("approved_scope") or []), "via": item.source})
        return rows

    def __repr__(self) -> str:
        lines = [f"thoth status: {len(self.instrumented)} object(s) governed by %thoth, feed "
                 f"{'on' if self.feed else 'off'}, queue depth {self.queue_depth}, dropped events {self.dropped}"]
        for row in self._agents():
            lines.append(f"  {row['name']}: agent {row['agent_id']!r} mode {row['mode']} tenant {row['tenant_id']} "
                         f"enforcer {row['enforcer']} scope [{row['scope']}]")
        others = [a for a in self.status.get("agents", [])
                  if a["agent_id"] not in {i.agent_id for i in self.instrumented}]
        if others:
            lines.append(f"  also governed in this process: {', '.join(sorted({a['agent_id'] for a in others}))}")
        for emitter in self.status.get("emitters", []):
            lines.append(f"  events → {emitter.get('sink')}: queued {emitter.get('queue_depth')}, sent "
                         f"{emitter.get('sent')}, dropped {emitter.get('dropped')}, spilled {emitter.get('spilled')}")
        lines.append(f"  THOTH_HOME {self.status.get('thoth_home')}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        agents = _grid(["object", "agent", "mode", "tenant", "enforcer", "approved scope", "via"],
                       [[_e(r["name"]), f"<b>{_e(r['agent_id'])}</b>", _e(r["mode"]), _e(r["tenant_id"]),
                         _e(r["enforcer"]), _e(r["scope"]), _e(r["via"])] for r in self._agents()])
        emitters = _grid(["events to", "queued", "sent", "dropped", "spilled", "last error"],
                         [[_e(e.get("sink")), _e(e.get("queue_depth")), _e(e.get("sent")), _e(e.get("dropped")),
                           _e(e.get("spilled")), _e(e.get("last_error") or "")]
                          for e in self.status.get("emitters", [])])
        summary = (f"<b>thoth</b> · feed {'on' if self.feed else 'off'} · queue depth {self.queue_depth} · "
                   f"dropped events {self.dropped} · <code>{_e(self.status.get('thoth_home'))}</code>")
        return f"<div class='thoth-status'><div>{summary}</div>{agents}{emitters}</div>"


class Explanation:
    """`%thoth explain`: the HumanExplanation of PROTOCOL §6 as a card."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        d = self.data
        from thoth_nb.engine.explain import explanation_rows

        return "\n".join([f"violation {d.get('violation_id')} ({d.get('severity')})",
                          *(f"{k}: {v}" for k, v in explanation_rows(d))])

    def _repr_html_(self) -> str:
        d = self.data
        from thoth_nb.engine.explain import explanation_rows

        rows = [*((k, _e(v)) for k, v in explanation_rows(d)), ("risk", _e(d.get("risk_score"))),
                ("session", f"<code>{_e(d.get('session_id'))}</code>")]
        return (f"<div class='thoth-explain' style='border-left:4px solid {DECISION_COLOURS['BLOCK']};"
                f"padding:4px 8px'><div><b>violation</b> <code>{_e(d.get('violation_id'))}</code> · "
                f"<b>{_e(d.get('tool_name'))}</b></div>{_pairs(rows)}</div>")


class HoldRecord:
    """`%thoth approve|deny`: the resolved hold."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def __repr__(self) -> str:
        r = self.record
        return (f"hold {r.get('approval_id')} ({r.get('tool_name')}): {r.get('status')} by {r.get('reviewer')}"
                + (f" — {r.get('note')}" if r.get("note") else ""))

    def _repr_html_(self) -> str:
        r = self.record
        status = str(r.get("status"))
        key = {"approved": "ALLOW", "denied": "BLOCK", "expired": "BLOCK", "pending": "STEP_UP"}.get(status)
        return (f"<div class='thoth-hold'>{_badge(status, key)} <b>{_e(r.get('tool_name'))}</b> "
                f"<code>{_e(r.get('approval_id'))}</code>" + _pairs([
                    ("reviewer", _e(r.get("reviewer"))), ("note", _e(r.get("note"))),
                    ("arguments", f"<code>{_e(r.get('tool_args'))}</code>"), ("reason held", _e(r.get("reason"))),
                    ("resolved at", _e(r.get("resolved_at")))]) + "</div>")


class PolicyView:
    """`%thoth policy show`."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text

    def __repr__(self) -> str:
        return f"# {self.source}\n{self.text}"

    def _repr_html_(self) -> str:
        return (f"<div class='thoth-policy'><div style='color:#57606a'>{_e(self.source)}</div>"
                f"<pre style='font-size:12px'>{_e(self.text)}</pre></div>")


class ViolationView:
    """One violation record (a row of `thoth_nb.violations()` or a store record) as a card."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        from thoth_nb.notebook.dashboard import what_would_pass

        self.record = dict(record)
        self.would_pass = what_would_pass(self.record)  # under the policy in force

    def __repr__(self) -> str:
        r = self.record
        return (f"{r.get('decision')} {r.get('tool_name')} ({r.get('violation_id')}): {r.get('reason')} "
                f"[risk {r.get('risk_score')}]" + (f"\nwhat would pass: {self.would_pass}" if self.would_pass else ""))

    def _repr_html_(self) -> str:
        r = self.record
        decision = str(r.get("decision"))
        return (f"<div class='thoth-violation' style='border-left:4px solid "
                f"{DECISION_COLOURS.get(decision, '#cf222e')};padding:4px 8px'>{_badge(decision)} "
                f"<b>{_e(r.get('tool_name'))}</b> · {_e(r.get('reason'))}" + _pairs([
                    ("violation", f"<code>{_e(r.get('violation_id'))}</code>"), ("agent", _e(r.get("agent_id"))),
                    ("session", f"<code>{_e(r.get('session_id'))}</code>"), ("risk", _e(r.get("risk_score"))),
                    ("rules", _e(", ".join(r.get("matched_rule_ids") or []))),
                    ("arguments", f"<code>{_e(r.get('tool_args'))}</code>"),
                    *([("what would pass", _e(self.would_pass))] if self.would_pass else []),
                    ("explain", f"<code>%thoth explain {_e(r.get('violation_id'))}</code>")]) + "</div>")


class SessionView:
    """One session (a row of `thoth_nb.sessions()`) with its calls counted by decision."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)

    def __repr__(self) -> str:
        r = self.record
        return (f"session {r.get('session_id')} agent {r.get('agent_id')} user {r.get('user_id')}: "
                f"{r.get('tool_calls')} calls, {r.get('blocked')} blocked, {r.get('stepped_up')} held, "
                f"{r.get('violations')} violations ({r.get('first_seen')} → {r.get('last_seen')})")

    def _repr_html_(self) -> str:
        r = self.record
        badges = " ".join(f"{_badge(f'{r.get(k, 0)} {label}', key)}" for k, label, key in (
            ("tool_calls", "calls", "ALLOW"), ("blocked", "blocked", "BLOCK"), ("stepped_up", "held", "STEP_UP")))
        return (f"<div class='thoth-session'><b>session</b> <code>{_e(r.get('session_id'))}</code> · agent "
                f"<b>{_e(r.get('agent_id'))}</b> · user {_e(r.get('user_id'))} {badges}"
                + _pairs([("first seen", _e(r.get("first_seen"))), ("last seen", _e(r.get("last_seen"))),
                          ("violations", _e(r.get("violations")))]) + "</div>")
