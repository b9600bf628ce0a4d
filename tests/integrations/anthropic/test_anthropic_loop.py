"""run_anthropic_tools / arun_anthropic_tools: the real Anthropic client against a local fake API."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.integrations.anthropic import (  # noqa: E402
    anthropic_tool_specs,
    arun_anthropic_tools,
    run_anthropic_tools,
)
from thoth_nb.testing import FakeLLMServer, call_tool, call_tools, reply  # noqa: E402

TENANT = "acme"
CONFIG: dict[str, Any] = {
    "agent_id": "claude-bot",
    "tenant_id": TENANT,
    "approved_scope": ["read_file"],
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
    def __init__(self) -> None:
        self.runs = {"read_file": 0, "delete_file": 0}

    def read_file(self, path: str) -> str:
        """Read a text file."""
        self.runs["read_file"] += 1
        return f"contents of {path}"

    def delete_file(self, path: str) -> str:
        """Delete a file."""
        self.runs["delete_file"] += 1
        return "deleted"

    def functions(self) -> dict[str, Any]:
        return {"read_file": self.read_file, "delete_file": self.delete_file}


def events(kind: str) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == kind]


def review_first_hold(*, deny: bool = False, timeout: float = 10.0) -> tuple[threading.Thread, dict[str, Any]]:
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


def client_for(server: FakeLLMServer) -> Any:
    return tracked(anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0))


def last_tool_results(server: FakeLLMServer) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = server.requests[-1]["body"]["messages"][-1]["content"]
    return content


def test_allow_sends_tool_result_blocks() -> None:
    tools = Tools()
    with FakeLLMServer([call_tool("read_file", path="notes.txt"), reply("It says hello.")]) as server:
        result = run_anthropic_tools(
            client_for(server),
            model="claude-test",
            messages="Read notes.txt",
            functions=tools.functions(),
            system="You are terse.",
            **CONFIG,
        )
    assert tools.runs["read_file"] == 1
    assert result.text == "It says hello." and result.final.stop_reason == "end_turn"
    body = server.requests[1]["body"]
    assert body["system"] == "You are terse." and body["max_tokens"] == 1024
    assert body["messages"][1]["content"][0]["type"] == "tool_use"
    assert body["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1_0", "content": "contents of notes.txt"}],
    }
    post = events("TOOL_CALL_POST")
    assert [e["tool_name"] for e in post] == ["read_file"]
    assert post[0]["metadata"]["framework"] == "anthropic"


def test_block_and_failure_are_is_error_results_in_one_message() -> None:
    tools = Tools()

    def broken(path: str) -> str:
        raise OSError("no such file")

    functions = {**tools.functions(), "broken": broken}
    turn = call_tools(("delete_file", {"path": "notes.txt"}), ("broken", {"path": "x"}), ("read_file", {"path": "a"}))
    with FakeLLMServer([turn]) as server:
        result = run_anthropic_tools(
            client_for(server),
            model="claude-test",
            messages="Clean up",
            functions=functions,
            **{**CONFIG, "approved_scope": ["read_file", "broken"]},
        )
    assert tools.runs == {"read_file": 1, "delete_file": 0}
    blocks = last_tool_results(server)
    assert [b.get("is_error", False) for b in blocks] == [True, True, False]
    assert "blocked by policy" in blocks[0]["content"]
    assert blocks[1]["content"] == "Tool error: OSError: no such file"
    assert result.text.startswith("Tool results: [error] Tool call 'delete_file' was blocked")
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["delete_file"]


def test_step_up_approved_from_another_thread() -> None:
    tools = Tools()
    thread, seen = review_first_hold()
    with FakeLLMServer([call_tool("delete_file", path="old.log"), reply("Deleted.")]) as server:
        result = run_anthropic_tools(
            client_for(server),
            model="claude-test",
            messages="Delete old.log",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
    thread.join(5)
    assert seen["hold"]["tool_name"] == "delete_file" and seen["hold"]["tool_args"] == {"path": "old.log"}
    assert tools.runs["delete_file"] == 1 and result.text == "Deleted."
    assert events("TOOL_CALL_POST")[0]["metadata"]["reviewer"] == "alice"


def test_step_up_denied() -> None:
    tools = Tools()
    thread, _ = review_first_hold(deny=True)
    with FakeLLMServer([call_tool("delete_file", path="old.log")]) as server:
        run_anthropic_tools(
            client_for(server),
            model="claude-test",
            messages="Delete old.log",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
    thread.join(5)
    assert tools.runs["delete_file"] == 0
    assert last_tool_results(server)[0]["is_error"] is True


async def test_async_client_with_step_up_and_block() -> None:
    tools = Tools()
    thread, _ = review_first_hold()
    turn = call_tools(("read_file", {"path": "/etc/shadow"}), ("delete_file", {"path": "tmp.txt"}))
    with FakeLLMServer([turn, reply("ok")]) as server:
        client = tracked(anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0))
        result = await arun_anthropic_tools(
            client,
            model="claude-test",
            messages="go",
            functions=tools.functions(),
            **{**CONFIG, "enforcement": "step_up"},
        )
        await client.close()
    thread.join(5)
    # /etc/ is a hard block even in step_up mode; delete_file (out of scope) was held and approved
    assert [c.outcome for c in result.calls] == ["blocked", "ok"]
    assert tools.runs == {"read_file": 0, "delete_file": 1}


def test_specs_raise_and_client_kind() -> None:
    tools = Tools()
    spec = anthropic_tool_specs(tools.functions())[0]
    assert spec == {
        "name": "read_file",
        "description": "Read a text file.",
        "input_schema": {"properties": {"path": {"type": "string"}}, "required": ["path"], "type": "object"},
    }
    with FakeLLMServer([call_tool("delete_file", path="x")]) as server:
        with pytest.raises(thoth_nb.ThothPolicyViolation):
            run_anthropic_tools(
                client_for(server),
                model="m",
                messages="x",
                functions=tools.functions(),
                on_block="raise",
                **CONFIG,
            )
        assert server.requests[0]["body"]["tools"][1]["name"] == "delete_file"
    async_client = tracked(anthropic.AsyncAnthropic(base_url="http://127.0.0.1:9", api_key="test"))
    with pytest.raises(TypeError, match="arun_anthropic_tools"):
        run_anthropic_tools(async_client, model="m", messages="x", functions=tools.functions(), **CONFIG)
    assert tools.runs["delete_file"] == 0


async def test_top_level_helpers() -> None:
    tools = Tools()
    with FakeLLMServer([call_tool("read_file", path="a"), reply("ok"), call_tool("delete_file", path="b")]) as s:
        result = thoth_nb.run_anthropic_tools(
            client_for(s), model="m", messages="x", functions=tools.functions(), **CONFIG
        )
        client = tracked(anthropic.AsyncAnthropic(base_url=s.anthropic_base_url, api_key="t", max_retries=0))
        blocked = await thoth_nb.arun_anthropic_tools(
            client, model="m", messages="x", functions=tools.functions(), **CONFIG
        )
        await client.close()
    assert result.calls[0].outcome == "ok" and blocked.calls[0].outcome == "blocked"
    assert tools.runs == {"read_file": 1, "delete_file": 0}


def test_instrumenting_a_client_names_the_loop_helper() -> None:
    client = tracked(anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="test"))
    with pytest.raises(thoth_nb.ThothConfigError, match="run_anthropic_tools"):
        thoth_nb.instrument(client, **CONFIG)
