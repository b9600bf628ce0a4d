"""LangGraph ToolNode / ReAct agents governed by thoth_nb, with scripted fake chat models (no network)."""

from __future__ import annotations

import importlib.metadata
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, tools_condition
from langgraph.types import Command

try:
    from langgraph.prebuilt import ToolRuntime
except ImportError:  # langgraph < 1.0
    ToolRuntime = None

import thoth_nb
from thoth_nb import _runtime
from thoth_nb.integrations import langchain as lc_integration
from thoth_nb.integrations import langgraph as lg_integration

TENANT = "lg-tenant"
POLICY = """\
version: 1
default: allow
scope_violation: {decision: block, severity: high, hard: true}
rules:
  - id: mail-needs-human
    tool: send_email
    decision: step_up
    reason: sending mail needs a human
    severity: medium
"""


class ScriptedChatModel(FakeMessagesListChatModel):
    """Replays scripted AIMessages (with tool calls); `bind_tools` keeps the script."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


def react_agent(model: Any, tools: list[Any], **kwargs: Any) -> Any:
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():  # deprecated in favour of langchain.agents.create_agent (not installed)
        warnings.simplefilter("ignore")
        return create_react_agent(model, tools, **kwargs)


def hand_built_agent(model: Any, tools: list[Any], **compile_kwargs: Any) -> Any:
    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(**compile_kwargs)


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return str(path)


@pytest.fixture
def counter() -> dict[str, int]:
    return {"search": 0, "delete": 0, "send_email": 0}


@pytest.fixture
def tools(counter: dict[str, int]) -> list[BaseTool]:
    @tool
    def search(query: str) -> str:
        """Search the docs."""
        counter["search"] += 1
        get_stream_writer()({"progress": f"searching {query}"})
        return f"results for {query}"

    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        counter["delete"] += 1
        get_stream_writer()({"progress": f"deleting {path}"})
        return f"deleted {path}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        counter["send_email"] += 1
        return f"sent to {to}"

    return [search, delete_file, send_email]


def interrupts(agent: Any, config: Any) -> list[Any]:
    """The pending interrupts of a paused run (graph state works on every langgraph version; the
    `__interrupt__` key of invoke's result is newer)."""
    return [i for task in agent.get_state(config).tasks for i in task.interrupts]


LANGGRAPH_1 = int(importlib.metadata.version("langgraph").split(".")[0]) >= 1


def govern(obj: Any, **extra: Any) -> Any:
    options = {"agent_id": "lg-agent", "tenant_id": TENANT, "approved_scope": ["search", "send_email"],
               "tool_inventory": False, "step_up_poll_interval_ms": 50, **extra}
    return thoth_nb.instrument(obj, **options)


def events() -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return _runtime.local_store().events(TENANT)


def kinds() -> list[str]:
    return [e["event_type"] for e in events()]


@pytest.fixture(autouse=True)
def _restore() -> Any:
    yield
    lg_integration.LangGraphIntegration.teardown()
    lc_integration.LangChainIntegration.teardown()


def test_react_agent_allowed_tool_runs(tools: list[BaseTool], counter: dict[str, int]) -> None:
    model = ScriptedChatModel(responses=[tool_call("search", {"query": "llamas"}, "c1"), AIMessage("done")])
    agent = react_agent(model, tools)
    assert govern(agent) is agent
    result = agent.invoke({"messages": [("user", "find llamas")]})
    reply = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert reply.content == "results for llamas" and reply.status == "success"
    assert counter["search"] == 1
    evs = events()
    assert [e["event_type"] for e in evs] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    assert evs[1]["metadata"]["framework"] == "langgraph"
    assert evs[1]["metadata"]["tool_args"] == {"query": "llamas"}


def test_react_agent_blocked_tool_is_an_error_the_model_sees(tools: list[BaseTool], counter: dict[str, int]) -> None:
    model = ScriptedChatModel(responses=[tool_call("delete_file", {"path": "/tmp/x"}, "c1"),
                                         AIMessage("I could not delete it")])
    agent = govern(react_agent(model, tools))
    result = agent.invoke({"messages": [("user", "delete /tmp/x")]})
    reply = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert reply.status == "error" and reply.tool_call_id == "c1"
    assert "Blocked by Thoth policy" in str(reply.content) and "approved scope" in str(reply.content)
    assert result["messages"][-1].content == "I could not delete it"  # the agent went on
    assert counter["delete"] == 0
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]


def test_on_block_raise_stops_the_graph(tools: list[BaseTool], counter: dict[str, int]) -> None:
    if not LANGGRAPH_1:
        pytest.skip("before langgraph 1.0 ToolNode(handle_tool_errors=True) turns every exception into a message")
    model = ScriptedChatModel(responses=[tool_call("delete_file", {"path": "/tmp/x"}, "c1"), AIMessage("x")])
    agent = govern(hand_built_agent(model, tools), on_block="raise")
    with pytest.raises(thoth_nb.ThothPolicyViolation, match="approved scope"):
        agent.invoke({"messages": [("user", "delete")]})
    assert counter["delete"] == 0


def test_toolnode_built_from_plain_functions() -> None:
    ran: list[str] = []

    def search(query: str) -> str:
        """Search."""
        ran.append(query)
        return "found"

    def delete_file(path: str) -> str:
        """Delete."""
        ran.append(path)
        return "deleted"

    node = ToolNode([search, delete_file])
    assert govern(node) is node
    builder = StateGraph(MessagesState)
    builder.add_node("tools", node)
    builder.add_edge(START, "tools")
    out = builder.compile().invoke({"messages": [AIMessage("", tool_calls=[
        {"name": "search", "args": {"query": "q"}, "id": "a", "type": "tool_call"},
        {"name": "delete_file", "args": {"path": "/p"}, "id": "b", "type": "tool_call"},
    ])]})
    by_id = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert by_id["a"].content == "found"
    assert by_id["b"].status == "error" and "Blocked by Thoth policy" in str(by_id["b"].content)
    assert ran == ["q"]
    assert sorted(kinds()) == sorted(["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"])


def test_tool_streaming_only_for_allowed_calls(tools: list[BaseTool], counter: dict[str, int]) -> None:
    model = ScriptedChatModel(responses=[
        AIMessage("", tool_calls=[{"name": "search", "args": {"query": "q"}, "id": "s", "type": "tool_call"},
                                  {"name": "delete_file", "args": {"path": "/p"}, "id": "d", "type": "tool_call"}]),
        AIMessage("done"),
    ])
    agent = govern(react_agent(model, tools))
    custom = [chunk for mode, chunk in agent.stream({"messages": [("user", "go")]}, stream_mode=["custom", "updates"])
              if mode == "custom"]
    assert custom == [{"progress": "searching q"}]  # the blocked tool never ran, so it never streamed
    assert counter == {"search": 1, "delete": 0, "send_email": 0}


def _resolve_when_held(outcome: dict[str, Any], approve: bool) -> threading.Thread:
    def worker() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = thoth_nb.holds(tenant_id=TENANT)
            if pending:
                outcome["hold"] = pending[0]
                (thoth_nb.approve if approve else thoth_nb.deny)(pending[0]["hold_token"], reviewer="tester")
                return
            time.sleep(0.02)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread


def test_step_up_without_checkpointer_waits_for_approval(tools: list[BaseTool], counter: dict[str, int],
                                                         policy: str) -> None:
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "bob", "body": "hi"}, "c1"), AIMessage("ok")])
    agent = govern(hand_built_agent(model, tools), policy=policy, enforcement="step_up")
    outcome: dict[str, Any] = {}
    thread = _resolve_when_held(outcome, approve=True)
    result = agent.invoke({"messages": [("user", "mail bob")]})
    thread.join(5)
    assert outcome["hold"]["tool_name"] == "send_email"
    assert [m.content for m in result["messages"] if isinstance(m, ToolMessage)] == ["sent to bob"]
    assert counter["send_email"] == 1
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]


@pytest.mark.parametrize("build", [react_agent, hand_built_agent])
@pytest.mark.parametrize("answer", [{"approve": True}, {"approve": False, "reason": "not today"}])
def test_step_up_with_checkpointer_is_an_interrupt(build: Any, answer: dict[str, Any], tools: list[BaseTool],
                                                   counter: dict[str, int], policy: str) -> None:
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "bob", "body": "hi"}, "c1"),
                                         AIMessage("finished")])
    agent = govern(build(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": "t-1"}}
    agent.invoke({"messages": [("user", "mail bob")]}, config)
    (held,) = interrupts(agent, config)
    assert held.value["type"] == "thoth_step_up"
    assert held.value["tool"] == "send_email"
    assert held.value["tool_args"] == {"to": "bob", "body": "hi"}
    assert held.value["reason"] == "sending mail needs a human"
    assert counter["send_email"] == 0
    (pending,) = thoth_nb.holds(tenant_id=TENANT)
    assert pending["hold_token"] == held.value["hold_token"]

    done = agent.invoke(Command(resume=answer), config)
    reply = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert done["messages"][-1].content == "finished"
    assert thoth_nb.holds(tenant_id=TENANT) == []
    (record,) = thoth_nb.holds("all", tenant_id=TENANT)
    if answer["approve"]:
        assert reply.content == "sent to bob" and reply.status == "success"
        assert counter["send_email"] == 1
        assert record["status"] == "approved"
        assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]  # one governed call across the pause
        assert events()[1]["metadata"]["decision_reason_code"] == "step_up_approved"
    else:
        assert reply.status == "error" and "Blocked by Thoth policy" in str(reply.content)
        assert counter["send_email"] == 0
        assert record["status"] == "denied"
        assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]


@pytest.mark.parametrize("async_tool", [True, False])
async def test_step_up_interrupt_async(async_tool: bool, tools: list[BaseTool], counter: dict[str, int],
                                       policy: str) -> None:
    if async_tool:  # arun; otherwise ainvoke runs the sync tool's invoke in a worker thread

        @tool
        async def send_email(to: str, body: str) -> str:
            """Send an email."""
            counter["send_email"] += 1
            return f"sent to {to}"

        tools = [*tools[:2], send_email]
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "ann", "body": "hi"}, "c1"),
                                         AIMessage("finished")])
    agent = govern(react_agent(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": "t-async"}}
    await agent.ainvoke({"messages": [("user", "mail ann")]}, config)
    assert interrupts(agent, config)[0].value["tool"] == "send_email"
    done = await agent.ainvoke(Command(resume=True), config)
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to ann"]
    assert counter["send_email"] == 1
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]


def test_resume_after_the_paused_call_is_gone_answers_a_new_hold(tools: list[BaseTool], counter: dict[str, int],
                                                                 policy: str) -> None:
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "bob", "body": "hi"}, "c1"),
                                         AIMessage("finished")])
    agent = govern(react_agent(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": "t-2"}}
    agent.invoke({"messages": [("user", "mail bob")]}, config)
    assert len(lg_integration.pending()) == 1
    lg_integration.LangGraphIntegration.teardown()  # e.g. the kernel restarted: the paused flow is gone
    assert lg_integration.pending() == []
    done = agent.invoke(Command(resume={"approve": True}), config)
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to bob"]
    assert counter["send_email"] == 1
    statuses = sorted(h["status"] for h in thoth_nb.holds("all", tenant_id=TENANT))
    assert statuses == ["approved", "denied"]  # the dropped hold was cancelled, the new one approved


@pytest.mark.parametrize(("value", "approve"), [
    (True, True), (False, False), ({"approve": True}, True), ({"approve": False}, False),
    ({"decision": "approve"}, True), ({"decision": "deny"}, False), ("approve", True), ("no", False),
    ({"something": 1}, False), (None, False), (42, False),
])
def test_parse_resume_fails_closed(value: Any, approve: bool) -> None:
    assert lg_integration.parse_resume(value)[0] is approve


def test_graph_without_tools_is_an_error() -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("echo", lambda state: {"messages": []})
    builder.add_edge(START, "echo")
    graph = builder.compile()
    with pytest.raises(thoth_nb.ThothConfigError, match="no LangGraph tools"):
        govern(graph)


def test_resume_value_naming_another_hold_denies(tools: list[BaseTool], counter: dict[str, int],
                                                 policy: str) -> None:
    def paused_agent(thread: str, to: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        model = ScriptedChatModel(responses=[tool_call("send_email", {"to": to, "body": "hi"}, f"c-{thread}"),
                                             AIMessage("finished")])
        agent = govern(react_agent(model, tools, checkpointer=InMemorySaver()), policy=policy,
                       enforcement="step_up")
        config = {"configurable": {"thread_id": thread}}
        agent.invoke({"messages": [("user", "mail")]}, config)
        held = interrupts(agent, config)[0].value
        return agent, config, held

    first, first_config, first_held = paused_agent("one", "ann")
    second, second_config, second_held = paused_agent("two", "bob")
    assert first_held["resume_with"] == {"approve": True, "hold_token": first_held["hold_token"]}

    # an approval meant for the second call reaches the first: it must not approve it
    done = first.invoke(Command(resume={"approve": True, "hold_token": second_held["hold_token"]}), first_config)
    reply = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert reply.status == "error" and "the resume value was for another held call" in str(reply.content)
    assert counter["send_email"] == 0
    assert [h["hold_token"] for h in thoth_nb.holds(tenant_id=TENANT)] == [second_held["hold_token"]]

    done = second.invoke(Command(resume=second_held["resume_with"]), second_config)
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to bob"]
    assert counter["send_email"] == 1


def test_resume_naming_the_lost_hold_of_the_same_call_is_accepted(tools: list[BaseTool], counter: dict[str, int],
                                                                  policy: str) -> None:
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "bob", "body": "hi"}, "c1"),
                                         AIMessage("finished")])
    agent = govern(react_agent(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": "t-3"}}
    agent.invoke({"messages": [("user", "mail bob")]}, config)
    held = interrupts(agent, config)[0].value
    with lg_integration._pending_lock:  # the paused flow is lost (as after a kernel restart), the hold is not
        lg_integration._pending.clear()
    done = agent.invoke(Command(resume=held["resume_with"]), config)
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to bob"]
    assert counter["send_email"] == 1
    records = {h["hold_token"]: h["status"] for h in thoth_nb.holds("all", tenant_id=TENANT)}
    assert records[held["hold_token"]] != "pending" and "approved" in records.values()


@pytest.mark.parametrize("use_async", [False, True])
async def test_siblings_of_a_held_call_in_one_step_run_once(use_async: bool, tools: list[BaseTool],
                                                            counter: dict[str, int], policy: str) -> None:
    model = ScriptedChatModel(responses=[
        AIMessage("", tool_calls=[{"name": "search", "args": {"query": "q"}, "id": "s1", "type": "tool_call"},
                                  {"name": "delete_file", "args": {"path": "/p"}, "id": "d1", "type": "tool_call"},
                                  {"name": "send_email", "args": {"to": "bob", "body": "hi"}, "id": "m1",
                                   "type": "tool_call"}]),
        AIMessage("finished"),
    ])
    agent = govern(hand_built_agent(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": f"t-siblings-{use_async}"}}
    start: Any = {"messages": [("user", "go")]}
    await agent.ainvoke(start, config) if use_async else agent.invoke(start, config)
    assert interrupts(agent, config)[0].value["tool"] == "send_email"
    assert counter["search"] <= 1 and counter["delete"] == counter["send_email"] == 0
    resume = Command(resume={"approve": True})
    done = await agent.ainvoke(resume, config) if use_async else agent.invoke(resume, config)
    replies = {m.tool_call_id: m for m in done["messages"] if isinstance(m, ToolMessage)}
    assert replies["s1"].content == "results for q"
    assert replies["d1"].status == "error"
    assert replies["m1"].content == "sent to bob"
    assert counter == {"search": 1, "delete": 0, "send_email": 1}  # the node re-ran; the tools did not
    evs = events()
    assert sorted((e["tool_name"], e["event_type"]) for e in evs) == sorted([
        ("search", "TOOL_CALL_PRE"), ("search", "TOOL_CALL_POST"),
        ("delete_file", "TOOL_CALL_PRE"), ("delete_file", "TOOL_CALL_BLOCK"),
        ("send_email", "TOOL_CALL_PRE"), ("send_email", "TOOL_CALL_POST"),
    ])


def test_injected_arguments_are_not_tool_args(counter: dict[str, int]) -> None:
    if ToolRuntime is None:
        pytest.skip("ToolRuntime is new in langgraph 1.0")
    @tool
    def lookup(query: str, runtime: ToolRuntime, state: Annotated[dict, InjectedState]) -> str:
        """Look something up."""
        counter["search"] += 1
        return f"{query} for call {runtime.tool_call_id} after {len(state['messages'])} messages"

    model = ScriptedChatModel(responses=[tool_call("lookup", {"query": "q"}, "c7"), AIMessage("done")])
    agent = govern(react_agent(model, [lookup]), approved_scope=["lookup"])
    result = agent.invoke({"messages": [("user", "go")]})
    reply = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert reply.content == "q for call c7 after 2 messages"
    evs = events()
    assert [e["event_type"] for e in evs] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    assert evs[0]["metadata"]["tool_args"] == {"query": "q"}


def test_tools_stream_mode_shows_the_block_as_a_tool_error(tools: list[BaseTool], counter: dict[str, int]) -> None:
    model = ScriptedChatModel(responses=[
        AIMessage("", tool_calls=[{"name": "delete_file", "args": {"path": "/x"}, "id": "d", "type": "tool_call"},
                                  {"name": "search", "args": {"query": "q"}, "id": "s", "type": "tool_call"}]),
        AIMessage("done"),
    ])
    agent = govern(react_agent(model, tools))
    try:
        chunks = [chunk for _, chunk in agent.stream({"messages": [("user", "go")]}, stream_mode=["tools"])]
    except ValueError as exc:  # pragma: no cover - langgraph before the `tools` stream mode
        pytest.skip(f"no tools stream mode: {exc}")
    if not chunks:
        pytest.skip("this langgraph has no `tools` stream mode")
    by_call = {(c["tool_call_id"], c["event"]): c for c in chunks}
    assert ("d", "tool-started") in by_call and ("s", "tool-finished") in by_call
    assert "not in the approved scope" in by_call[("d", "tool-error")]["message"]
    assert ("d", "tool-finished") not in by_call
    assert counter["delete"] == 0


def test_resume_with_modified_args(tools: list[BaseTool], counter: dict[str, int], policy: str) -> None:
    model = ScriptedChatModel(responses=[tool_call("send_email", {"to": "all@corp", "body": "hi"}, "c1"),
                                         AIMessage("finished")])
    agent = govern(react_agent(model, tools, checkpointer=InMemorySaver()), policy=policy, enforcement="step_up")
    config = {"configurable": {"thread_id": "t-modify"}}
    agent.invoke({"messages": [("user", "mail everyone")]}, config)
    held = interrupts(agent, config)[0].value
    answer = {**held["resume_with"], "modified_args": {"to": "team@corp", "body": "hi"}}
    done = agent.invoke(Command(resume=answer), config)
    assert [m.content for m in done["messages"] if isinstance(m, ToolMessage)] == ["sent to team@corp"]
    assert counter["send_email"] == 1
