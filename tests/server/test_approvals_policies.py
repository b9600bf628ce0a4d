"""§11 additions against a live server: approvals (bound holds), policies (versioned), sessions, violations."""

from __future__ import annotations

import time
from typing import Any

THOTH_UA = {"User-Agent": "thoth-nb/0.1.0"}


def _hold(client: Any, body: Any, amount: int, **over: Any) -> dict[str, Any]:
    reply: dict[str, Any] = client.post(
        "/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "bob", "amount": amount}, **over)
    ).json()
    assert reply["decision"] == "STEP_UP", reply
    return reply


def test_approve_records_reviewer_and_note_and_cannot_repeat(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    held = _hold(agent, body, 500)
    pending = reviewer.get("/v1/approvals").json()["items"]
    assert len(pending) == 1
    item = pending[0]
    assert item["tool_name"] == "transfer" and item["tool_args"] == {"to": "bob", "amount": 500}
    assert item["reason"] == "transfers over 100 need a human" and item["agent_id"] == "agent-1"
    assert item["hold_token"] == held["hold_token"] and item["status"] == "pending"

    r = reviewer.post(f"/v1/approvals/{item['approval_id']}/resolve",
                      json={"decision": "approve", "reviewer": "ann", "note": "known payee"})
    assert r.status_code == 200
    record = r.json()
    assert record["status"] == "approved" and record["reviewer"] == "ann" and record["note"] == "known payee"
    assert record["resolved_at"]
    reply = agent.get(f"/v1/enforce/hold/{held['hold_token']}").json()
    assert reply["resolved"] is True and reply["decision"] == reply["resolution"] == "ALLOW"

    again = reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve", json={"decision": "deny"})
    assert again.status_code == 409 and again.json()["record"]["status"] == "approved"
    assert agent.get(f"/v1/enforce/hold/{held['hold_token']}").json()["decision"] == "ALLOW"  # unchanged
    assert reviewer.get("/v1/approvals").json()["items"] == []
    assert [a["status"] for a in reviewer.get("/v1/approvals", params={"status": "approved"}).json()["items"]] \
        == ["approved"]


def test_deny_and_bad_resolutions(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    held = _hold(agent, body, 600)
    token = held["hold_token"]
    for bad, field in (({"decision": "maybe"}, "decision"), ({"decision": "approve", "scope": "forever"}, "scope"),
                       ({"decision": "deny", "modified_args": {"amount": 1}}, "modified_args"),
                       ({"decision": "approve", "modified_args": [1]}, "modified_args"),
                       ({"decision": "approve", "note": 5}, "note")):
        r = reviewer.post(f"/v1/approvals/{token}/resolve", json=bad)
        assert r.status_code == 422 and r.json()["field"] == field, bad
    # a hold raised by a non-thoth_nb client cannot be answered with MODIFY (go would poll forever)
    r = reviewer.post(f"/v1/approvals/{token}/resolve", json={"decision": "approve", "modified_args": {"amount": 1}})
    assert r.status_code == 422 and "modified" in r.json()["message"]
    assert agent.get(f"/v1/enforce/hold/{token}").json()["resolved"] is False  # none of that changed it
    assert reviewer.post("/v1/approvals/apr_nope/resolve", json={"decision": "deny"}).status_code == 404

    r = reviewer.post(f"/v1/approvals/{token}/resolve", json={"decision": "deny", "note": "too much"})
    assert r.status_code == 200 and r.json()["status"] == "denied" and r.json()["reviewer"] == "acme-reviewer"
    reply = agent.get(f"/v1/enforce/hold/{token}").json()
    assert reply["decision"] == "BLOCK" and reply["decision_reason_code"] == "step_up_denied"
    assert "too much" in reply["reason"]


def test_modified_args_for_thoth_nb_clients(live: Any, body: Any) -> None:
    agent = live.client("acme", "agent", **THOTH_UA)
    reviewer = live.client("acme", "reviewer")
    held = _hold(agent, body, 700)
    r = reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve",
                      json={"decision": "approve", "reviewer": "ann", "modified_args": {"to": "bob", "amount": 100}})
    assert r.status_code == 200 and r.json()["modified_args"] == {"to": "bob", "amount": 100}
    reply = agent.get(f"/v1/enforce/hold/{held['hold_token']}").json()
    assert reply["decision"] == "MODIFY" and reply["resolution"] == "ALLOW"
    assert reply["modified_tool_args"] == {"to": "bob", "amount": 100}


def test_holds_are_bound_to_tool_and_arguments(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    x = _hold(agent, body, 500, session_id="bind")
    y = _hold(agent, body, 900, session_id="bind")
    assert x["hold_token"] != y["hold_token"]
    r = reviewer.post(f"/v1/approvals/{x['hold_token']}/resolve", json={"decision": "approve", "scope": "session"})
    assert r.status_code == 200
    assert agent.get(f"/v1/enforce/hold/{x['hold_token']}").json()["decision"] == "ALLOW"
    assert agent.get(f"/v1/enforce/hold/{y['hold_token']}").json()["resolved"] is False  # still waiting
    # the session grant covers exactly the approved tool and arguments
    same = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "bob", "amount": 500},
                                               session_id="bind")).json()
    assert same["decision"] == "ALLOW" and same["decision_reason_code"] == "step_up_granted"
    other = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "eve", "amount": 500},
                                                session_id="bind")).json()
    assert other["decision"] == "STEP_UP"
    elsewhere = agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"to": "bob", "amount": 500},
                                                    session_id="another")).json()
    assert elsewhere["decision"] == "STEP_UP"


def test_expired_hold_blocks_and_cannot_be_resolved(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    held = _hold(agent, body, 500, step_up_timeout_seconds=0.3)
    started = time.monotonic()
    reply = agent.get(f"/v1/enforce/hold/{held['hold_token']}", params={"wait": "5"}).json()
    assert time.monotonic() - started < 1.5
    assert reply["resolved"] is True and reply["decision"] == "BLOCK"
    assert reply["decision_reason_code"] == "step_up_timeout"
    r = reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve", json={"decision": "approve"})
    assert r.status_code == 409 and r.json()["record"]["status"] == "expired"
    assert len(reviewer.get("/v1/approvals", params={"status": "expired"}).json()["items"]) == 1


def test_approvals_list_pages_and_filters(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    tokens = [_hold(agent, body, 200 + i)["hold_token"] for i in range(5)]
    reviewer.post(f"/v1/approvals/{tokens[0]}/resolve", json={"decision": "deny"})
    seen, cursor = [], None
    while True:
        page = reviewer.get("/v1/approvals", params={"status": "all", "limit": 2, **({"cursor": cursor}
                                                                                    if cursor else {})}).json()
        seen += [a["hold_token"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == tokens
    assert len(reviewer.get("/v1/approvals").json()["items"]) == 4
    assert [a["hold_token"] for a in reviewer.get("/v1/approvals", params={"status": "denied"}).json()["items"]] \
        == tokens[:1]
    assert reviewer.get("/v1/approvals", params={"status": "weird"}).status_code == 422


def test_policies_get_put_versions_and_the_engine_follows(live: Any, body: Any) -> None:
    admin, agent = live.client("acme", "admin"), live.client("acme", "agent")
    current = admin.get("/v1/policies")
    assert current.status_code == 200
    v0 = current.json()
    assert v0["version"] == 0 and "big-transfer" in v0["policy"] and current.headers["etag"] == f'"{v0["etag"]}"'

    strict = "version: 1\ndefault: allow\nrules:\n  - id: no-lookup\n    tool: lookup\n    decision: block\n"
    assert admin.put("/v1/policies", json={"policy": strict}).status_code == 428
    stale = admin.put("/v1/policies", json={"policy": strict}, headers={"If-Match": '"abc"'})
    assert stale.status_code == 412 and stale.json()["etag"] == v0["etag"]
    broken = admin.put("/v1/policies", json={"policy": "version: 1\nrules:\n  - tool: x\n    decision: maybe\n"},
                       headers={"If-Match": v0["etag"]})
    assert broken.status_code == 422 and "policy:4 (rules.0.decision)" in broken.json()["message"]
    assert admin.get("/v1/policies").json()["version"] == 0  # nothing stored by the failures

    ok = admin.put("/v1/policies", json={"policy": strict}, headers={"If-Match": f'"{v0["etag"]}"'})
    assert ok.status_code == 200 and ok.json()["version"] == 1
    decided = agent.post("/v1/enforce", json=body(enforcement_mode="block")).json()
    assert decided["decision"] == "BLOCK" and decided["matched_rule_ids"] == ["no-lookup"]

    again = admin.put("/v1/policies", json={"policy": strict}, headers={"If-Match": v0["etag"]})
    assert again.status_code == 412
    relaxed = "version: 1\ndefault: allow\n"
    raw = admin.put("/v1/policies", content=relaxed.encode(),
                    headers={"If-Match": ok.json()["etag"], "Content-Type": "application/yaml"})
    assert raw.status_code == 200 and raw.json()["version"] == 2
    assert agent.post("/v1/enforce", json=body(enforcement_mode="block")).json()["decision"] == "ALLOW"
    versions = admin.get("/v1/policies/versions").json()["items"]
    assert [v["version"] for v in versions] == [2, 1] and versions[1]["created_by"] == "acme-admin"


def test_sessions_and_violations_views(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    blocked = agent.post("/v1/enforce", json=body(tool_name="drop_table", tool_args={"name": "users"},
                                                  session_id="s-view")).json()
    _hold(agent, body, 900, session_id="s-view")
    events = [
        {"event_id": f"acme:e{i}", "tenant_id": "acme", "session_id": "s-view", "agent_id": "agent-1",
         "user_id": "u1", "tool_name": tool, "event_type": kind, "occurred_at": f"2026-06-21T20:00:0{i}Z"}
        for i, (tool, kind) in enumerate([("lookup", "TOOL_CALL_PRE"), ("lookup", "TOOL_CALL_POST"),
                                          ("drop_table", "TOOL_CALL_PRE"), ("drop_table", "TOOL_CALL_BLOCK")])
    ]
    assert agent.post("/v1/events/batch", json={"events": events}).json()["accepted"] == 4

    sessions = reviewer.get("/v1/sessions").json()["items"]
    assert len(sessions) == 1
    s = sessions[0]
    assert (s["session_id"], s["agent_id"], s["tool_calls"], s["blocked"], s["stepped_up"], s["violations"]) == (
        "s-view", "agent-1", 2, 1, 1, 2)
    assert s["first_seen"] == "2026-06-21T20:00:00.000000Z" and s["last_seen"] == "2026-06-21T20:00:03.000000Z"
    one = reviewer.get("/v1/sessions/s-view").json()
    assert one["violations"] == 2 and [e["event_id"] for e in one["events"]] == [e["event_id"] for e in events]
    assert reviewer.get("/v1/sessions/nope").status_code == 404

    violations = reviewer.get("/v1/violations", params={"session_id": "s-view"}).json()["items"]
    assert {v["decision"] for v in violations} == {"BLOCK", "STEP_UP"}
    vio = next(v for v in violations if v["violation_id"] == blocked["violation_id"])
    assert vio["tool_name"] == "drop_table" and vio["tool_args"] == {"name": "users"}
    assert vio["reason"] == "dropping tables is forbidden" and vio["risk_score"] == 95.0
    assert "request" not in vio
    page = reviewer.get("/v1/violations", params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = reviewer.get("/v1/violations", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert rest["items"][0]["violation_id"] != page["items"][0]["violation_id"] and rest["next_cursor"] is None


def test_python_and_cli_approvals_talk_to_the_server(live: Any, body: Any) -> None:
    """`thoth_nb.holds/approve/deny(api_url=...)` (and so `thoth-nb approve --api-url`) use these endpoints."""
    import pytest

    import thoth_nb
    from thoth_nb._exceptions import ThothConfigError

    agent = live.client("acme", "agent")
    first, second = _hold(agent, body, 500), _hold(agent, body, 600)
    options = {"api_url": live.url, "api_key": live.key("acme", "reviewer")}
    listed = thoth_nb.holds(**options)
    assert [h["hold_token"] for h in listed] == [first["hold_token"], second["hold_token"]]
    record = thoth_nb.approve(listed[0]["approval_id"], reviewer="ann", note="ok", **options)
    assert record["status"] == "approved" and record["reviewer"] == "ann"
    with pytest.raises(RuntimeError, match="already"):
        thoth_nb.deny(listed[0]["approval_id"], **options)
    with pytest.raises(LookupError):
        thoth_nb.approve("apr_missing", **options)
    with pytest.raises(ThothConfigError):
        thoth_nb.deny(second["hold_token"], api_url=live.url, api_key=live.key("acme", "agent"))
    assert thoth_nb.deny(second["hold_token"], **options)["status"] == "denied"
    assert [h["status"] for h in thoth_nb.holds("all", **options)] == ["approved", "denied"]


def test_the_waiting_client_can_cancel_its_own_hold(live: Any, body: Any) -> None:
    agent, reviewer = live.client("acme", "agent"), live.client("acme", "reviewer")
    held = _hold(agent, body, 800)
    token = held["hold_token"]
    approval_id = reviewer.get(f"/v1/approvals/{token}").json()["approval_id"]
    assert agent.post(f"/v1/enforce/hold/{approval_id}/cancel").status_code == 404  # the token, not the id
    assert live.client("globex", "agent").post(f"/v1/enforce/hold/{token}/cancel").status_code == 404
    r = agent.post(f"/v1/enforce/hold/{token}/cancel", json={"reason": "kernel interrupted"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["note"], r.json()["reviewer"]) == ("denied", "kernel interrupted",
                                                                           "acme-agent (client)")
    assert agent.post(f"/v1/enforce/hold/{token}/cancel").status_code == 409
    assert reviewer.post(f"/v1/approvals/{token}/resolve", json={"decision": "approve"}).status_code == 409
    assert reviewer.get("/v1/approvals").json()["items"] == []  # gone from the queue
