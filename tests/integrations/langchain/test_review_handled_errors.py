"""A tool error LangChain handles itself (`handle_tool_error` / `handle_validation_error`) is a failed
call in the events whether or not the call came with a tool-call id (AgentExecutor and direct
`invoke` calls have none; the tool then returns the error text instead of a ToolMessage)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.tools import BaseTool, ToolException, tool

import thoth_nb
from thoth_nb import _runtime

TENANT = "t"


def make_tool() -> BaseTool:
    @tool
    def lookup(x: int) -> str:
        """Look x up."""
        raise ToolException(f"no entry {x}")

    lookup.handle_tool_error = True
    lookup.handle_validation_error = True
    thoth_nb.instrument([lookup], agent_id="a", tenant_id=TENANT, approved_scope=["lookup"])
    return lookup


def post() -> dict[str, Any]:
    assert thoth_nb.flush()
    [event] = [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == "TOOL_CALL_POST"]
    return event


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "run"])
def test_a_handled_tool_exception_without_a_call_id_is_an_error(mode: str) -> None:
    lookup = make_tool()
    if mode == "invoke":
        output = lookup.invoke({"x": 1})
    elif mode == "ainvoke":
        output = asyncio.run(lookup.ainvoke({"x": 1}))
    else:
        output = lookup.run({"x": 1})
    assert output == "no entry 1"  # what LangChain hands back is unchanged
    event = post()
    assert event["metadata"]["outcome"] == "error"
    assert event["metadata"]["error_type"] == "ToolException"


def test_a_handled_validation_error_is_an_error() -> None:
    lookup = make_tool()
    assert "validation error" in lookup.invoke({"x": "not a number"}).lower()
    assert post()["metadata"]["outcome"] == "error"


def test_a_successful_call_stays_ok_and_teardown_restores_the_handlers() -> None:
    from langchain_core.tools import base

    from thoth_nb.integrations.langchain import LangChainIntegration

    LangChainIntegration.teardown()  # earlier tests of this process installed it
    before = (base._handle_tool_error, base._handle_validation_error)

    @tool
    def echo(x: int) -> int:
        """Echo x."""
        return x

    thoth_nb.instrument([echo], agent_id="a", tenant_id=TENANT, approved_scope=["echo"])
    assert echo.invoke({"x": 3}) == 3
    assert post()["metadata"]["outcome"] == "ok"
    assert base._handle_tool_error is not before[0]
    LangChainIntegration.teardown()
    assert (base._handle_tool_error, base._handle_validation_error) == before
