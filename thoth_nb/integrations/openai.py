"""OpenAI Python SDK: run a whole tool-calling loop with every tool call governed.

    from openai import OpenAI
    from thoth_nb.integrations.openai import run_openai_tools

    result = run_openai_tools(OpenAI(), model="gpt-4.1-mini", messages=[{"role": "user", "content": "..."}],
                              functions={"get_weather": get_weather},
                              agent_id="weather-bot", tenant_id="acme", approved_scope=["get_weather"])
    print(result.text)

Works with the Chat Completions API (`api="chat"`) and the Responses API (`api="responses"`), with
`OpenAI` (`run_openai_tools`) and `AsyncOpenAI` (`arun_openai_tools`). A blocked call never runs; the
model gets a tool result saying it was blocked (or, with `on_block="raise"`, `ThothPolicyViolation`
propagates). Tool specs are derived from the functions' signatures when `tools` is not given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from thoth_nb._exceptions import ThothConfigError
from thoth_nb._instrument import wrap_openai_tools
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
    import openai
except ImportError:  # pragma: no cover - exercised without the extra
    raise DidNotEnable("the openai package is not installed") from None


class OpenAIIntegration(Integration):
    """Version check (a warning naming the tested range) and install-once bookkeeping;
    the loop helpers govern per call: nothing is patched globally."""

    identifier = "openai"
    package = "openai"
    supported = ((1, 40), (4,))

    @classmethod
    def setup_once(cls) -> None:
        pass


OpenAIIntegration.install()

__all__ = [
    "ToolCallRecord",
    "ToolLoopResult",
    "arun_openai_tools",
    "instrument_object",
    "openai_tool_specs",
    "run_openai_tools",
    "wrap_openai_tools",
]

FRAMEWORK = "openai"
APIS = ("chat", "responses")
OPENAI_VERSION = openai.__version__

Functions = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]


def openai_tool_specs(functions: Functions, api: str = "chat") -> list[dict[str, Any]]:
    """Function tool specs for the OpenAI API, from the functions' signatures and docstrings."""
    _check_api(api)
    items = (
        functions.items()
        if isinstance(functions, Mapping)
        else [(getattr(f, "__name__", "tool"), f) for f in functions]
    )
    specs = []
    for name, fn in items:
        name, description, parameters = describe(str(name), fn)
        if api == "chat":
            specs.append(
                {
                    "type": "function",
                    "function": {"name": name, "description": description, "parameters": parameters},
                }
            )
        else:
            specs.append({"type": "function", "name": name, "description": description, "parameters": parameters})
    return specs


def _check_api(api: str) -> None:
    if api not in APIS:
        raise ThothConfigError(f"api must be 'chat' (Chat Completions) or 'responses' (Responses API); got {api!r}")


def _responses_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Accept Chat Completions tool specs for the Responses API too (the nested `function` is flattened)."""
    if spec.get("type") == "function" and isinstance(spec.get("function"), Mapping):
        return {"type": "function", **spec["function"]}
    return dict(spec)


def _chat_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    if spec.get("type") == "function" and "function" not in spec and "name" in spec:
        inner = {k: v for k, v in spec.items() if k not in ("type", "strict")}
        if "strict" in spec:
            inner["strict"] = spec["strict"]
        return {"type": "function", "function": inner}
    return dict(spec)


def _tools(
    tools: Sequence[Mapping[str, Any]] | None, fns: Mapping[str, Callable[..., Any]], api: str
) -> list[dict[str, Any]]:
    if tools is None:
        return openai_tool_specs(fns, api)
    convert = _chat_spec if api == "chat" else _responses_spec
    return [convert(spec) for spec in tools]


def _chat_loop(
    model: str, messages: Any, tools: list[dict[str, Any]], max_turns: int, extra: Mapping[str, Any]
) -> LoopGen:
    transcript: list[Any] = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    records: list[ToolCallRecord] = []
    message: Any = None
    for turn in range(1, max_turns + 1):
        completion = yield Model({**extra, "model": model, "messages": list(transcript), "tools": tools})
        message = completion.choices[0].message
        calls = list(message.tool_calls or [])
        if not calls:
            transcript.append(_assistant(message))
            return ToolLoopResult(message, message.content or "", transcript, records, turn, "done")
        transcript.append(_assistant(message))
        for call in calls:
            function = getattr(call, "function", None)
            if function is None:  # a custom (non-function) tool call: nothing of ours can run it
                record = ToolCallRecord(
                    getattr(call, "type", "custom"),
                    None,
                    call.id,
                    "error",
                    "Tool error: only function tools are supported here",
                )
            else:
                record = yield Tool(function.name, function.arguments, call.id)
            records.append(record)
            transcript.append({"role": "tool", "tool_call_id": call.id, "content": record.output})
    return ToolLoopResult(
        message,
        (message.content or "") if message is not None else "",
        transcript,
        records,
        max_turns,
        "max_turns",
    )


def _assistant(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump(mode="json", exclude_none=True) for call in message.tool_calls]
    return out


def _responses_loop(
    model: str, messages: Any, tools: list[dict[str, Any]], max_turns: int, extra: Mapping[str, Any]
) -> LoopGen:
    items: list[Any] = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    records: list[ToolCallRecord] = []
    response: Any = None
    for turn in range(1, max_turns + 1):
        response = yield Model({**extra, "model": model, "input": list(items), "tools": tools})
        output = list(response.output or [])
        items.extend(item.model_dump(mode="json", exclude_none=True, by_alias=True) for item in output)
        calls = [item for item in output if getattr(item, "type", None) == "function_call"]
        if not calls:
            return ToolLoopResult(response, response.output_text, items, records, turn, "done")
        for call in calls:
            record = yield Tool(call.name, call.arguments, call.call_id)
            records.append(record)
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": record.output})
    return ToolLoopResult(
        response, response.output_text if response is not None else "", items, records, max_turns, "max_turns"
    )


def _setup(
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None,
    api: str,
    max_turns: int,
    on_block: str,
    transport: Transport | None,
    config: Mapping[str, Any],
) -> tuple[dict[str, Callable[..., Any]], list[dict[str, Any]]]:
    _check_api(api)
    check_on_block(on_block)
    check_turns(max_turns)
    fns = prepare_functions(functions, transport=transport, config=config, framework=FRAMEWORK)
    return fns, _tools(tools, fns, api)


def _loop(
    api: str, model: str, messages: Any, tools: list[dict[str, Any]], max_turns: int, extra: Mapping[str, Any]
) -> LoopGen:
    if api == "chat":
        return _chat_loop(model, messages, tools, max_turns, extra)
    return _responses_loop(model, messages, tools, max_turns, extra)


def _create(client: Any, api: str) -> Callable[..., Any]:
    create: Callable[..., Any] = client.chat.completions.create if api == "chat" else client.responses.create
    return create


def run_openai_tools(
    client: Any,
    *,
    model: str,
    messages: Any,
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None = None,
    api: str = "chat",
    max_turns: int = 10,
    on_block: str = "message",
    create_kwargs: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    **thoth_config: Any,
) -> ToolLoopResult:
    """Run the model/tool loop until the model answers without tool calls (or `max_turns` model calls).

    `messages` is the Chat Completions message list (or the Responses `input`, or a plain string);
    `functions` maps tool names to Python functions (already governed ones from `wrap_openai_tools`
    are accepted as they are); `tools` are the JSON tool specs, derived from the functions when
    omitted; `create_kwargs` go to every `create()` call (temperature, ...); the remaining keyword
    arguments are thoth configuration (agent_id, tenant_id, approved_scope, ...). Returns a
    `ToolLoopResult`: `.final` is the last ChatCompletionMessage (chat) or Response (responses),
    `.text` its text, `.messages` the whole transcript, `.calls` what happened to each tool call.
    """
    require_sync(client, "arun_openai_tools")
    fns, specs = _setup(functions, tools, api, max_turns, on_block, transport, thoth_config)
    loop = _loop(api, model, messages, specs, max_turns, create_kwargs or {})
    return drive_sync(loop, _create(client, api), fns, on_block)


async def arun_openai_tools(
    client: Any,
    *,
    model: str,
    messages: Any,
    functions: Functions,
    tools: Sequence[Mapping[str, Any]] | None = None,
    api: str = "chat",
    max_turns: int = 10,
    on_block: str = "message",
    create_kwargs: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    **thoth_config: Any,
) -> ToolLoopResult:
    """`run_openai_tools` for `AsyncOpenAI`; sync tool functions run in a worker thread, so a call held
    for approval does not block the event loop."""
    require_async(client, "run_openai_tools")
    fns, specs = _setup(functions, tools, api, max_turns, on_block, transport, thoth_config)
    loop = _loop(api, model, messages, specs, max_turns, create_kwargs or {})
    return await drive_async(loop, _create(client, api), fns, on_block)


def instrument_object(obj: Any, governor: Any, **options: Any) -> Any:
    """`thoth_nb.instrument()` on an OpenAI SDK object: a client has no tools of its own to govern, so say
    what to use instead (never a silent no-op)."""
    raise ThothConfigError(
        f"cannot instrument a {type(obj).__name__} from the openai SDK: it has no tools of its own. "
        f"Run the tool loop with thoth_nb.run_openai_tools(client, model=..., messages=..., "
        f"functions={{'name': fn}}, ...) "
        f"or govern your functions with thoth_nb.wrap_openai_tools({{'name': fn}}, ...)"
    )
