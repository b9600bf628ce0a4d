"""run_openai_tools / arun_openai_tools with the real OpenAI client against a local fake API server."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

openai = pytest.importorskip("openai")

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.integrations.openai import arun_openai_tools, openai_tool_specs, run_openai_tools  # noqa: E402
from thoth_nb.testing import FakeLLMServer, call_tool, call_tools, reply  # noqa: E402

TENANT = "acme"
CONFIG: dict[str, Any] = {
    "agent_id": "weather-bot",
    "tenant_id": TENANT,
    "approved_scope": ["get_weather"],
    "step_up_poll_interval_ms": 20,
}


_CLIENTS: list[Any] = []


def tracked(client: Any) -> Any:
    """Remember a client so the fixture below closes it (no unclosed sockets left for later tests)."""
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Any:
    yield
    while _CLIENTS:
        client = _CLIENTS.pop()
        close = client.close()
        if close is not None:  # an async client: close it on a fresh loop
            import asyncio

            asyncio.run(close)


class Tools:
    """Tool bodies that count their runs, so a test can prove a blocked body never ran."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {"get_weather": 0, "send_email": 0}

    def get_weather(self, city: str, unit: str = "C") -> dict[str, Any]:
        """Current weather for a city."""
        self.runs["get_weather"] += 1
        return {"city": city, "temp": 21, "unit": unit}

    def send_email(self, to: str, body: str) -> str:
        """Send an email."""
        self.runs["send_email"] += 1
        return f"sent to {to}"

    def functions(self) -> dict[str, Any]:
        return {"get_weather": self.get_weather, "send_email": self.send_email}


def events(kind: str | None = None) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    found = _runtime.local_store().events(TENANT)
    return [e for e in found if kind is None or e["event_type"] == kind]


def approve_when_held(*, deny: bool = False, timeout: float = 10.0) -> tuple[threading.Thread, dict[str, Any]]:
    """A reviewer on another thread: waits for the first pending hold, then approves (or denies) it."""
    seen: dict[str, Any] = {}

    def review() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = thoth_nb.holds(tenant_id=TENANT)
            if pending:
                seen["hold"] = pending[0]
                (thoth_nb.deny if deny else thoth_nb.approve)(pending[0]["approval_id"], reviewer="alice")
                return
            time.sleep(0.01)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread, seen


@pytest.fixture
def tools() -> Tools:
    return Tools()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_allowed_call_runs_and_is_recorded(tools: Tools, api: str) -> None:
    with FakeLLMServer([call_tool("get_weather", city="Paris"), reply("Sunny, 21C.")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = run_openai_tools(
            client,
            model="gpt-test",
            messages="Weather in Paris?",
            api=api,
            functions=tools.functions(),
            **CONFIG,
        )
    assert result.stopped == "done" and result.text == "Sunny, 21C."
    assert tools.runs["get_weather"] == 1
    assert [(c.name, c.outcome) for c in result.calls] == [("get_weather", "ok")]
    second = server.requests[1]["body"]
    if api == "chat":
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_1_0",
            "content": '{"city": "Paris", "temp": 21, "unit": "C"}',
        }
        assert result.final.content == "Sunny, 21C."
    else:
        assert second["input"][-1]["type"] == "function_call_output"
        assert second["input"][-1]["call_id"] == "call_1_0"
        assert result.final.output_text == "Sunny, 21C."
    post = events("TOOL_CALL_POST")
    assert [e["tool_name"] for e in post] == ["get_weather"]
    assert post[0]["metadata"]["tool_args"] == {"city": "Paris"}
    assert post[0]["metadata"]["framework"] == "openai"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_blocked_call_never_runs_and_the_model_is_told(tools: Tools, api: str) -> None:
    with FakeLLMServer([call_tool("send_email", to="eve@example.com", body="hi")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = run_openai_tools(
            client, model="gpt-test", messages="Email Eve", api=api, functions=tools.functions(), **CONFIG
        )
    assert tools.runs["send_email"] == 0
    assert [c.outcome for c in result.calls] == ["blocked"]
    # the fake model echoes the tool result it received: the refusal reached the model
    assert "blocked by policy" in result.text and "not in the approved scope" in result.text
    block = events("TOOL_CALL_BLOCK")
    assert [e["tool_name"] for e in block] == ["send_email"]
    assert not events("TOOL_CALL_POST")


def test_step_up_approved_from_another_thread(tools: Tools) -> None:
    thread, seen = approve_when_held()
    with FakeLLMServer([call_tool("send_email", to="bob@example.com", body="report"), reply("Sent.")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = run_openai_tools(
            client,
            model="gpt-test",
            messages="Email Bob",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
    thread.join(5)
    assert seen["hold"]["tool_name"] == "send_email"
    assert seen["hold"]["tool_args"] == {"to": "bob@example.com", "body": "report"}
    assert tools.runs["send_email"] == 1
    assert result.calls[0].outcome == "ok" and result.text == "Sent."
    post = events("TOOL_CALL_POST")
    assert post[0]["metadata"]["decision_reason_code"] == "step_up_approved"
    assert post[0]["metadata"]["reviewer"] == "alice"


def test_step_up_denied_is_a_block(tools: Tools) -> None:
    thread, _ = approve_when_held(deny=True)
    with FakeLLMServer([call_tool("send_email", to="bob@example.com", body="report")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = run_openai_tools(
            client,
            model="gpt-test",
            messages="Email Bob",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
    thread.join(5)
    assert tools.runs["send_email"] == 0
    assert result.calls[0].outcome == "blocked"
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["send_email"]


async def test_async_client_allow_block_and_step_up(tools: Tools) -> None:
    thread, seen = approve_when_held()
    script = [
        call_tools(("get_weather", {"city": "Oslo"}), ("send_email", {"to": "a@b.c", "body": "x"})),
        reply("Done."),
    ]
    with FakeLLMServer(script) as server:
        client = tracked(openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = await arun_openai_tools(
            client,
            model="gpt-test",
            messages="Go",
            api="responses",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
        await client.close()
    thread.join(5)
    assert seen["hold"]["tool_name"] == "send_email"
    assert tools.runs == {"get_weather": 1, "send_email": 1}
    assert [c.outcome for c in result.calls] == ["ok", "ok"]


async def test_async_tools_and_block(tools: Tools) -> None:
    runs: list[str] = []

    async def lookup(query: str) -> str:
        """Search the docs."""
        runs.append(query)
        return "found"

    with FakeLLMServer([call_tool("lookup", query="../../etc/passwd")]) as server:
        client = tracked(openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = await arun_openai_tools(
            client,
            model="gpt-test",
            messages="Go",
            functions=[lookup],
            agent_id="a",
            tenant_id=TENANT,
            approved_scope=["lookup"],
        )
        await client.close()
    assert runs == []
    assert result.calls[0].outcome == "blocked" and "path traversal" in result.calls[0].output


def test_on_block_raise(tools: Tools) -> None:
    with FakeLLMServer([call_tool("send_email", to="eve@example.com", body="hi")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
            run_openai_tools(
                client,
                model="gpt-test",
                messages="x",
                functions=tools.functions(),
                on_block="raise",
                **CONFIG,
            )
    assert info.value.tool_name == "send_email"
    assert tools.runs["send_email"] == 0


def test_tool_specs_are_derived_and_sent(tools: Tools) -> None:
    with FakeLLMServer([reply("Hi.")]) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        run_openai_tools(client, model="gpt-test", messages="Hi", functions=tools.functions(), **CONFIG)
    sent = server.requests[0]["body"]["tools"]
    assert sent == openai_tool_specs(tools.functions())
    weather = sent[0]["function"]
    assert weather["name"] == "get_weather" and weather["description"] == "Current weather for a city."
    assert weather["parameters"]["required"] == ["city"]
    assert weather["parameters"]["properties"]["unit"] == {"default": "C", "type": "string"}
    responses_spec = openai_tool_specs(tools.functions(), api="responses")[0]
    assert responses_spec["name"] == "get_weather" and "function" not in responses_spec


def test_prewrapped_functions_failing_tool_and_max_turns(tools: Tools) -> None:
    def flaky(n: int) -> int:
        raise RuntimeError("disk full")

    wrapped = thoth_nb.wrap_openai_tools(
        {"flaky": flaky, "get_weather": tools.get_weather},
        **{**CONFIG, "approved_scope": ["flaky", "get_weather"]},
    )
    script = [
        call_tool("flaky", n=1),
        call_tool("get_weather", city="Rome"),
        call_tool("get_weather", city="Rome"),
    ]
    with FakeLLMServer(script) as server:
        client = tracked(openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0))
        result = run_openai_tools(client, model="gpt-test", messages="x", functions=wrapped, max_turns=2)
    assert result.stopped == "max_turns" and result.turns == 2
    assert [(c.name, c.outcome) for c in result.calls] == [("flaky", "error"), ("get_weather", "ok")]
    assert result.calls[0].output == "Tool error: RuntimeError: disk full"
    assert server.remaining == 1


def test_wrong_client_kind_and_bad_options(tools: Tools) -> None:
    sync_client = tracked(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test"))
    async_client = tracked(openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="test"))
    with pytest.raises(TypeError, match="arun_openai_tools"):
        run_openai_tools(async_client, model="m", messages="x", functions=tools.functions(), **CONFIG)
    with pytest.raises(thoth_nb.ThothConfigError, match="api must be"):
        run_openai_tools(sync_client, model="m", messages="x", functions=tools.functions(), api="assistants", **CONFIG)
    with pytest.raises(thoth_nb.ThothConfigError, match="on_block"):
        run_openai_tools(sync_client, model="m", messages="x", functions=tools.functions(), on_block="ignore", **CONFIG)


async def test_top_level_helpers(tools: Tools) -> None:
    with FakeLLMServer(
        [call_tool("get_weather", city="Lima"), reply("ok"), call_tool("send_email", to="a", body="b")]
    ) as s:
        result = thoth_nb.run_openai_tools(
            tracked(openai.OpenAI(base_url=s.openai_base_url, api_key="t", max_retries=0)),
            model="m",
            messages="x",
            functions=tools.functions(),
            **CONFIG,
        )
        client = tracked(openai.AsyncOpenAI(base_url=s.openai_base_url, api_key="t", max_retries=0))
        blocked = await thoth_nb.arun_openai_tools(
            client, model="m", messages="x", functions=tools.functions(), **CONFIG
        )
        await client.close()
    assert result.calls[0].outcome == "ok" and blocked.calls[0].outcome == "blocked"
    assert tools.runs == {"get_weather": 1, "send_email": 0}


def test_sync_and_async_helpers_take_the_same_arguments() -> None:
    import inspect

    from thoth_nb.integrations import anthropic as anthropic_integration
    from thoth_nb.integrations import openai as openai_integration

    for module, name in ((openai_integration, "openai"), (anthropic_integration, "anthropic")):
        sync = inspect.signature(getattr(module, f"run_{name}_tools"))
        asynchronous = inspect.signature(getattr(module, f"arun_{name}_tools"))
        assert list(sync.parameters.items()) == list(asynchronous.parameters.items())


def test_version_outside_the_tested_range_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb.integrations.openai import OpenAIIntegration

    monkeypatch.setattr(OpenAIIntegration, "supported", ((9,), (10,)))
    with pytest.warns(RuntimeWarning, match=r"openai >=9,<10; you have"):
        OpenAIIntegration.check_version()


def test_instrumenting_a_client_names_the_loop_helper() -> None:
    client = tracked(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test"))
    with pytest.raises(thoth_nb.ThothConfigError, match="run_openai_tools"):
        thoth_nb.instrument(client, **CONFIG)
