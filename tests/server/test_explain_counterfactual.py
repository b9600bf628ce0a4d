"""POST /v1/explain on a live server says which rule and condition decided and what would have passed."""

from __future__ import annotations

from typing import Any


def test_explain_names_the_condition_and_what_would_pass(live: Any, body: Any) -> None:
    agent = live.client("acme", "agent")
    held = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "bob", "amount": 500})).json()
    assert held["decision"] == "STEP_UP"
    data = agent.post("/v1/explain", json={**body(tool_name="transfer"), "violation_id": held["violation_id"],
                                           "decision": "STEP_UP"}).json()
    assert data["decided_by"] == {"kind": "rule", "rule_id": "big-transfer", "decision": "STEP_UP",
                                  "condition": "amount gt 100"}
    [failed] = data["failed_conditions"]
    assert failed["field"] == "amount" and failed["actual"] == 500
    assert "`amount` = 500 > 100; `amount` ≤ 100 would pass" in failed["text"]
    assert data["what_to_do_next"].startswith("What would pass: rule big-transfer (STEP_UP)")
    scoped = agent.post("/v1/enforce", json=body(tool_name="shell", approved_scope=["lookup"])).json()
    explained = agent.post("/v1/explain", json={**body(), "violation_id": scoped["violation_id"]}).json()
    assert "tool 'shell' is not in the approved scope [lookup]" in explained["what_would_pass"]
