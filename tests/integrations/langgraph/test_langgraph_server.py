"""LangGraph interrupt/resume against a live `thoth-nb serve`: an agent key cannot approve its own hold,
so the resumed call waits for a reviewer's decision on the server; an admin key resolves it directly."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import thoth_nb
from thoth_nb.engine.store import SQLiteStore
from thoth_nb.integrations import langchain as lc_integration
from thoth_nb.integrations import langgraph as lg_integration
from thoth_nb.server import BackgroundServer

pytestmark = pytest.mark.timeout(120)

POLICY = """\
version: 1
default: allow
rules:
  - id: mail-needs-human
    tool: send_email
    decision: step_up
    reason: sending mail needs a human
    severity: medium
"""


class ScriptedChatModel(FakeMessagesListChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[BackgroundServer, dict[str, str]]]:
    db = tmp_path / "server.db"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    store = SQLiteStore(db)
    try:
        keys = {role: store.create_api_key("acme", role, f"acme-{role}")[1] for role in ("agent", "reviewer", "admin")}
    finally:
        store.close()
    srv = BackgroundServer(db, policy=policy).start()
    yield srv, keys
    thoth_nb.flush(timeout=5.0)
    srv.stop()
    lg_integration.LangGraphIntegration.teardown()
    lc_integration.LangChainIntegration.teardown()


def paused_agent(url: str, key: str, ran: list[str], thread: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from langgraph.prebuilt import create_react_agent

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        ran.append(to)
        return f"sent to {to}"

    model = ScriptedChatModel(responses=[
        AIMessage("", tool_calls=[{"name": "send_email", "args": {"to": "bob", "body": "hi"}, "id": "c1",
                                   "type": "tool_call"}]),
        AIMessage("finished"),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [send_email], checkpointer=InMemorySaver())
    thoth_nb.instrument(agent, api_url=url, api_key=key, agent_id="agent-1", tenant_id="acme",
                        approved_scope=["send_email"], enforcement="step_up", step_up_poll_interval_ms=200,
                        tool_inventory=False)
    config = {"configurable": {"thread_id": thread}}
    agent.invoke({"messages": [("user", "mail bob")]}, config)
    held = next(i for task in agent.get_state(config).tasks for i in task.interrupts).value
    return agent, config, held


def test_agent_key_resume_waits_for_the_reviewer(server: Any) -> None:
    srv, keys = server
    ran: list[str] = []
    agent, config, held = paused_agent(srv.url, keys["agent"], ran, "srv-1")
    assert held["tool"] == "send_email" and ran == []
    reviewer = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {keys['reviewer']}"},
                            timeout=10.0, trust_env=False)

    def review() -> None:
        time.sleep(0.5)  # the resumed call is waiting on the hold by now
        (item,) = reviewer.get("/v1/approvals").json()["items"]
        response = reviewer.post(f"/v1/approvals/{item['approval_id']}/resolve",
                                 json={"decision": "approve", "reviewer": "ann"})
        assert response.status_code == 200

    thread = threading.Thread(target=review)
    thread.start()
    started = time.monotonic()
    done = agent.invoke(Command(resume={"approve": True}), config)  # the agent's key may not approve
    thread.join(10)
    reviewer.close()
    assert time.monotonic() - started >= 0.4  # it waited for the reviewer
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to bob"]
    assert ran == ["bob"]


def test_admin_key_resume_resolves_the_hold(server: Any) -> None:
    srv, keys = server
    ran: list[str] = []
    agent, config, held = paused_agent(srv.url, keys["admin"], ran, "srv-2")
    assert held["hold_token"]
    done = agent.invoke(Command(resume={"approve": False, "reason": "no"}), config)
    reply = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert reply.status == "error" and "Blocked by Thoth policy" in str(reply.content)
    assert ran == []
