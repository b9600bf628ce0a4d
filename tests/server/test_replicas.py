"""Two `thoth-nb serve` replicas (real uvicorn servers on two 127.0.0.1 ports) sharing one PostgreSQL:
holds, rate limits, sequence rules, progressive counts, sessions and event ingest work across them.

Needs THOTH_TEST_DATABASE_URL (`.ci/start-postgres` sets it). Each test runs in its own schema."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx

import thoth_nb
from thoth_nb import _json
from thoth_nb.engine.policy import parse_policy
from thoth_nb.engine.store import open_store

PG_URL = os.environ.get("THOTH_TEST_DATABASE_URL", "")  # read at import: tests/conftest.py clears THOTH_*
pytestmark = pytest.mark.postgres

POLICY = """\
version: 1
default: allow
rules:
  - {id: big-transfer, tool: transfer, when: {amount: {gt: 100}}, decision: step_up, reason: big transfers need a human}
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: exfil, tool: send_email, after: [{tool: read_file, when: {path: {contains: secrets}}}], decision: block}
rate_limits:
  - {id: burst, tool: search, max_calls: 3, per_seconds: 60, decision: block}
"""
SCOPE = ["lookup", "search", "transfer", "read_file", "send_email"]


class Replica:
    """One server process's worth: its own PostgresStore, engine and uvicorn server on a free port."""

    def __init__(self, url: str, settings: Any = None, *, hold_notifications: bool = True) -> None:
        import uvicorn

        from thoth_nb.engine.store_pg import PostgresStore
        from thoth_nb.server.app import ServerSettings, create_app
        from thoth_nb.server.run import uvicorn_config

        self.store = open_store(url) if hold_notifications else PostgresStore(url, hold_notifications=False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(self.store, parse_policy(POLICY), settings or ServerSettings())
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", sock.getsockname()[1]))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "replica did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        self.store.close()


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[Replica, Replica, dict[str, str]]]:
    one = Replica(pg_url)
    two = Replica(pg_url)
    keys = {role: one.store.create_api_key("acme", role, role)[1] for role in ("agent", "reviewer", "admin")}
    try:
        yield one, two, keys
    finally:
        thoth_nb.flush(timeout=5.0)  # deliver what the SDK queued while the replicas are still up
        one.stop()
        two.stop()


def client(replica: Replica, key: str) -> httpx.Client:
    return httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0,
                        trust_env=False)


def enforce(c: httpx.Client, tool: str, session: str, mode: str = "block", **args: Any) -> dict[str, Any]:
    body = {"agent_id": "agent-1", "tenant_id": "acme", "user_id": "u1", "tool_name": tool, "session_id": session,
            "session_tool_calls": [], "approved_scope": SCOPE, "enforcement_mode": mode, "tool_args": args,
            "environment": "test", "enforcement_trace_id": session}
    r = c.post("/v1/enforce", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


class Agent:
    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []

        def lookup(q: str) -> str:
            self.ran.append(("lookup", q))
            return f"found {q}"

        def transfer(to: str, amount: int) -> str:
            self.ran.append(("transfer", (to, amount)))
            return f"sent {amount} to {to}"

        self.tools = [lookup, transfer]


def test_hold_created_on_one_replica_is_approved_on_the_other(replicas: Any) -> None:
    one, two, keys = replicas
    session = str(uuid.uuid4())
    agent = Agent()
    thoth_nb.instrument(agent, api_url=one.url, api_key=keys["agent"], agent_id="agent-1", tenant_id="acme",
                        approved_scope=SCOPE, enforcement="step_up", session_id=session,
                        step_up_poll_interval_ms=5000, tool_inventory=False)
    assert agent.tools[0](q="x") == "found x"
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = agent.tools[1](to="bob", amount=500)
        except BaseException as exc:
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    worker = threading.Thread(target=call)
    worker.start()
    with client(two, keys["reviewer"]) as reviewer:
        deadline = time.monotonic() + 10
        items: list[dict[str, Any]] = []
        while not items and time.monotonic() < deadline:
            items = reviewer.get("/v1/approvals").json()["items"]
            time.sleep(0.05)
        assert [h["tool_name"] for h in items] == ["transfer"] and "value" not in outcome
        approved_at = time.monotonic()
        r = reviewer.post(f"/v1/approvals/{items[0]['approval_id']}/resolve", json={"decision": "approve"})
        assert r.status_code == 200, r.text
    worker.join(15)
    assert outcome.get("value") == "sent 500 to bob", outcome
    assert outcome["at"] - approved_at < 2.0  # the long-poll on replica 1 saw replica 2's write
    assert agent.ran == [("lookup", "x"), ("transfer", ("bob", 500))]

    assert thoth_nb.flush(timeout=10)
    with client(two, keys["reviewer"]) as reviewer:  # events went to replica 1; replica 2 reads them
        deadline = time.monotonic() + 10
        summary: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = reviewer.get(f"/v1/sessions/{session}")
            if r.status_code == 200 and r.json()["tool_calls"] == 2:
                summary = r.json()
                break
            time.sleep(0.1)
        assert summary, r.text
        calls = [e["tool_name"] for e in summary["events"] if e["event_type"] == "TOOL_CALL_PRE"]
        assert calls == ["lookup", "transfer"]


def test_rate_limits_sequences_and_progressive_count_across_replicas(replicas: Any) -> None:
    one, two, keys = replicas
    with client(one, keys["agent"]) as a, client(two, keys["agent"]) as b:
        session = str(uuid.uuid4())
        decisions = [enforce(c, "search", session, q=i)["decision"] for i, c in enumerate([a, b, a, b, a])]
        assert decisions == ["ALLOW", "ALLOW", "ALLOW", "BLOCK", "BLOCK"]
        assert enforce(b, "search", str(uuid.uuid4()))["decision"] == "ALLOW"

        session = str(uuid.uuid4())
        assert enforce(b, "send_email", session, to="x")["decision"] == "ALLOW"
        assert enforce(a, "read_file", session, path="/srv/secrets/key")["decision"] == "ALLOW"
        blocked = enforce(b, "send_email", session, to="x")
        assert blocked["decision"] == "BLOCK" and blocked["matched_rule_ids"] == ["exfil"]

        session = str(uuid.uuid4())
        first = enforce(a, "read_file", session, "progressive", path="/etc/a")
        second = enforce(b, "read_file", session, "progressive", path="/etc/b")
        assert (first["decision"], second["decision"]) == ("STEP_UP", "BLOCK")

        session = str(uuid.uuid4())
        decisions = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # racing replicas still count every call
            decisions = list(pool.map(lambda i: enforce((a, b)[i % 2], "search", session)["decision"], range(8)))
        assert sorted(decisions) == ["ALLOW"] * 3 + ["BLOCK"] * 5


def test_event_ingest_through_both_replicas_lands_once(replicas: Any) -> None:
    one, two, keys = replicas
    session = str(uuid.uuid4())
    events = [{"event_id": f"acme:{uuid.uuid4()}", "tenant_id": "acme", "session_id": session, "agent_id": "agent-1",
               "user_id": "u1", "tool_name": "lookup", "event_type": "TOOL_CALL_PRE", "source_type": "agent_tool_call",
               "occurred_at": f"2026-01-01T00:00:{n:02d}Z", "content": None, "metadata": {}} for n in range(60)]
    clients = [client(one, keys["agent"]), client(two, keys["agent"])]
    batches = [events[s: s + 25] for s in range(0, 60, 20)] * 3  # overlapping batches, each sent three times

    def post(i: int) -> dict[str, Any]:
        r = clients[i % 2].post("/v1/events/batch", json={"events": batches[i]})
        assert r.status_code == 202, r.text
        return r.json()  # type: ignore[no-any-return]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(post, range(len(batches))))
    for c in clients:
        c.close()
    assert sum(r["accepted"] for r in results) == 60
    assert sum(r["accepted"] + r["duplicates"] for r in results) == sum(len(b) for b in batches)
    with client(two, keys["reviewer"]) as reviewer:
        rows = reviewer.get("/v1/events", params={"session_id": session, "limit": 500}).json()["items"]
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)
    previous = ""
    for index, row in enumerate(sorted(rows, key=lambda r: r["chain_index"])):
        body = {k: v for k, v in row.items() if k not in ("hash", "seq")}
        assert body["chain_index"] == index and body["previous_hash"] == previous
        assert hashlib.sha256((previous + _json.dumps(body)).encode()).hexdigest() == row["hash"]
        previous = row["hash"]


def test_thoth_nb_serve_process_joins_as_a_replica(replicas: Any, pg_url: str, tmp_path: Any) -> None:
    """`thoth-nb serve --db postgresql://...` in its own process shares rate windows with a replica in this one."""
    import subprocess
    import sys

    one, _, keys = replicas
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    proc = subprocess.Popen([sys.executable, "-m", "thoth_nb.cli", "serve", "--db", pg_url, "--policy", str(policy),
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{url}/readyz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "thoth-nb serve did not get ready"
            time.sleep(0.1)
        other = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['agent']}"}, timeout=10,
                             trust_env=False)
        with client(one, keys["agent"]) as mine, other:
            session = str(uuid.uuid4())
            decisions = [enforce(c, "search", session)["decision"] for c in (mine, other, mine, other)]
            assert decisions == ["ALLOW", "ALLOW", "ALLOW", "BLOCK"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    from psycopg.conninfo import conninfo_to_dict

    assert "(store PostgresStore('postgresql://" in out  # the banner names the store ...
    password = conninfo_to_dict(PG_URL).get("password")
    if password:
        assert f":{password}@" not in out  # ... without its password


def approve_to_resume(waiting: Replica, approving: Replica, keys: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Seconds from the approval's answer on `approving` to the answer of a client long-polling its hold
    on `waiting`, and that answer."""
    with client(waiting, keys["agent"]) as agent:
        held = enforce(agent, "transfer", str(uuid.uuid4()), "step_up", to="bob", amount=500)
    assert held["decision"] == "STEP_UP", held
    answer: dict[str, Any] = {}

    def wait() -> None:
        with client(waiting, keys["agent"]) as agent:
            r = agent.get(f"/v1/enforce/hold/{held['hold_token']}", params={"wait": 20}, timeout=30)
        answer["at"] = time.monotonic()
        answer["reply"] = r.json()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # the long-poll is parked on `waiting`
    assert "reply" not in answer
    with client(approving, keys["reviewer"]) as reviewer:
        r = reviewer.post(f"/v1/approvals/{held['hold_token']}/resolve", json={"decision": "approve"})
        approved_at = time.monotonic()
    assert r.status_code == 200, r.text
    waiter.join(30)
    return answer["at"] - approved_at, answer["reply"]


def test_long_poll_on_one_replica_is_woken_by_an_approval_on_the_other(pg_url: str) -> None:
    """LISTEN/NOTIFY: the fallback re-read is set to 30 s, so only the push can answer within a second."""
    from thoth_nb.server.app import ServerSettings

    settings = ServerSettings(hold_fallback_seconds=30.0)
    one, two = Replica(pg_url, settings), Replica(pg_url, settings)
    try:
        keys = {role: one.store.create_api_key("acme", role, role)[1] for role in ("agent", "reviewer")}
        for waiting, approving in ((two, one), (one, two)):
            latency, reply = approve_to_resume(waiting, approving, keys)
            assert reply["resolved"] is True and reply["status"] == "approved", reply
            assert latency < 1.0, f"the waiting client resumed {latency:.2f} s after the approval"
    finally:
        one.stop()
        two.stop()


def test_without_notifications_the_long_poll_still_resumes_by_re_reading(pg_url: str) -> None:
    """A store opened with hold_notifications=False pushes nothing: the 50 ms re-read answers instead."""
    one, two = Replica(pg_url, hold_notifications=False), Replica(pg_url, hold_notifications=False)
    try:
        keys = {role: one.store.create_api_key("acme", role, role)[1] for role in ("agent", "reviewer")}
        latency, reply = approve_to_resume(two, one, keys)
        assert reply["status"] == "approved" and latency < 2.0, (latency, reply)
    finally:
        one.stop()
        two.stop()


def test_one_request_id_sent_through_both_replicas_at_once_is_decided_once(replicas: Any) -> None:
    """Real concurrent requests, released together through two replicas: each request id yields one
    hold (both answers carry its token) and counts once against the rate limit."""
    one, two, keys = replicas
    clients = [client(one, keys["agent"]), client(two, keys["agent"])]

    def body(tool: str, session: str, request_id: str, mode: str = "block", **args: Any) -> dict[str, Any]:
        return {"agent_id": "agent-1", "tenant_id": "acme", "user_id": "u1", "tool_name": tool, "session_id": session,
                "session_tool_calls": [], "approved_scope": SCOPE, "enforcement_mode": mode, "tool_args": args,
                "request_id": request_id}

    def both(request: dict[str, Any]) -> list[dict[str, Any]]:
        start = threading.Barrier(2)

        def send(c: httpx.Client) -> dict[str, Any]:
            start.wait(5)
            r = c.post("/v1/enforce", json=request)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(send, clients))

    try:
        session = str(uuid.uuid4())
        tokens = []
        for n in range(12):
            first, second = both(body("transfer", session, f"hold-{session}-{n}", "step_up", to="bob", amount=500))
            assert first["decision"] == second["decision"] == "STEP_UP"
            assert first["hold_token"] == second["hold_token"]
            tokens.append(first["hold_token"])
        with client(two, keys["reviewer"]) as reviewer:
            held = [h for h in reviewer.get("/v1/approvals").json()["items"] if h["session_id"] == session]
        assert sorted(h["hold_token"] for h in held) == sorted(tokens)  # twelve holds, not up to 24

        session = str(uuid.uuid4())
        for n in range(3):  # the limit is 3 calls a minute: three ids sent twice each are three calls
            answers = both(body("search", session, f"rate-{session}-{n}", q=n))
            assert [a["decision"] for a in answers] == ["ALLOW", "ALLOW"], answers
        assert enforce(clients[0], "search", session)["decision"] == "BLOCK"
    finally:
        for c in clients:
            c.close()
