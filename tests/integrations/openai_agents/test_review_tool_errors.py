"""A function tool that raises: the SDK turns the exception into a message for the model (its default
`failure_error_function`), and thoth records the call as failed, not as a success."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents import Agent, Runner, function_tool  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.integrations.openai_agents import ungovern_agent  # noqa: E402

TENANT = "acme"
CONFIG: dict[str, Any] = {"agent_id": "ops", "tenant_id": TENANT, "approved_scope": ["lookup"]}


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)
    yield


def posts() -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == "TOOL_CALL_POST"]


def failing_agent() -> tuple[Agent[Any], ScriptedModel]:
    @function_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        raise KeyError(key)

    model = ScriptedModel([[function_call("lookup", {"key": "k1"}, call_id="c1")], [assistant_message("sorry")]])
    return Agent(name="a", model=model, tools=[lookup]), model


async def test_a_tool_error_handled_by_the_sdk_is_recorded_as_an_error() -> None:
    agent, model = failing_agent()
    thoth_nb.instrument(agent, **CONFIG)
    result = await Runner.run(agent, "look k1 up")
    assert result.final_output == "sorry"  # the SDK still hands the model its error message
    sent = [i for c in model.calls for i in (c.input if isinstance(c.input, list) else [])
            if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert "error" in sent[0]["output"].lower()
    [post] = posts()
    assert post["metadata"]["outcome"] == "error"
    assert post["metadata"]["error_type"] == "KeyError"


async def test_ungoverning_restores_the_sdk_error_handler() -> None:
    agent, _ = failing_agent()
    [tool] = agent.tools
    before = tool.on_invoke_tool.__dict__.copy()
    thoth_nb.instrument(agent, **CONFIG)
    ungovern_agent(agent)
    assert tool.on_invoke_tool.__dict__ == before
