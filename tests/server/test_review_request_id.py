"""A `request_id` dedupes a caller's retry of one call, never a different call that reuses the id."""

from __future__ import annotations

from typing import Any


def test_a_reused_request_id_on_another_call_is_decided_afresh(live: Any, body: Any) -> None:
    c = live.client("acme", "agent")
    allowed = c.post("/v1/enforce", json=body(request_id="rid-1")).json()
    assert allowed["decision"] == "ALLOW"
    # a careless client sends the same id for a hard-blocked tool: it must not get the cached ALLOW
    blocked = c.post("/v1/enforce", json=body(request_id="rid-1", tool_name="drop_table")).json()
    assert blocked["decision"] == "BLOCK", blocked
    # ... nor for other arguments of a tool that steps up on them
    held = c.post("/v1/enforce", json=body(request_id="rid-2", tool_name="transfer", tool_args={"amount": 5}))
    assert held.json()["decision"] == "ALLOW"
    again = c.post("/v1/enforce", json=body(request_id="rid-2", tool_name="transfer", tool_args={"amount": 500}))
    assert again.json()["decision"] == "STEP_UP", again.json()
    # a true retry (the same body) still gets the first decision: one hold, not two
    retry = c.post("/v1/enforce", json=body(request_id="rid-2", tool_name="transfer", tool_args={"amount": 500}))
    assert retry.json()["hold_token"] == again.json()["hold_token"]
    reviewer = live.client("acme", "reviewer")
    assert len(reviewer.get("/v1/approvals").json()["items"]) == 1
