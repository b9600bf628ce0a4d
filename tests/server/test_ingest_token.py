"""`X-Thoth-Event-Ingest-Token` (PROTOCOL §2, §9): a server configured with an event ingest token takes
events only with it (beside the API key); a server without one ignores the header."""

from __future__ import annotations

import uuid
from typing import Any

import thoth_nb
from thoth_nb.server import ServerSettings


def _event(tenant: str = "acme", session: str = "s-token") -> dict[str, Any]:
    return {"event_id": f"{tenant}:{uuid.uuid4()}", "tenant_id": tenant, "session_id": session, "user_id": "u1",
            "agent_id": "agent-1", "tool_name": "lookup", "event_type": "TOOL_CALL_PRE",
            "occurred_at": "2026-01-01T00:00:00Z"}


def _stored(live: Any, session: str) -> int:
    reviewer = live.client("acme", "reviewer")
    return len(reviewer.get("/v1/events", params={"session_id": session}).json()["items"])


def test_configured_token_is_required_on_ingest_only(live_factory: Any, body: Any) -> None:
    live = live_factory(ServerSettings(event_ingest_token="ing-secret"))
    agent = live.client("acme", "agent")
    missing = agent.post("/v1/events/batch", json={"events": [_event()]})
    assert missing.status_code == 401
    assert missing.json()["field"] == "X-Thoth-Event-Ingest-Token"
    assert "X-Thoth-Event-Ingest-Token" in missing.json()["message"]
    wrong = agent.post("/v1/events/batch", json=[_event()], headers={"X-Thoth-Event-Ingest-Token": "ing-secreT"})
    assert wrong.status_code == 401 and "does not match" in wrong.json()["message"]
    assert _stored(live, "s-token") == 0
    ok = agent.post("/v1/events/batch", json=[_event()], headers={"X-Thoth-Event-Ingest-Token": "ing-secret"})
    assert ok.status_code == 202 and ok.json()["accepted"] == 1
    assert _stored(live, "s-token") == 1
    # the token does not replace the key: no key is still 401, a reviewer key still 403
    token = {"X-Thoth-Event-Ingest-Token": "ing-secret"}
    assert live.client(None).post("/v1/events/batch", json=[_event()], headers=token).status_code == 401
    assert live.client("acme", "reviewer").post("/v1/events/batch", json=[_event()], headers=token).status_code == 403
    # other routes do not ask for it
    assert agent.post("/v1/enforce", json=body()).json()["decision"] == "ALLOW"


def test_sdk_sends_the_token_and_its_events_land(live_factory: Any) -> None:
    live = live_factory(ServerSettings(event_ingest_token="ing-secret"))
    session = str(uuid.uuid4())

    def lookup(q: str) -> str:
        return f"found {q}"

    governed = thoth_nb.instrument(lookup, api_url=live.url, api_key=live.key("acme", "agent"),
                                   event_ingest_token="ing-secret", agent_id="agent-1", tenant_id="acme",
                                   approved_scope=["lookup"], session_id=session, tool_inventory=False)
    assert governed(q="x") == "found x"
    assert thoth_nb.flush(timeout=10)
    assert _stored(live, session) == 2


def test_without_a_configured_token_the_header_is_ignored(live: Any) -> None:
    agent = live.client("acme", "agent")
    for headers in ({}, {"X-Thoth-Event-Ingest-Token": "anything"}):
        reply = agent.post("/v1/events/batch", json=[_event(session="s-free")], headers=headers)
        assert reply.status_code == 202 and reply.json()["accepted"] == 1
    assert _stored(live, "s-free") == 2
