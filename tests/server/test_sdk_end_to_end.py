"""The SDK's HTTP transport against a live `thoth-nb serve`: every decision, approvals, events, restarts."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._emitter import Emitter, all_emitters
from thoth_nb._runtime import build_event

SCOPE = ["lookup", "transfer", "drop_table"]


class Agent:
    """A stand-in agent whose tools record what actually ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []

        def lookup(q: str) -> str:
            self.ran.append(("lookup", q))
            return f"found {q}"

        def transfer(to: str, amount: int) -> str:
            self.ran.append(("transfer", (to, amount)))
            return f"sent {amount} to {to}"

        def drop_table(name: str) -> str:
            self.ran.append(("drop_table", name))
            return "dropped"

        self.tools = [lookup, transfer, drop_table]

    def call(self, index: int, **kwargs: Any) -> Any:
        return self.tools[index](**kwargs)


def instrumented(live: Any, **over: Any) -> tuple[Agent, str]:
    session = str(uuid.uuid4())
    options: dict[str, Any] = {
        "api_url": live.url, "api_key": live.key("acme", "agent"), "agent_id": "agent-1", "tenant_id": "acme",
        "approved_scope": SCOPE, "enforcement": "step_up", "session_id": session,
        "step_up_poll_interval_ms": 5000, "tool_inventory": False,
    }
    options.update(over)
    agent = Agent()
    thoth_nb.instrument(agent, **options)
    return agent, session


def pending_hold(reviewer: httpx.Client, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = reviewer.get("/v1/approvals").json()["items"]
        if items:
            return dict(items[0])
        time.sleep(0.02)
    raise AssertionError("no hold appeared")


def events_of(live: Any, session: str) -> list[dict[str, Any]]:
    assert thoth_nb.flush(timeout=10)
    items: list[dict[str, Any]] = live.client("acme", "reviewer").get(
        "/v1/events", params={"session_id": session, "limit": 500}).json()["items"]
    return items


def test_allow_and_block_through_the_server_with_events(live: Any) -> None:
    agent, session = instrumented(live)
    assert agent.call(0, q="invoices") == "found invoices"
    with pytest.raises(ThothPolicyViolation) as caught:
        agent.call(2, name="users")
    assert caught.value.reason == "dropping tables is forbidden"
    assert caught.value.violation_id and caught.value.violation_id.startswith("vio_")
    assert agent.ran == [("lookup", "invoices")]

    events = events_of(live, session)
    kinds = [(e["tool_name"], e["event_type"]) for e in events]
    assert kinds == [("lookup", "TOOL_CALL_PRE"), ("lookup", "TOOL_CALL_POST"),
                     ("drop_table", "TOOL_CALL_PRE"), ("drop_table", "TOOL_CALL_BLOCK")]
    assert all(e["event_id"].startswith("acme:") and e["tenant_id"] == "acme" for e in events)
    assert events[1]["metadata"]["authorization_decision"] == "ALLOW"
    assert events[3]["violation_id"] == caught.value.violation_id
    violations = live.client("acme", "reviewer").get("/v1/violations", params={"session_id": session}).json()
    assert [v["violation_id"] for v in violations["items"]] == [caught.value.violation_id]


def test_step_up_approved_over_http_resumes_by_long_poll(live: Any) -> None:
    """Poll interval 5 s, yet the call resumes right after the approval: the server's long-poll."""
    agent, session = instrumented(live)
    reviewer = live.client("acme", "reviewer")
    approved: dict[str, float] = {}

    def approve() -> None:
        hold = pending_hold(reviewer)
        time.sleep(0.3)  # the call is now inside its long-poll
        approved["at"] = time.monotonic()  # the reviewer clicks: the lag below includes the resolve request
        r = reviewer.post(f"/v1/approvals/{hold['approval_id']}/resolve", json={"decision": "approve",
                                                                                "reviewer": "ann"})
        assert r.status_code == 200

    thread = threading.Thread(target=approve)
    thread.start()
    result = agent.call(1, to="bob", amount=500)
    resumed = time.monotonic()
    thread.join()
    assert result == "sent 500 to bob" and agent.ran == [("transfer", ("bob", 500))]
    lag = resumed - approved["at"]
    print(f"approval-to-resume: {lag * 1000:.1f} ms (poll interval 5000 ms)")
    assert lag < 1.5, f"resumed {lag:.2f}s after the approval"
    post = [e for e in events_of(live, session) if e["event_type"] == "TOOL_CALL_POST"]
    assert post and post[0]["metadata"]["authorization_decision"] == "ALLOW"


def test_step_up_approved_with_modified_arguments(live: Any) -> None:
    agent, _ = instrumented(live)
    reviewer = live.client("acme", "reviewer")

    def approve() -> None:
        hold = pending_hold(reviewer)
        reviewer.post(f"/v1/approvals/{hold['hold_token']}/resolve",
                      json={"decision": "approve", "modified_args": {"to": "bob", "amount": 100}})

    thread = threading.Thread(target=approve)
    thread.start()
    assert agent.call(1, to="bob", amount=5000) == "sent 100 to bob"
    thread.join()
    assert agent.ran == [("transfer", ("bob", 100))]


def test_step_up_denied_and_timed_out(live: Any) -> None:
    agent, _ = instrumented(live, step_up_timeout_minutes=1 / 60)  # one second
    reviewer = live.client("acme", "reviewer")

    def deny() -> None:
        hold = pending_hold(reviewer)
        reviewer.post(f"/v1/approvals/{hold['approval_id']}/resolve", json={"decision": "deny", "note": "no"})

    thread = threading.Thread(target=deny)
    thread.start()
    with pytest.raises(ThothPolicyViolation, match="denied"):
        agent.call(1, to="eve", amount=900)
    thread.join()

    started = time.monotonic()
    with pytest.raises(ThothPolicyViolation, match="timed out"):
        agent.call(1, to="mallory", amount=901)
    assert 0.8 < time.monotonic() - started < 3.0
    assert agent.ran == []
    expired = reviewer.get("/v1/approvals", params={"status": "all"}).json()["items"][-1]
    late = reviewer.post(f"/v1/approvals/{expired['approval_id']}/resolve", json={"decision": "approve"})
    assert late.status_code == 409  # a timed-out hold cannot be approved afterwards


def test_approving_one_hold_releases_only_that_call(live: Any) -> None:
    agent, _ = instrumented(live)
    reviewer = live.client("acme", "reviewer")
    outcomes: dict[str, Any] = {}

    def run(name: str, amount: int) -> None:
        try:
            outcomes[name] = agent.call(1, to=name, amount=amount)
        except ThothPolicyViolation as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(n, a)) for n, a in (("bob", 500), ("eve", 600))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(reviewer.get("/v1/approvals").json()["items"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    holds = {h["tool_args"]["to"]: h for h in reviewer.get("/v1/approvals").json()["items"]}
    reviewer.post(f"/v1/approvals/{holds['bob']['approval_id']}/resolve", json={"decision": "approve"})
    threads[0].join(3)
    assert outcomes.get("bob") == "sent 500 to bob"
    time.sleep(0.3)
    assert "eve" not in outcomes  # still held
    reviewer.post(f"/v1/approvals/{holds['eve']['approval_id']}/resolve", json={"decision": "deny"})
    threads[1].join(3)
    assert isinstance(outcomes["eve"], ThothPolicyViolation)
    assert agent.ran == [("transfer", ("bob", 500))]


def test_restart_mid_run_loses_no_event(live: Any) -> None:
    """D7: the server goes away mid-run; the emitter retries, spills, and replays; nothing is lost or doubled."""
    agent, session = instrumented(live)
    for i in range(3):
        agent.call(0, q=f"before-{i}")
    assert len(events_of(live, session)) == 6
    emitter = next(e for e in all_emitters() if getattr(e.transport, "api_url", None) == live.url)
    emitter.retry_delays = (0.05, 0.05)

    live.server.stop()
    for i in range(2):  # fail closed while the enforcer is down; the PRE and BLOCK events must survive
        with pytest.raises(ThothPolicyViolation, match="enforcer unavailable"):
            agent.call(0, q=f"down-{i}")
    assert thoth_nb.flush(timeout=10)
    assert emitter.spilled == 4

    # down again while the retries run: the server comes back inside the retry window, nothing spills
    emitter.retry_delays = (0.5, 1.0, 2.0)
    live.server.start()
    live.server.stop()
    open_agent, _ = instrumented(live, session_id=session, fail_open=True)  # same transport and emitter
    assert open_agent.call(0, q="fail-open") == "found fail-open"
    restarter = threading.Timer(0.3, live.server.start)
    spilled_before = emitter.spilled
    restarter.start()
    assert thoth_nb.flush(timeout=10)
    restarter.join()
    assert emitter.spilled == spilled_before

    # a fresh emitter for the same sink (the next kernel) replays the spill file
    fresh = Emitter(emitter.transport, build=build_event)
    assert fresh.replayed == 4
    events = events_of(live, session)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == 6 + 4 + 2
    blocked = [e for e in events if e["event_type"] == "TOOL_CALL_BLOCK"]
    assert len(blocked) == 2 and all("enforcer unavailable" in e["content"] for e in blocked)
    assert fresh.replay_spill() == 0  # nothing left to replay, nothing doubled



def test_server_on_the_embedded_store_resolves_a_notebook_hold(tmp_path: Any, policy_yaml: str) -> None:
    """D5: `thoth-nb serve` on the notebook's own store lets a reviewer release an embedded hold."""
    from thoth_nb import _runtime
    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server import BackgroundServer

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml)
    embedded = Agent()
    thoth_nb.instrument(embedded, agent_id="nb-agent", tenant_id="acme", approved_scope=SCOPE,
                        enforcement="step_up", policy=str(policy), tool_inventory=False)
    db = _runtime.local_store().path
    store = SQLiteStore(db)
    _, key = store.create_api_key("acme", "reviewer", "page")
    store.close()
    with BackgroundServer(db, policy=policy) as server, httpx.Client(
            base_url=server.url, headers={"x-api-key": key}, trust_env=False) as reviewer:
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["result"] = embedded.call(1, to="bob", amount=700)
            outcome["at"] = time.monotonic()

        thread = threading.Thread(target=run)
        thread.start()
        hold = pending_hold(reviewer)
        assert hold["agent_id"] == "nb-agent" and hold["tool_args"] == {"to": "bob", "amount": 700}
        clicked = time.monotonic()
        assert reviewer.post(f"/v1/approvals/{hold['approval_id']}/resolve",
                             json={"decision": "approve"}).status_code == 200
        thread.join(5)
        assert outcome.get("result") == "sent 700 to bob"
        assert outcome["at"] - clicked < 1.0


async def test_interrupting_a_waiting_async_call_cancels_its_hold_on_the_server(live: Any) -> None:
    import asyncio

    async def transfer(to: str, amount: int) -> str:  # pragma: no cover - never allowed to run
        raise AssertionError("must not run")

    governed = thoth_nb.instrument(
        transfer, api_url=live.url, api_key=live.key("acme", "agent"), agent_id="agent-1", tenant_id="acme",
        approved_scope=SCOPE, enforcement="step_up", step_up_poll_interval_ms=5000, tool_inventory=False,
    )
    task = asyncio.ensure_future(governed(to="bob", amount=500))
    reviewer = live.client("acme", "reviewer")
    hold = await asyncio.to_thread(pending_hold, reviewer)
    await asyncio.sleep(0.2)  # inside its long-poll now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = (await asyncio.to_thread(reviewer.get, f"/v1/approvals/{hold['approval_id']}")).json()
    assert record["status"] == "denied" and record["note"] == "the waiting call was interrupted"
