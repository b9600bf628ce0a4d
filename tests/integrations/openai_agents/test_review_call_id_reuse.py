"""A decision taken in `needs_approval` for one call must never be applied to another call that reuses
its call id (local models and proxies often number calls `call_0`, `call_1`, ... per turn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

agents = pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    Runner,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailData,
    function_tool,
    tool_input_guardrail,
)
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402

TENANT = "acme"
POLICY = """
version: 1
default: allow
rules:
  - {id: no-evil, tool: send_email, when: {to: {contains: evil}}, decision: block}
"""


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)
    yield


async def test_a_stale_decision_is_not_reused_for_other_arguments(tmp_path: Path) -> None:
    sent: list[str] = []
    reject_first = [True]

    @tool_input_guardrail
    def review(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        if reject_first and reject_first.pop():
            return ToolGuardrailFunctionOutput.reject_content("not now")  # the tool is not invoked
        return ToolGuardrailFunctionOutput.allow()

    @function_tool(tool_input_guardrails=[review])
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    model = ScriptedModel([
        [function_call("send_email", {"to": "bob@corp.com"}, call_id="call_0")],
        [assistant_message("held back")],
        [function_call("send_email", {"to": "eve@evil.com"}, call_id="call_0")],
        [assistant_message("done")],
    ])
    agent = Agent(name="a", model=model, tools=[send_email])
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    thoth_nb.instrument(agent, agent_id="a", tenant_id=TENANT, approved_scope=["send_email"], policy=str(policy))
    await Runner.run(agent, "email bob")
    assert sent == []
    await Runner.run(agent, "email eve")
    assert sent == []  # blocked by the rule: the body never runs
    assert thoth_nb.flush()
    blocks = [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == "TOOL_CALL_BLOCK"]
    assert len(blocks) == 1 and blocks[0]["tool_name"] == "send_email"
