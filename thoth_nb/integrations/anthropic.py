"""Anthropic Python SDK: run a whole `tool_use` / `tool_result` loop with every tool call governed.

    from anthropic import Anthropic
    from thoth_nb.integrations.anthropic import run_anthropic_tools

    result = run_anthropic_tools(Anthropic(), model="claude-sonnet-4-5", max_tokens=1024,
                                 messages=[{"role": "user", "content": "..."}],
                                 functions={"get_weather": get_weather},
                                 agent_id="weather-bot", tenant_id="acme", approved_scope=["get_weather"])

A blocked call never runs: Claude gets a `tool_result` block with `is_error: true` saying it was blocked
(a tool that raises is reported the same way). `on_block="raise"` lets `ThothPolicyViolation` propagate.
All tool results of one turn go back in one user message, as the Messages API requires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from thoth_nb._exceptions import ThothConfigError
from thoth_nb._instrument import wrap_anthropic_tools
from thoth_nb._transports.base import Transport
from thoth_nb.integrations import DidNotEnable, Integration
from thoth_nb.integrations._loop import (
    LoopGen,
    Model,
    Tool,
    ToolCallRecord,
    ToolLoopResult,
    check_on_block,
    check_turns,
    describe,
    drive_async,
    drive_sync,
    prepare_functions,
    require_async,
    require_sync,
)

try:
    import anthropic
except ImportError:  # pragma: no cover - exercised without the extra
    raise DidNotEnable("the anthropic package is not installed") from None


class AnthropicIntegration(Integration):
    """Version check (a warning naming the tested range) and install-once bookkeeping;
    the loop helpers govern per call: nothing is patched globally."""

    identifier = "anthropic"
    package = "anthropic"
    supported = ((0, 34), (3,))

    @classmethod
    def setup_once(cls) -> None:
        pass


AnthropicIntegration.install()

__all__ = [
    "ToolCallRecord",
    "ToolLoopResult",
    "anthropic_tool_specs",
    "arun_anthropic_tools",
    "instrument_object",
    "run_anthropic_tools",
    "wrap_anthropic_tools",
]

FRAMEWORK = "anthropic"
ANTHROPIC_VERSION = anthropic.__version__

Functions = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]


def anthropic_tool_specs(functions: Functions) -> list[dict[str, Any]]:
    """Client tool definitions (`name`, `description`, `input_schema`) from the functions' signatures."""
    items = (
        functions.items()
        if isinstance(functions, Mapping)
        else [(getattr(f, "__name__", "tool"), f) for f in functions]
    )
    specs = []
    for name, fn in items:
        name, description, schema = describe(str(name), fn)
        specs.append({"name": name, "description": description, "input_schema": schema})
    return specs


def _block_dict(block: Any) -> Any:
    dump = getattr(block, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else block


def _text_of(message: Any) -> str:
    return "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", None) == "text")


def _loop(
    model: str,
    messages: Any,
    tools: list[dict[str, Any]],
    max_tokens: int,
    system: Any,
    max_turns: int,
    extra: Mapping[str, Any],
) -> LoopGen:
    transcript: list[Any] = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    records: list[ToolCallRecord] = []
    message: Any = None
    base: dict[str, Any] = {**extra, "model": model, "max_tokens": max_tokens, "tools": tools}
    if system is not None:
        base["system"] = system
    for turn in range(1, max_turns + 1):
        message = yield Model({**base, "messages": list(transcript)})
        transcript.append({"role": "assistant", "content": [_block_dict(b) for b in message.content]})
        uses = [b for b in message.content if getattr(b, "type", None) == "tool_use"]
        if not uses:
            return ToolLoopResult(message, _text_of(message), transcript, records, turn, "done")
        results = []
        for block in uses:
            record = yield Tool(block.name, block.input, block.id)
            records.append(record)
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": block.id,
                "content": record.output,
            }
            if record.is_error:
                result["is_error"] = True
            results.append(result)
        transcript.append({"role": "user", "content": results})
    return ToolLoopResult(
        message, _text_of(message) if message is not None else "", transcript, records, max_turns, "max_turns"
    )


def _setup(
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None,
    max_turns: int,
    on_block: str,
    transport: Transport | None,
    config: Mapping[str, Any],
) -> tuple[dict[str, Callable[..., Any]], list[dict[str, Any]]]:
    check_on_block(on_block)
    check_turns(max_turns)
    fns = prepare_functions(functions, transport=transport, config=config, framework=FRAMEWORK)
    specs = anthropic_tool_specs(fns) if tools is None else [dict(t) for t in tools]
    return fns, specs


def run_anthropic_tools(
    client: Any,
    *,
    model: str,
    messages: Any,
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None = None,
    max_tokens: int = 1024,
    system: Any = None,
    max_turns: int = 10,
    on_block: str = "message",
    create_kwargs: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    **thoth_config: Any,
) -> ToolLoopResult:
    """Run `messages.create` and the requested tools until Claude answers without `tool_use`.

    Arguments as in `run_openai_tools`; `system` and `max_tokens` go to every request. Returns a
    `ToolLoopResult` whose `.final` is the last `Message`.
    """
    require_sync(client, "arun_anthropic_tools")
    fns, specs = _setup(functions, tools, max_turns, on_block, transport, thoth_config)
    loop = _loop(model, messages, specs, max_tokens, system, max_turns, create_kwargs or {})
    return drive_sync(loop, client.messages.create, fns, on_block)


async def arun_anthropic_tools(
    client: Any,
    *,
    model: str,
    messages: Any,
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None = None,
    max_tokens: int = 1024,
    system: Any = None,
    max_turns: int = 10,
    on_block: str = "message",
    create_kwargs: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    **thoth_config: Any,
) -> ToolLoopResult:
    """`run_anthropic_tools` for `AsyncAnthropic` (sync tools run in a worker thread)."""
    require_async(client, "run_anthropic_tools")
    fns, specs = _setup(functions, tools, max_turns, on_block, transport, thoth_config)
    loop = _loop(model, messages, specs, max_tokens, system, max_turns, create_kwargs or {})
    return await drive_async(loop, client.messages.create, fns, on_block)


def instrument_object(obj: Any, governor: Any, **options: Any) -> Any:
    """`thoth_nb.instrument()` on an Anthropic SDK object: a client has no tools of its own to govern, so say
    what to use instead (never a silent no-op)."""
    raise ThothConfigError(
        f"cannot instrument a {type(obj).__name__} from the anthropic SDK: it has no tools of its own. "
        f"Run the tool loop with thoth_nb.run_anthropic_tools(client, model=..., messages=..., "
        f"functions={{'name': fn}}, ...) "
        f"or govern your functions with thoth_nb.wrap_anthropic_tools({{'name': fn}}, ...)"
    )
