"""D9 against a live server: keys, roles, and tenants that never see each other."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import httpx
import pytest

from thoth_nb._exceptions import ThothConfigError
from thoth_nb.server import BackgroundServer, ServerSettings

ROLES = ("agent", "reviewer", "admin")


def _requests(body: Any) -> list[tuple[str, str, Any, set[str]]]:
    """(method, path, json, roles allowed) for every authenticated endpoint."""
    return [
        ("POST", "/v1/enforce", body(), {"agent", "admin"}),
        ("GET", "/v1/enforce/hold/hold_x", None, {"agent", "reviewer", "admin"}),
        ("POST", "/v1/events/batch", [], {"agent", "admin"}),
        ("POST", "/v1/explain", {"violation_id": "vio_x"}, {"agent", "reviewer", "admin"}),
        ("POST", "/acme/thoth/tool-inventory", {"agent_id": "a", "tools": []}, {"agent", "admin"}),
        ("GET", "/v1/inventory", None, {"reviewer", "admin"}),
        ("GET", "/v1/events", None, {"reviewer", "admin"}),
        ("GET", "/v1/sessions", None, {"reviewer", "admin"}),
        ("GET", "/v1/sessions/s", None, {"reviewer", "admin"}),
        ("GET", "/v1/violations", None, {"reviewer", "admin"}),
        ("GET", "/v1/approvals", None, {"reviewer", "admin"}),
        ("GET", "/v1/approvals/apr_x", None, {"reviewer", "admin"}),
        ("POST", "/v1/approvals/apr_x/resolve", {"decision": "approve"}, {"reviewer", "admin"}),
        ("GET", "/v1/policies", None, {"reviewer", "admin"}),
        ("GET", "/v1/policies/versions", None, {"reviewer", "admin"}),
        ("PUT", "/v1/policies", {"policy": "version: 1"}, {"admin"}),
        ("GET", "/v1/keys", None, {"admin"}),
        ("POST", "/v1/keys", {"role": "nobody"}, {"admin"}),
        ("DELETE", "/v1/keys/key_x", None, {"admin"}),
    ]


def test_every_endpoint_checks_key_and_role(live: Any, body: Any) -> None:
    anon = live.client(None)
    clients = {role: live.client("acme", role) for role in ROLES}
    for method, path, payload, allowed in _requests(body):
        assert anon.request(method, path, json=payload).status_code == 401, (method, path)
        wrong = anon.request(method, path, json=payload, headers={"x-api-key": "thk_not_a_key"})
        assert wrong.status_code == 401, (method, path)
        for role in ROLES:
            status = clients[role].request(method, path, json=payload).status_code
            if role in allowed:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)


def test_key_headers(live: Any, body: Any) -> None:
    key = live.key("acme", "agent")
    other = live.key("acme", "admin")
    anon = live.client(None)
    assert anon.post("/v1/enforce", json=body(), headers={"x-api-key": key}).status_code == 200
    assert anon.post("/v1/enforce", json=body(), headers={"Authorization": f"Bearer {key}"}).status_code == 200
    both = {"Authorization": f"Bearer {key}", "x-api-key": key}
    assert anon.post("/v1/enforce", json=body(), headers=both).status_code == 200
    r = anon.post("/v1/enforce", json=body(), headers={"Authorization": f"Bearer {key}", "x-api-key": other})
    assert r.status_code == 401 and "different keys" in r.json()["message"]
    r = anon.post("/v1/enforce", json=body(), headers={"Authorization": f"Basic {key}"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_keys_api_creates_and_revokes_within_the_tenant(live: Any, body: Any) -> None:
    admin = live.client("acme", "admin")
    created = admin.post("/v1/keys", json={"role": "agent", "name": "ci"})
    assert created.status_code == 201
    secret = created.json()["api_key"]
    assert secret.startswith("thk_") and created.json()["tenant_id"] == "acme"
    listed = admin.get("/v1/keys").json()["items"]
    assert all("key_hash" not in k and "api_key" not in k for k in listed)
    assert {k["tenant_id"] for k in listed} == {"acme"}
    fresh = httpx.Client(base_url=live.url, headers={"x-api-key": secret}, trust_env=False)
    try:
        assert fresh.post("/v1/enforce", json=body()).status_code == 200
        assert admin.delete(f"/v1/keys/{created.json()['key_id']}").json()["revoked"] is True
        assert fresh.post("/v1/enforce", json=body()).status_code == 401
    finally:
        fresh.close()
    assert admin.post("/v1/keys", json={"role": "agent", "tenant_id": "globex"}).status_code == 403


def test_tenants_never_see_or_touch_each_other(live: Any, body: Any) -> None:
    a_agent, a_admin = live.client("acme", "agent"), live.client("acme", "admin")
    b_agent, b_admin = live.client("globex", "agent"), live.client("globex", "admin")

    # tenant A: a block, a hold, events, inventory, a policy version
    blocked = a_agent.post("/v1/enforce", json=body(tool_name="drop_table", session_id="a-sess")).json()
    held = a_agent.post("/v1/enforce", json=body(tool_name="transfer", tool_args={"amount": 500},
                                                 session_id="a-sess")).json()
    a_event = {"event_id": f"acme:{uuid.uuid4()}", "tenant_id": "acme", "session_id": "a-sess",
               "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-06-21T20:52:13Z"}
    assert a_agent.post("/v1/events/batch", json=[a_event]).json()["accepted"] == 1
    assert a_agent.post("/acme/thoth/tool-inventory", json={"agent_id": "a", "tools": [{"name": "x"}]}).status_code \
        == 202
    etag = a_admin.get("/v1/policies").json()["etag"]
    put = a_admin.put("/v1/policies", json={"policy": "version: 1\ndefault: block\n"}, headers={"If-Match": etag})
    assert put.status_code == 200
    a_key_id = next(k["key_id"] for k in a_admin.get("/v1/keys").json()["items"] if k["role"] == "agent")

    # tenant B reads nothing of A
    for path in ("/v1/events", "/v1/sessions", "/v1/violations", "/v1/approvals?status=all", "/v1/inventory"):
        assert b_admin.get(path).json()["items"] == [], path
    for path in ("/v1/events", "/v1/sessions", "/v1/violations", "/v1/approvals", "/v1/policies", "/v1/inventory"):
        assert b_admin.get(path, params={"tenant_id": "acme"}).status_code == 403, path
        assert b_admin.get(path, params={"tenant_id": "globex"}).status_code == 200, path
    assert b_admin.get("/v1/sessions/a-sess").status_code == 404
    assert b_admin.get(f"/v1/approvals/{held['hold_token']}").status_code == 404
    assert b_agent.get(f"/v1/enforce/hold/{held['hold_token']}").status_code == 404
    assert b_agent.post("/v1/explain", json={"violation_id": blocked["violation_id"]}).status_code == 404
    assert b_agent.post("/v1/explain", json={"violation_id": blocked["violation_id"],
                                             "tenant_id": "acme"}).status_code == 403
    policy_b = b_admin.get("/v1/policies").json()
    assert policy_b["version"] == 0 and "default: block" not in policy_b["policy"]
    assert {k["tenant_id"] for k in b_admin.get("/v1/keys").json()["items"]} == {"globex"}

    # ... and changes nothing of A
    for key in (held["hold_token"], held_approval(a_admin, held)):
        r = b_admin.post(f"/v1/approvals/{key}/resolve", json={"decision": "approve", "reviewer": "mallory"})
        assert r.status_code == 404
    assert b_agent.post("/v1/enforce", json=body(tenant="acme")).status_code == 403
    assert b_agent.post("/v1/events/batch", json=[a_event]).status_code == 403
    stolen = {**a_event, "tenant_id": "globex"}  # A's event id under B's tenant: refused, not a duplicate
    out = b_agent.post("/v1/events/batch", json=[stolen]).json()
    assert out["accepted"] == 0 and out["duplicates"] == 0 and out["rejected"][0]["index"] == 0
    assert b_agent.post("/acme/thoth/tool-inventory", json={"agent_id": "a", "tools": []}).status_code == 403
    assert b_admin.delete(f"/v1/keys/{a_key_id}").status_code == 404
    assert b_admin.put("/v1/policies", json={"policy": "version: 1\n"}, headers={"If-Match": "*"}).status_code == 200

    # A is exactly as it was
    assert a_agent.get(f"/v1/enforce/hold/{held['hold_token']}").json()["resolved"] is False
    assert len(a_admin.get("/v1/events").json()["items"]) == 1
    assert len(a_admin.get("/v1/violations").json()["items"]) == 2
    assert a_admin.get("/v1/policies").json()["version"] == 1
    strict = {"enforcement_mode": "block", "session_id": "fresh"}
    assert a_agent.post("/v1/enforce", json=body(**strict)).json()["decision"] == "BLOCK"  # A's policy applies
    assert b_agent.post("/v1/enforce", json=body(tenant="globex", **strict)).json()["decision"] == "ALLOW"
    assert live.client("acme", "agent").post("/v1/enforce", json=body(session_id="x")).status_code == 200


def held_approval(client: httpx.Client, held: dict[str, Any]) -> str:
    return str(client.get(f"/v1/approvals/{held['hold_token']}").json()["approval_id"])


def test_no_auth_serves_one_local_tenant_on_loopback_only(live_factory: Any, body: Any, tmp_path: Any) -> None:
    live = live_factory(ServerSettings(no_auth=True, local_tenant="local"))
    anon = live.client(None)
    assert anon.post("/v1/enforce", json=body(tenant="local")).json()["decision"] == "ALLOW"
    r = anon.post("/v1/enforce", json=body(tenant="acme"))
    assert r.status_code == 403 and "tenant" in r.json()["message"]
    assert anon.get("/v1/approvals").status_code == 200
    assert anon.get("/readyz").json()["auth"] is False

    with pytest.raises(ThothConfigError, match="loopback"):
        BackgroundServer(tmp_path / "x.db", host="0.0.0.0", settings=ServerSettings(no_auth=True))

    from thoth_nb.cli_server import add_server_commands

    parser = argparse.ArgumentParser()
    add_server_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--no-auth", "--host", "0.0.0.0", "--db", str(tmp_path / "y.db")])
    assert args.fn(args) == 2
    assert not (tmp_path / "y.db").exists()  # refused before touching anything
