"""OpenAI Agents SDK: function tools governed through thoth_nb.instrument(agent), driven by scripted models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents import Agent, Runner, function_tool  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.integrations.openai_agents import govern_agent, ungovern_agent  # noqa: E402

TENANT = "acme"
CONFIG: dict[str, Any] = {
    "agent_id": "ops-agent",
    "tenant_id": TENANT,
    "approved_scope": ["get_weather"],
    "step_up_poll_interval_ms": 20,
}


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)
    yield


class Tools:
    def __init__(self) -> None:
        self.runs = {"get_weather": 0, "send_email": 0}

        @function_tool
        def get_weather(city: str) -> str:
            """Current weather for a city."""
            self.runs["get_weather"] += 1
            return f"sunny in {city}"

        @function_tool
        async def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.runs["send_email"] += 1
            return f"sent to {to}"

        self.get_weather = get_weather
        self.send_email = send_email


def agent_with(tools: Tools, steps: list[Any]) -> tuple[Agent[Any], ScriptedModel]:
    model = ScriptedModel(steps)
    return Agent(name="ops", model=model, tools=[tools.get_weather, tools.send_email]), model


def tool_outputs(model: ScriptedModel) -> dict[str, str]:
    """call_id -> output of every function_call_output the model was sent."""
    out: dict[str, str] = {}
    for call in model.calls:
        for item in call.input if isinstance(call.input, list) else []:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                out[item["call_id"]] = item["output"]
    return out


def events(kind: str) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == kind]


def wait_for_hold(timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = thoth_nb.holds(tenant_id=TENANT)
        if pending:
            return pending[0]
        time.sleep(0.01)
    raise AssertionError("no hold appeared")


async def test_allow_and_block_reach_the_model() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("get_weather", {"city": "Paris"}, call_id="c1")],
            [function_call("send_email", {"to": "eve@example.com", "body": "hi"}, call_id="c2")],
            [assistant_message("Done.")],
        ],
    )
    assert thoth_nb.instrument(agent, **CONFIG) is agent
    result = await Runner.run(agent, "weather, then email eve")
    assert result.final_output == "Done."
    assert tools.runs == {"get_weather": 1, "send_email": 0}
    outputs = tool_outputs(model)
    assert outputs["c1"] == "sunny in Paris"
    assert outputs["c2"].startswith("Tool call 'send_email' was blocked by policy and did not run")
    assert [e["tool_name"] for e in events("TOOL_CALL_POST")] == ["get_weather"]
    block = events("TOOL_CALL_BLOCK")
    assert [e["tool_name"] for e in block] == ["send_email"]
    assert block[0]["metadata"]["framework"] == "openai_agents"
    # the mailbox is redacted in events (thoth_nb/_redact.py), the domain kept for domain rules
    assert block[0]["metadata"]["tool_args"] == {"to": "[REDACTED:email]@example.com", "body": "hi"}


async def test_step_up_maps_onto_sdk_approval() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("send_email", {"to": "bob@example.com", "body": "report"}, call_id="c1")],
            [assistant_message("Sent.")],
        ],
    )
    thoth_nb.instrument(agent, **{**CONFIG, "enforcement": "step_up"})
    result = await Runner.run(agent, "email bob")
    assert tools.runs["send_email"] == 0
    assert [i.tool_name for i in result.interruptions] == ["send_email"]
    hold = thoth_nb.holds(tenant_id=TENANT)
    assert [(h["tool_name"], h["tool_args"]) for h in hold] == [
        ("send_email", {"to": "bob@example.com", "body": "report"})
    ]
    state = result.to_state()
    state.approve(result.interruptions[0])
    assert thoth_nb.holds("all", tenant_id=TENANT)[0]["status"] == "approved"  # recorded at once
    resumed = await Runner.run(agent, state)
    assert resumed.final_output == "Sent." and tools.runs["send_email"] == 1
    assert tool_outputs(model)["c1"] == "sent to bob@example.com"
    record = thoth_nb.holds("all", tenant_id=TENANT)[0]
    assert record["status"] == "approved" and "Agents SDK" in (record["note"] or "")
    post = events("TOOL_CALL_POST")
    assert post[0]["metadata"]["decision_reason_code"] == "step_up_approved"
    assert len(events("TOOL_CALL_PRE")) == 1  # one decision for the call, not one per phase


async def test_denied_in_thoth_stays_denied_after_sdk_approval() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("send_email", {"to": "bob@example.com", "body": "report"}, call_id="c1")],
            [assistant_message("Could not send.")],
        ],
    )
    thoth_nb.instrument(agent, **{**CONFIG, "enforcement": "step_up"})
    result = await Runner.run(agent, "email bob")
    thoth_nb.deny(thoth_nb.holds(tenant_id=TENANT)[0]["approval_id"], reviewer="alice")
    state = result.to_state()
    state.approve(result.interruptions[0])
    resumed = await Runner.run(agent, state)
    assert resumed.final_output == "Could not send."
    assert tools.runs["send_email"] == 0
    assert "blocked by policy" in tool_outputs(model)["c1"]
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["send_email"]


@pytest.mark.parametrize("deny", [False, True])
async def test_step_up_as_a_blocking_hold(deny: bool) -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("send_email", {"to": "bob@example.com", "body": "report"}, call_id="c1")],
            [assistant_message("Finished.")],
        ],
    )
    govern_agent(agent, step_up="hold", **{**CONFIG, "enforcement": "step_up"})
    seen: dict[str, Any] = {}

    def reviewer() -> None:
        seen["hold"] = wait_for_hold()
        (thoth_nb.deny if deny else thoth_nb.approve)(seen["hold"]["approval_id"], reviewer="alice")

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    result = await Runner.run(agent, "email bob")
    thread.join(5)
    assert not result.interruptions and result.final_output == "Finished."
    assert seen["hold"]["tool_name"] == "send_email"
    assert tools.runs["send_email"] == (0 if deny else 1)
    output = tool_outputs(model)["c1"]
    assert ("blocked by policy" in output) if deny else output == "sent to bob@example.com"


async def test_on_block_raise_stops_the_run() -> None:
    tools = Tools()
    agent, _ = agent_with(tools, [[function_call("send_email", {"to": "x@y.z", "body": "b"}, call_id="c1")]])
    thoth_nb.instrument(agent, on_block="raise", **CONFIG)
    with pytest.raises(Exception) as info:
        await Runner.run(agent, "go")
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, thoth_nb.ThothPolicyViolation) for e in chain)
    assert tools.runs["send_email"] == 0


async def test_real_openai_client_against_the_fake_server() -> None:
    openai = pytest.importorskip("openai")
    from agents import OpenAIChatCompletionsModel

    from thoth_nb.testing import FakeLLMServer, call_tool

    tools = Tools()
    with FakeLLMServer([call_tool("get_weather", city="Oslo")]) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        agent = Agent(
            name="ops",
            tools=[tools.get_weather, tools.send_email],
            model=OpenAIChatCompletionsModel(model="gpt-test", openai_client=client),
        )
        thoth_nb.instrument(agent, **CONFIG)
        result = await Runner.run(agent, "weather in Oslo?")
        await client.close()
    assert tools.runs["get_weather"] == 1
    assert result.final_output == "Tool results: sunny in Oslo"


def test_shapes_reinstrument_and_restore() -> None:
    tools = Tools()
    agent, _ = agent_with(tools, [])
    helper = Agent(name="helper", tools=[tools.send_email])
    agent.handoffs.append(helper)
    thoth_nb.instrument(agent, **CONFIG)
    first = tools.send_email.on_invoke_tool
    thoth_nb.instrument(agent, **CONFIG)  # again: re-pointed, not wrapped twice
    assert tools.send_email.on_invoke_tool is first
    assert type(first).__name__ == "_GovernedInvoker"
    ungovern_agent(agent)
    assert type(tools.send_email.on_invoke_tool).__name__ != "_GovernedInvoker"
    assert isinstance(tools.send_email.needs_approval, bool)
    with pytest.raises(thoth_nb.ThothConfigError, match="no function tools"):
        thoth_nb.instrument(Agent(name="empty"), **CONFIG)
    with pytest.raises(thoth_nb.ThothConfigError, match="step_up"):
        govern_agent(agent, step_up="later", **CONFIG)


async def test_streamed_run_is_governed_too() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("get_weather", {"city": "Lima"}, call_id="c1")],
            [function_call("send_email", {"to": "x@y.z", "body": "b"}, call_id="c2")],
            [assistant_message("Done.")],
        ],
    )
    thoth_nb.instrument(agent, **CONFIG)
    streamed = Runner.run_streamed(agent, "go")
    kinds = [event.type async for event in streamed.stream_events()]
    assert "run_item_stream_event" in kinds and streamed.final_output == "Done."
    assert tools.runs == {"get_weather": 1, "send_email": 0}
    assert "blocked by policy" in tool_outputs(model)["c2"]


async def test_reviewer_can_modify_the_arguments() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("send_email", {"to": "everyone@example.com", "body": "report"}, call_id="c1")],
            [assistant_message("Sent.")],
        ],
    )
    govern_agent(agent, step_up="hold", **{**CONFIG, "enforcement": "step_up"})

    def reviewer() -> None:
        hold = wait_for_hold()
        thoth_nb.approve(hold["approval_id"], modified_args={"to": "team@example.com", "body": "report"})

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    await Runner.run(agent, "email everyone")
    thread.join(5)
    assert tool_outputs(model)["c1"] == "sent to team@example.com"


class InProcessMCPServer(agents.mcp.MCPServer):
    """An Agents SDK MCP server backed by mcp.Client(MCPServer) in memory (no subprocess, no network)."""

    def __init__(self, server: Any) -> None:
        super().__init__()
        self._server = server
        self._cm: Any = None
        self.client: Any = None

    @property
    def name(self) -> str:
        return "files"

    async def connect(self) -> None:
        from mcp import Client

        self._cm = Client(self._server)
        self.client = await self._cm.__aenter__()

    async def cleanup(self) -> None:
        await self._cm.__aexit__(None, None, None)

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[Any]:
        return list((await self.client.list_tools()).tools)

    async def call_tool(self, tool_name: str, arguments: dict[str, Any] | None, meta: Any = None) -> Any:
        return await self.client.call_tool(tool_name, arguments)

    async def list_prompts(self) -> Any:
        return await self.client.list_prompts()

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self.client.get_prompt(name, arguments)


async def test_agent_mcp_servers_are_governed() -> None:
    pytest.importorskip("mcp")
    from mcp.server.mcpserver import MCPServer

    runs = {"read_file": 0, "delete_file": 0}
    files = MCPServer("files")

    @files.tool()
    def read_file(path: str) -> str:
        """Read a file."""
        runs["read_file"] += 1
        return f"contents of {path}"

    @files.tool()
    def delete_file(path: str) -> str:
        """Delete a file."""
        runs["delete_file"] += 1
        return "deleted"

    server = InProcessMCPServer(files)
    model = ScriptedModel(
        [
            [function_call("read_file", {"path": "a.txt"}, call_id="c1")],
            [function_call("delete_file", {"path": "a.txt"}, call_id="c2")],
            [assistant_message("Done.")],
        ]
    )
    agent = Agent(name="ops", model=model, mcp_servers=[server])
    thoth_nb.instrument(agent, **{**CONFIG, "approved_scope": ["files.read_file"]})
    await server.connect()
    try:
        result = await Runner.run(agent, "read then delete a.txt")
    finally:
        await server.cleanup()
    assert result.final_output == "Done."
    assert runs == {"read_file": 1, "delete_file": 0}
    outputs = tool_outputs(model)
    assert "contents of a.txt" in str(outputs["c1"]) and "blocked by policy" in str(outputs["c2"])
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["files.delete_file"]
    ungovern_agent(agent)
    assert "call_tool" not in vars(server)


async def test_sdk_rejection_denies_the_hold() -> None:
    tools = Tools()
    agent, model = agent_with(
        tools,
        [
            [function_call("send_email", {"to": "bob@example.com", "body": "report"}, call_id="c1")],
            [assistant_message("Not sent.")],
        ],
    )
    thoth_nb.instrument(agent, **{**CONFIG, "enforcement": "step_up"})
    result = await Runner.run(agent, "email bob")
    state = result.to_state()
    state.reject(result.interruptions[0], rejection_message="no emails today")
    record = thoth_nb.holds("all", tenant_id=TENANT)[0]
    assert record["status"] == "denied" and "RunState.reject" in record["note"]
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["send_email"]
    resumed = await Runner.run(agent, state)
    assert resumed.final_output == "Not sent." and tools.runs["send_email"] == 0
    assert tool_outputs(model)["c1"] == "no emails today"


def test_patch_once_and_restore_on_unload() -> None:
    from agents.run_context import RunContextWrapper

    from thoth_nb.integrations import installed
    from thoth_nb.integrations.openai_agents import OpenAIAgentsIntegration

    tools = Tools()
    agent, _ = agent_with(tools, [])
    thoth_nb.instrument(agent, **CONFIG)
    patched = RunContextWrapper.reject_tool
    assert hasattr(patched, "__wrapped__") and "openai_agents" in installed()
    thoth_nb.instrument(agent, **CONFIG)
    assert RunContextWrapper.reject_tool is patched  # not patched twice
    OpenAIAgentsIntegration.teardown()  # what %unload_ext does through teardown_all(), for this one only
    assert not hasattr(RunContextWrapper.reject_tool, "__wrapped__")
    thoth_nb.instrument(agent, **CONFIG)  # installs again
    assert hasattr(RunContextWrapper.reject_tool, "__wrapped__")


async def test_a_list_of_function_tools() -> None:
    tools = Tools()
    governed_tools = thoth_nb.instrument([tools.get_weather, tools.send_email], **CONFIG)
    model = ScriptedModel(
        [
            [function_call("send_email", {"to": "a@b.c", "body": "x"}, call_id="c1")],
            [assistant_message("ok")],
        ]
    )
    await Runner.run(Agent(name="ops", model=model, tools=governed_tools), "go")
    assert tools.runs["send_email"] == 0 and "blocked by policy" in tool_outputs(model)["c1"]
