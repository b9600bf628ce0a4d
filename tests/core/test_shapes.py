"""Every tool shape under every decision: the body of a stopped call never runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._runtime import local_store

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def read_file(path: str, mode: str = "r") -> str:
    ran.append(path)
    return f"<{path}>"


async def fetch(path: str) -> str:
    ran.append(path)
    await asyncio.sleep(0)
    return f"<{path}>"


def stream(topic: str) -> Iterator[str]:
    ran.append(topic)
    yield from (f"{topic}-{i}" for i in range(3))


async def astream(topic: str) -> AsyncIterator[str]:
    ran.append(topic)
    for i in range(3):
        yield f"{topic}-{i}"


def events(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return local_store().events(str(cfg["tenant_id"]))


def types(cfg: dict[str, Any]) -> list[str]:
    return [e["event_type"] for e in events(cfg)]


def test_sync_allow_and_block(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(read_file)
    assert tool("/home/a") == "</home/a>"
    with pytest.raises(ThothPolicyViolation) as info:
        tool("/etc/passwd")
    assert ran == ["/home/a"]
    assert info.value.tool_name == "read_file" and info.value.violation_id
    assert isinstance(info.value, Exception)
    assert types(cfg) == ["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]


async def test_async_allow_and_block(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(fetch)
    assert asyncio.iscoroutinefunction(tool)
    assert await tool("/home/a") == "</home/a>"
    with pytest.raises(ThothPolicyViolation):
        await tool("/etc/passwd")
    assert ran == ["/home/a"]


def test_generator_enforces_before_first_item(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(stream)
    gen = tool("news")
    assert ran == []  # nothing runs until iteration starts
    assert list(gen) == ["news-0", "news-1", "news-2"]
    blocked = tool("secret")
    with pytest.raises(ThothPolicyViolation):
        next(blocked)
    assert ran == ["news"]
    evs = events(cfg)
    post = next(e for e in evs if e["event_type"] == "TOOL_CALL_POST")
    assert post["metadata"]["result_type"] == "generator" and post["metadata"]["chunk_count"] == 3
    assert post["metadata"]["result_size_bytes"] == len("news-0") * 3


def test_generator_closed_early_is_recorded(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(stream)
    gen = tool("news")
    assert next(gen) == "news-0"
    gen.close()
    post = [e for e in events(cfg) if e["event_type"] == "TOOL_CALL_POST"]
    assert post[0]["metadata"]["outcome"] == "closed_early"


async def test_async_generator(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(astream)
    assert [x async for x in tool("news")] == ["news-0", "news-1", "news-2"]
    with pytest.raises(ThothPolicyViolation):
        await tool("secret").__anext__()
    assert ran == ["news"]
    post = next(e for e in events(cfg) if e["event_type"] == "TOOL_CALL_POST")
    assert post["metadata"]["result_type"] == "async_generator"


def test_tool_error_recorded_and_reraised(cfg: dict[str, Any]) -> None:
    def read_file(path: str) -> str:
        raise FileNotFoundError(path)

    tool = thoth_nb.governed(**cfg)(read_file)
    with pytest.raises(FileNotFoundError):
        tool("/home/missing")
    post = next(e for e in events(cfg) if e["event_type"] == "TOOL_CALL_POST")
    assert post["metadata"]["outcome"] == "error" and post["metadata"]["error_type"] == "FileNotFoundError"


class Tool:
    def __init__(self, name: str, fn: Any) -> None:
        self.name = name
        self.fn = fn

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class Agent:
    def __init__(self) -> None:
        self.tools = [Tool("read_file", read_file), Tool("search", lambda q: ran.append(q) or f"results for {q}")]


def test_tools_run_shape_in_place(cfg: dict[str, Any]) -> None:
    agent = Agent()
    original = agent.tools[0]
    same = thoth_nb.instrument(agent, **cfg)
    assert same is agent and agent.tools[0] is original
    assert agent.tools[1].run("cats") == "results for cats"
    with pytest.raises(ThothPolicyViolation):
        agent.tools[0].run("/etc/shadow")
    assert ran == ["cats"]
    evs = events(cfg)
    assert {e["tool_name"] for e in evs} == {"read_file", "search"}


def test_instrument_twice_does_not_double_govern(cfg: dict[str, Any]) -> None:
    agent = Agent()
    thoth_nb.instrument(agent, **cfg)
    first = agent.tools[0].run
    thoth_nb.instrument(agent, **{**cfg, "enforcement": "observe"})
    assert agent.tools[0].run is first  # re-pointed, not wrapped again
    assert agent.tools[0].run("/etc/passwd") == "</etc/passwd>"  # observe mode now
    assert types(cfg).count("TOOL_CALL_PRE") == 1
    assert thoth_nb.unwrap(agent.tools[0].run).__func__ is Tool.run  # type: ignore[attr-defined]


def test_list_and_dict_of_functions(cfg: dict[str, Any]) -> None:
    tools: list[Any] = [read_file]
    thoth_nb.instrument(tools, **cfg)
    with pytest.raises(ThothPolicyViolation):
        tools[0]("/etc/x")
    wrapped = thoth_nb.wrap_openai_tools({"read_file": read_file}, **cfg)
    assert wrapped["read_file"]({"path": "/home/a"}) == "<{'path': '/home/a'}>"  # a lone dict is passed through
    from thoth_nb.anthropic import wrap_anthropic_tools
    from thoth_nb.openai import wrap_openai_tools

    assert wrap_openai_tools is thoth_nb.wrap_openai_tools
    with pytest.raises(ThothPolicyViolation):
        wrap_anthropic_tools({"read_file": read_file}, **cfg)["read_file"](path="/etc/passwd")
    assert ran == [{"path": "/home/a"}]


def test_positional_args_are_named_for_policies(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(read_file)
    with pytest.raises(ThothPolicyViolation):
        tool("/etc/hosts", "r")
    pre = events(cfg)[0]
    assert pre["metadata"]["tool_args"] == {"path": "/etc/hosts", "mode": "r"}


def test_thoth_client_legacy(cfg: dict[str, Any]) -> None:
    client = thoth_nb.ThothClient(tenant_id="t", user_id="alice")
    rest = {k: v for k, v in cfg.items() if k != "tenant_id"}
    agent = client.wrap(Agent(), **rest)
    agent.tools[1].run("q")
    assert events(cfg)[0]["user_id"] == "alice"


def test_configure_defaults_for_bare_decorator(cfg: dict[str, Any]) -> None:
    thoth_nb.configure(**cfg)
    try:
        @thoth_nb.governed
        def search(q: str) -> str:
            return q

        assert search("x") == "x"
        assert events(cfg)[0]["agent_id"] == "agent"
    finally:
        thoth_nb.configure()


def test_modify_rewrites_arguments(cfg: dict[str, Any]) -> None:
    from thoth_nb._models import DecisionType, EnforcementDecision
    from thoth_nb._transports.base import Transport

    class Modifying(Transport):
        def enforce(self, body: Any) -> EnforcementDecision:
            return EnforcementDecision(DecisionType.MODIFY, "redacted", modified_tool_args={"path": "/safe"})

        async def aenforce(self, body: Any) -> EnforcementDecision:
            return self.enforce(body)

        def poll_hold(self, token: str, wait: float) -> dict[str, Any]:
            raise AssertionError

        async def apoll_hold(self, token: str, wait: float) -> dict[str, Any]:
            raise AssertionError

        def send_events(self, events: Any) -> None:
            pass

    tool = thoth_nb.governed(transport=Modifying(), **cfg)(read_file)
    assert tool("/home/private") == "</safe>"


def test_unserialisable_args_never_crash(cfg: dict[str, Any]) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    def search(q: Any, blob: bytes = b"") -> str:
        return "ok"

    loop: dict[str, Any] = {}
    loop["self"] = loop
    tool = thoth_nb.governed(**cfg)(search)
    assert tool(Opaque(), blob=b"\x00\xff") == "ok"
    assert tool(loop) == "ok"
    evs = events(cfg)
    assert evs[0]["metadata"]["tool_args"]["blob"] == "\x00\ufffd"
    assert "[circular]" in str(evs[2]["metadata"]["tool_args"])


def test_violation_explains_itself(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(read_file)
    with pytest.raises(ThothPolicyViolation) as info:
        tool("/etc/passwd")
    explanation = info.value.explain()
    assert explanation is not None
    assert explanation["violation_id"] == info.value.violation_id
    assert explanation["conditions"][0]["rule_id"] == "etc" and explanation["severity"] == "critical"
    assert "rule etc" in explanation["why_it_was_blocked"]
