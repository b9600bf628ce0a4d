"""LangChain's agent constructors: `langchain.agents.create_agent` (a LangGraph graph) and the classic
`AgentExecutor` (langchain-classic), each governed by one `instrument()` call, with a scripted model."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

import thoth_nb
from thoth_nb import _runtime
from thoth_nb.integrations import langchain as lc_integration

TENANT = "agents-tenant"


class ScriptedChatModel(FakeMessagesListChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def asks_for(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@pytest.fixture
def counter() -> dict[str, int]:
    return {"search": 0, "delete": 0}


@pytest.fixture
def tools(counter: dict[str, int]) -> list[BaseTool]:
    @tool
    def search(query: str) -> str:
        """Search."""
        counter["search"] += 1
        return f"found {query}"

    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        counter["delete"] += 1
        return "deleted"

    return [search, delete_file]


def govern(obj: Any, **extra: Any) -> Any:
    return thoth_nb.instrument(obj, agent_id="agent", tenant_id=TENANT, approved_scope=["search"],
                               tool_inventory=False, **extra)


def kinds() -> list[str]:
    assert thoth_nb.flush()
    return [e["event_type"] for e in _runtime.local_store().events(TENANT)]


@pytest.fixture(autouse=True)
def _restore() -> Any:
    yield
    lc_integration.LangChainIntegration.teardown()


def test_create_agent(tools: list[BaseTool], counter: dict[str, int]) -> None:
    agents = pytest.importorskip("langchain.agents")
    model = ScriptedChatModel(responses=[asks_for("delete_file", {"path": "/x"}, "c1"),
                                         asks_for("search", {"query": "q"}, "c2"), AIMessage("done")])
    agent = agents.create_agent(model, tools)
    assert govern(agent) is agent
    result = agent.invoke({"messages": [("user", "go")]})
    replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in replies] == ["error", "success"]
    assert "Blocked by Thoth policy" in str(replies[0].content)
    assert counter == {"search": 1, "delete": 0}
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK", "TOOL_CALL_PRE", "TOOL_CALL_POST"]


@pytest.mark.parametrize("use_async", [False, True])
async def test_agent_executor(use_async: bool, tools: list[BaseTool], counter: dict[str, int]) -> None:
    classic = pytest.importorskip("langchain_classic.agents")
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("system", "You help."), ("human", "{input}"),
                                               ("placeholder", "{agent_scratchpad}")])
    model = ScriptedChatModel(responses=[asks_for("delete_file", {"path": "/x"}, "c1"),
                                         asks_for("search", {"query": "q"}, "c2"), AIMessage("done")])
    executor = classic.AgentExecutor(agent=classic.create_tool_calling_agent(model, tools, prompt), tools=tools,
                                     return_intermediate_steps=True)
    assert govern(executor) is executor
    out = await executor.ainvoke({"input": "go"}) if use_async else executor.invoke({"input": "go"})
    observations = {action.tool: observation for action, observation in out["intermediate_steps"]}
    assert str(observations["delete_file"]).startswith("Blocked by Thoth policy")
    assert observations["search"] == "found q"
    assert out["output"] == "done"
    assert counter == {"search": 1, "delete": 0}
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK", "TOOL_CALL_PRE", "TOOL_CALL_POST"]
