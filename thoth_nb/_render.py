"""HTML for rich displays of decisions and violations (notebooks render these; nbconvert keeps them)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thoth_nb._exceptions import ThothPolicyViolation
    from thoth_nb._models import EnforcementDecision

__all__ = ["DECISION_COLOURS", "decision_html", "violation_html"]

DECISION_COLOURS = {
    "ALLOW": "#1a7f37",
    "MODIFY": "#0969da",
    "STEP_UP": "#9a6700",
    "DEFER": "#8250df",
    "BLOCK": "#cf222e",
}


def _badge(decision: str) -> str:
    colour = DECISION_COLOURS.get(decision, "#57606a")
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;padding:1px 6px;'
            f'font-weight:600;font-family:monospace">{html.escape(decision)}</span>')


def decision_html(decision: EnforcementDecision) -> str:
    rows = [
        ("reason", decision.reason),
        ("code", decision.decision_reason_code),
        ("risk", f"{decision.risk_score:g}"),
        ("rules", ", ".join(decision.matched_rule_ids)),
        ("violation", decision.violation_id or ""),
        ("hold", decision.hold_token or ""),
    ]
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:8px'>{k}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows if v
    )
    return f"<div class='thoth-decision'>{_badge(decision.decision.value)}<table>{body}</table></div>"


def violation_html(error: ThothPolicyViolation) -> str:
    decision = error.decision.decision.value if error.decision is not None else "BLOCK"
    parts = [
        f"<div class='thoth-violation' style='border-left:4px solid {DECISION_COLOURS.get(decision, '#cf222e')};"
        "padding:4px 8px'>",
        f"{_badge(decision)} <b>{html.escape(error.tool_name)}</b> did not run",
        f"<div>{html.escape(error.reason)}</div>",
    ]
    explained = error.explain() if error.explainer is not None else None  # asked once, kept on the error
    if explained and explained.get("what_would_pass"):
        parts.append(f"<div>what would pass: {html.escape(str(explained['what_would_pass']))}</div>")
    if error.violation_id:
        parts.append(f"<div style='color:#57606a'>violation <code>{html.escape(error.violation_id)}</code>"
                     f" — <code>%thoth explain {html.escape(error.violation_id)}</code></div>")
    parts.append("</div>")
    return "".join(parts)
