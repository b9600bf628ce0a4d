"""D9 under hostile input: tenant isolation as a property (hypothesis), roles on every route of the OpenAPI
schema, keys hashed / compared in constant time / never logged / revoked at once, and holds that cannot be
resolved twice or after they expired."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _faults import POLICY

pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server import BackgroundServer, ServerSettings

pytestmark = pytest.mark.timeout(180)

ROLES = ("agent", "reviewer", "admin")
#: every operation of the OpenAPI schema and the roles that may call it; a new route must be added here
EXPECTED_ROLES: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/enforce"): {"agent", "admin"},
    ("GET", "/v1/enforce/hold/{hold_token}"): {"agent", "reviewer", "admin"},
    ("POST", "/v1/enforce/hold/{hold_token}/cancel"): {"agent", "reviewer", "admin"},
    ("POST", "/v1/events/batch"): {"agent", "admin"},
    ("POST", "/v1/explain"): {"agent", "reviewer", "admin"},
    ("POST", "/{tenant_id}/thoth/tool-inventory"): {"agent", "admin"},
    ("GET", "/v1/inventory"): {"reviewer", "admin"},
    ("GET", "/v1/events"): {"reviewer", "admin"},
    ("GET", "/v1/sessions"): {"reviewer", "admin"},
    ("GET", "/v1/sessions/{session_id}"): {"reviewer", "admin"},
    ("GET", "/v1/violations"): {"reviewer", "admin"},
    ("GET", "/v1/analytics/summary"): {"reviewer", "admin"},
    ("GET", "/v1/analytics/timeseries"): {"reviewer", "admin"},
    ("GET", "/v1/analytics/drift"): {"reviewer", "admin"},
    ("GET", "/v1/approvals"): {"reviewer", "admin"},
    ("GET", "/v1/approvals/{approval_id}"): {"reviewer", "admin"},
    ("POST", "/v1/approvals/{approval_id}/resolve"): {"reviewer", "admin"},
    ("GET", "/v1/policies"): {"reviewer", "admin"},
    ("PUT", "/v1/policies"): {"admin"},
    ("GET", "/v1/policies/versions"): {"reviewer", "admin"},
    ("GET", "/v1/keys"): {"admin"},
    ("POST", "/v1/keys"): {"admin"},
    ("DELETE", "/v1/keys/{key_id}"): {"admin"},
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    srv = BackgroundServer(tmp_path / "server.db", policy=tmp_path / "policy.yaml").start()
    try:
        yield srv
    finally:
        srv.stop()


def _keys(srv: BackgroundServer, tenant: str) -> dict[str, tuple[str, str]]:
    """role -> (key_id, secret) for a tenant, created on the server's own store."""
    assert srv.store is not None
    out = {}
    for role in ROLES:
        record, secret = srv.store.create_api_key(tenant, role, f"{tenant}-{role}")
        out[role] = (record["key_id"], secret)
    return out


def _client(srv: BackgroundServer, secret: str | None, **headers: str) -> httpx.Client:
    if secret:
        headers.setdefault("x-api-key", secret)
    return httpx.Client(base_url=srv.url, headers=headers, timeout=10, trust_env=False)


def _enforce(tenant: str, session: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": "agent-1", "tenant_id": tenant, "user_id": "u", "tool_name": tool, "session_id": session,
            "session_tool_calls": [], "approved_scope": ["lookup", "transfer", "drop_table"],
            "enforcement_mode": "step_up", "environment": "test", "enforcement_trace_id": session,
            "tool_args": args}


# -- tenant isolation as a property -----------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
tool_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=24)
event_types = st.sampled_from(["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_BLOCK", "LLM_INVOCATION"])
batches = st.lists(st.tuples(tool_names, event_types, json_value), min_size=1, max_size=8)


def _snapshot(srv: BackgroundServer, admin: str, agent: str, tokens: list[str]) -> dict[str, Any]:
    """Everything a tenant's own keys can see of its data."""
    with _client(srv, admin) as c, _client(srv, agent) as a:
        out: dict[str, Any] = {}
        for path in ("/v1/events", "/v1/sessions", "/v1/violations", "/v1/approvals?status=all", "/v1/inventory",
                     "/v1/policies", "/v1/policies/versions", "/v1/keys"):
            reply = c.get(path, params={"limit": 500} if "?" not in path else None)
            assert reply.status_code == 200, (path, reply.text)
            out[path] = reply.json()
        out["holds"] = [a.get(f"/v1/enforce/hold/{t}").json() for t in tokens]
        return out


def _fill(value: str, ids: dict[str, str]) -> str:
    for name, real in ids.items():
        value = value.replace("{" + name + "}", real)
    return value


def _bodies(victim: str, ids: dict[str, str], event: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {
        ("POST", "/v1/enforce"): _enforce(victim, ids["session_id"], "lookup", {"q": "x"}),
        ("POST", "/v1/enforce/hold/{hold_token}/cancel"): {"reason": "mallory"},
        ("POST", "/v1/events/batch"): {"events": [event]},
        ("POST", "/v1/explain"): {"violation_id": ids["violation_id"]},
        ("POST", "/{tenant_id}/thoth/tool-inventory"): {"agent_id": "a", "tools": [{"name": "evil"}]},
        ("POST", "/v1/approvals/{approval_id}/resolve"): {"decision": "approve", "reviewer": "mallory"},
        ("PUT", "/v1/policies"): {"policy": "version: 1\ndefault: allow\n"},
        ("POST", "/v1/keys"): {"role": "admin", "tenant_id": victim},
    }


def test_no_key_of_one_tenant_reads_counts_or_changes_another(server: BackgroundServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    operations = [(m.upper(), p) for p, item in schema["paths"].items() for m in item
                  if (m.upper(), p) not in PUBLIC]

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(victim_events=batches, attacker_events=batches, amount=st.integers(101, 10**6),
           secret_arg=st.text(min_size=1, max_size=30), attacker_tool=tool_names)
    def check(victim_events: list[Any], attacker_events: list[Any], amount: int, secret_arg: str,
              attacker_tool: str) -> None:
        victim, attacker = f"a{uuid.uuid4().hex[:10]}", f"b{uuid.uuid4().hex[:10]}"
        vkeys, bkeys = _keys(server, victim), _keys(server, attacker)
        marker = f"secret-{uuid.uuid4().hex}"
        session, b_session = f"s-{uuid.uuid4().hex}", f"s-{uuid.uuid4().hex}"

        # the victim's data: events, a block, a pending hold, inventory, its own policy
        with _client(server, vkeys["agent"][1]) as va, _client(server, vkeys["admin"][1]) as vadmin:
            events = [{"event_id": f"{victim}:{uuid.uuid4()}", "tenant_id": victim, "session_id": session,
                       "tool_name": tool, "event_type": kind, "occurred_at": "2026-06-21T20:52:13Z",
                       "metadata": {"payload": payload, "marker": marker}} for tool, kind, payload in victim_events]
            assert va.post("/v1/events/batch", json={"events": events}).json()["accepted"] == len(events)
            blocked = va.post("/v1/enforce", json=_enforce(victim, session, "drop_table",
                                                            {"name": marker})).json()
            held = va.post("/v1/enforce", json=_enforce(victim, session, "transfer",
                                                         {"to": marker, "amount": amount, "memo": secret_arg})).json()
            assert blocked["decision"] == "BLOCK" and held["decision"] == "STEP_UP"
            assert va.post(f"/{victim}/thoth/tool-inventory",
                           json={"agent_id": "agent-1", "tools": [{"name": marker}]}).status_code == 202
            etag = vadmin.get("/v1/policies").json()["etag"]
            assert vadmin.put("/v1/policies", json={"policy": POLICY + f"# {marker}\n"},
                              headers={"If-Match": etag}).status_code == 200
            approval_id = vadmin.get(f"/v1/approvals/{held['hold_token']}").json()["approval_id"]

        # the attacker has data of its own, so its lists and counts are not trivially empty
        with _client(server, bkeys["agent"][1]) as ba:
            own = [{"event_id": f"{attacker}:{uuid.uuid4()}", "tenant_id": attacker, "session_id": b_session,
                    "tool_name": attacker_tool, "event_type": kind, "occurred_at": "2026-06-21T20:52:13Z",
                    "metadata": {"payload": payload}} for _, kind, payload in attacker_events]
            assert ba.post("/v1/events/batch", json=own).json()["accepted"] == len(own)

        ids = {"tenant_id": victim, "session_id": session, "hold_token": held["hold_token"],
               "approval_id": approval_id, "key_id": vkeys["admin"][0], "violation_id": blocked["violation_id"]}
        secrets_of_victim = [marker, session, held["hold_token"], approval_id, blocked["violation_id"],
                             held["violation_id"], *(e["event_id"] for e in events),
                             *(k for pair in vkeys.values() for k in pair)]
        before = _snapshot(server, vkeys["admin"][1], vkeys["agent"][1], [held["hold_token"]])
        bodies = _bodies(victim, ids, events[0])

        for role in ROLES:
            with _client(server, bkeys[role][1]) as attacker_client:
                for method, template in operations:
                    path = _fill(template, ids)
                    variants: list[dict[str, str]] = [{}, {"tenant_id": victim}]
                    if method == "GET":
                        variants.append({"session_id": session, "agent_id": "agent-1"})
                    for params in variants:
                        payload = bodies.get((method, template))
                        headers = {"If-Match": "*"} if method == "PUT" else {}
                        reply = attacker_client.request(method, path, params=params, json=payload, headers=headers)
                        where = (role, method, path, params, reply.status_code)
                        assert reply.status_code < 500, (where, reply.text)
                        sent = path + json.dumps(params) + json.dumps(payload)  # echoing the request is no leak
                        leaked = [s for s in secrets_of_victim if s in reply.text and s not in sent]
                        assert not leaked, (where, leaked, reply.text[:300])
                        if template != path or params.get("tenant_id"):  # names the victim's ids: never 2xx
                            assert reply.status_code in (401, 403, 404, 405, 409, 422), (where, reply.text[:300])
                            assert reply.status_code != 409, ("409 reveals the hold exists", where)
                # counts: the attacker's sessions count only its own events
                if role != "agent":
                    sessions = attacker_client.get("/v1/sessions").json()["items"]
                    assert {s["session_id"] for s in sessions} <= {b_session}
                    mine = attacker_client.get("/v1/events", params={"limit": 500}).json()["items"]
                    assert {e["tenant_id"] for e in mine} <= {attacker} and len(mine) == len(own)

        after = _snapshot(server, vkeys["admin"][1], vkeys["agent"][1], [held["hold_token"]])
        assert after == before, "the attacker changed the victim's data"
        assert after["holds"][0]["resolved"] is False

    check()


# -- roles on every route ---------------------------------------------------------------------------------


def test_every_route_in_the_schema_checks_key_and_role(server: BackgroundServer) -> None:
    keys = _keys(server, "acme")
    schema = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    operations = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    unknown = operations - set(EXPECTED_ROLES) - PUBLIC
    assert not unknown, f"new routes: add them to EXPECTED_ROLES with the roles that may call them: {unknown}"
    assert set(EXPECTED_ROLES) <= operations, set(EXPECTED_ROLES) - operations
    ids = {"tenant_id": "acme", "session_id": "s", "hold_token": "hold_x", "approval_id": "apr_x",
           "key_id": "key_x", "violation_id": "vio_x"}
    bodies = _bodies("acme", ids, {"event_id": f"acme:{uuid.uuid4()}", "tenant_id": "acme", "session_id": "s",
                                   "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-06-21T20:52:13Z"})
    bodies[("POST", "/v1/keys")] = {"role": "nobody"}  # a valid create would mint keys for later rows
    bodies[("PUT", "/v1/policies")] = {"policy": "version: 1\ndefault: allow\n"}
    anon = _client(server, None)
    for method, template in sorted(EXPECTED_ROLES):
        path = _fill(template, ids)
        payload = bodies.get((method, template))
        for bad in ({}, {"x-api-key": "thk_not_a_key"}, {"Authorization": "Bearer thk_not_a_key"}):
            assert anon.request(method, path, json=payload, headers=bad).status_code == 401, (method, path, bad)
        for role in ROLES:
            with _client(server, keys[role][1]) as client:
                status = client.request(method, path, json=payload, headers={"If-Match": "*"}).status_code
            if role in EXPECTED_ROLES[(method, template)]:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
    for method, path in PUBLIC:  # health stays open for probes
        assert anon.request(method, path).status_code == 200
    anon.close()


# -- keys -----------------------------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_compared_in_constant_time(server: BackgroundServer) -> None:
    keys = _keys(server, "acme")
    with _client(server, keys["admin"][1]) as admin:
        created = admin.post("/v1/keys", json={"role": "agent", "name": "ci"}).json()
    secrets = [s for _, s in keys.values()] + [created["api_key"]]
    db = sqlite3.connect(server.db)
    try:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
        names = [d[0] for d in db.execute("SELECT * FROM api_keys").description]
    finally:
        db.close()
    assert "key_hash" in names and not {"secret", "api_key", "key"} & set(names)
    stored = {str(v) for row in rows for v in row}
    for secret in secrets:
        assert secret not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() in stored
    raw = b"".join(p.read_bytes() for p in server.db.parent.glob(server.db.name + "*"))  # db, -wal, -shm
    assert not [s for s in secrets if s.encode() in raw], "a key secret is in the store files"

    # the lookup compares in constant time (hmac.compare_digest), in both stores, and the server uses it
    from thoth_nb.server.auth import Authenticator

    assert "hmac.compare_digest" in inspect.getsource(SQLiteStore.api_key_for)
    try:
        from thoth_nb.engine.store_pg import PostgresStore
    except ImportError:  # pragma: no cover - psycopg missing
        pass
    else:
        assert "hmac.compare_digest" in inspect.getsource(PostgresStore.api_key_for)
    assert "api_key_for" in inspect.getsource(Authenticator._lookup)


def test_keys_never_logged(server: BackgroundServer, caplog: pytest.LogCaptureFixture,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything logs at DEBUG (server, uvicorn, SDK) during requests with good, bad and revoked keys."""
    import thoth_nb
    from thoth_nb import ThothPolicyViolation

    caplog.set_level(logging.DEBUG)
    for name in ("thoth", "thoth_nb", "uvicorn", "uvicorn.error", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    keys = _keys(server, "acme")
    wrong = "thk_" + uuid.uuid4().hex
    with _client(server, keys["admin"][1]) as admin:
        created = admin.post("/v1/keys", json={"role": "agent"}).json()
        with _client(server, created["api_key"]) as fresh:
            assert fresh.post("/v1/enforce", json=_enforce("acme", "s", "lookup", {})).status_code == 200
        for bad in (wrong, keys["reviewer"][1]):
            with _client(server, bad) as c:
                reply = c.post("/v1/enforce", json=_enforce("acme", "s", "lookup", {}))
                assert reply.status_code in (401, 403) and bad not in reply.text
        admin.delete(f"/v1/keys/{created['key_id']}")

    def lookup(q: str) -> str:
        return q

    def drop_table(name: str) -> str:
        return name

    monkeypatch.setenv("THOTH_LOG_LEVEL", "DEBUG")
    tools = thoth_nb.instrument([lookup, drop_table], api_url=server.url, api_key=keys["agent"][1],
                                agent_id="a", tenant_id="acme", approved_scope=["lookup", "drop_table"],
                                tool_inventory=False)
    assert tools[0]("x") == "x"
    with pytest.raises(ThothPolicyViolation):
        tools[1]("users")
    bad_tools = thoth_nb.instrument([lookup], api_url=server.url, api_key=wrong, agent_id="a", tenant_id="acme",
                                    approved_scope=["lookup"], tool_inventory=False)
    with pytest.raises(ThothPolicyViolation, match="status=401"):
        bad_tools[0]("x")
    assert thoth_nb.flush(timeout=10)
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert len(caplog.records) > 5  # the capture did see the run
    secrets = [s for _, s in keys.values()] + [created["api_key"], wrong]
    assert not [s for s in secrets if s in text], "an API key was logged"
    assert not [s[4:16] for s in secrets if s[4:16] in text], "a key prefix was logged"


def test_revoked_keys_are_rejected_at_once(server: BackgroundServer) -> None:
    keys = _keys(server, "acme")
    with _client(server, keys["admin"][1]) as admin:
        for role in ROLES:
            created = admin.post("/v1/keys", json={"role": role}).json()
            with _client(server, created["api_key"]) as c:
                assert c.get("/v1/enforce/hold/none").status_code == 404  # accepted (warm in the auth cache)
                assert admin.delete(f"/v1/keys/{created['key_id']}").json()["revoked"] is True
                assert c.get("/v1/enforce/hold/none").status_code == 401  # the very next request
                assert admin.delete(f"/v1/keys/{created['key_id']}").status_code == 404  # already revoked


def test_revocation_by_another_process_reaches_the_server_within_the_cache_window(tmp_path: Path) -> None:
    """Revoked from the CLI (another connection to the store): the server's key cache lets the key work for
    at most `key_cache_seconds` (documented trade-off; the API path above is immediate)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings_ = ServerSettings(key_cache_seconds=0.5)
    with BackgroundServer(tmp_path / "s.db", policy=tmp_path / "policy.yaml", settings=settings_) as srv:
        record, secret = SQLiteStore(srv.db).create_api_key("acme", "agent")
        with _client(srv, secret) as c:
            assert c.get("/v1/enforce/hold/none").status_code == 404
            other = SQLiteStore(srv.db)
            assert other.revoke_api_key(record["key_id"])
            other.close()
            deadline = time.monotonic() + 0.5 + 1.0
            while c.get("/v1/enforce/hold/none").status_code != 401:
                assert time.monotonic() < deadline, "a revoked key still works after the cache window"
                time.sleep(0.05)


# -- holds ------------------------------------------------------------------------------------------------


def _hold(client: httpx.Client, amount: int, timeout: float | None = None, session: str = "s") -> dict[str, Any]:
    body = _enforce("acme", session, "transfer", {"to": "bob", "amount": amount})
    if timeout is not None:
        body["step_up_timeout_seconds"] = timeout
    reply: dict[str, Any] = client.post("/v1/enforce", json=body).json()
    assert reply["decision"] == "STEP_UP", reply
    return reply


def test_concurrent_resolves_one_wins_and_repeats_change_nothing(server: BackgroundServer) -> None:
    """§11: resolve answers 409 once a hold is resolved. Repeating the same approval is idempotent in effect
    (409 with the unchanged record); racing reviewers: exactly one 200, everyone else 409."""
    keys = _keys(server, "acme")
    with _client(server, keys["agent"][1]) as agent, _client(server, keys["reviewer"][1]) as reviewer:
        held = _hold(agent, 500)
        token = held["hold_token"]
        results: list[tuple[int, dict[str, Any]]] = []
        barrier = threading.Barrier(8)

        def resolve(i: int) -> None:
            with _client(server, keys["reviewer"][1]) as c:
                barrier.wait()
                r = c.post(f"/v1/approvals/{token}/resolve",
                           json={"decision": "approve" if i % 2 else "deny", "reviewer": f"r{i}"})
                results.append((r.status_code, r.json()))

        threads = [threading.Thread(target=resolve, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] + [409] * 7, statuses
        winner = next(body for s, body in results if s == 200)
        assert all(body["record"]["status"] == winner["status"] and body["record"]["reviewer"] == winner["reviewer"]
                   for s, body in results if s == 409)
        final = reviewer.get(f"/v1/approvals/{token}").json()
        assert (final["status"], final["reviewer"], final["resolved_at"]) == \
            (winner["status"], winner["reviewer"], winner["resolved_at"])
        same = "approve" if winner["status"] == "approved" else "deny"
        again = reviewer.post(f"/v1/approvals/{token}/resolve", json={"decision": same, "reviewer": "late"})
        assert again.status_code == 409 and again.json()["record"]["reviewer"] == winner["reviewer"]
        decision = agent.get(f"/v1/enforce/hold/{token}").json()["decision"]
        assert decision == ("ALLOW" if winner["status"] == "approved" else "BLOCK")


def test_expired_hold_cannot_be_resolved_even_if_nobody_polled(server: BackgroundServer) -> None:
    keys = _keys(server, "acme")
    with _client(server, keys["agent"][1]) as agent, _client(server, keys["reviewer"][1]) as reviewer:
        held = _hold(agent, 500, timeout=0.2)
        time.sleep(0.4)  # nobody polls: expiry must be checked at resolve time
        r = reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve", json={"decision": "approve"})
        assert r.status_code == 409 and r.json()["record"]["status"] == "expired", r.text
        reply = agent.get(f"/v1/enforce/hold/{held['hold_token']}").json()
        assert reply["decision"] == "BLOCK" and reply["decision_reason_code"] == "step_up_timeout"


def test_an_approval_is_bound_to_its_tool_and_argument_hash(server: BackgroundServer) -> None:
    """Approving a hold releases that call only: the same arguments re-sent are a new hold (scope once), other
    arguments or another tool never ride on it, and the record keeps the hash it was raised for."""
    keys = _keys(server, "acme")
    with _client(server, keys["agent"][1]) as agent, _client(server, keys["reviewer"][1]) as reviewer:
        held = _hold(agent, 500, session="bound")
        assert reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve",
                             json={"decision": "approve"}).status_code == 200
        again = _hold(agent, 500, session="bound")  # once-scope approval: not reusable
        assert again["hold_token"] != held["hold_token"]
        other = _hold(agent, 501, session="bound")
        assert other["hold_token"] not in (held["hold_token"], again["hold_token"])
        assert agent.get(f"/v1/enforce/hold/{other['hold_token']}").json()["resolved"] is False
    assert server.store is not None
    rows = server.store.query("SELECT * FROM holds WHERE hold_token = ?", (held["hold_token"],))
    columns = set(rows[0])
    hashed = [c for c in columns if "hash" in c]
    assert hashed, f"holds table keeps no argument hash: {sorted(columns)}"
    assert rows[0]["tool_name"] == "transfer"
    args_hash = rows[0][hashed[0]]
    canonical = json.dumps({"to": "bob", "amount": 500}, sort_keys=True, separators=(",", ":"))
    assert args_hash and canonical not in str(args_hash)
