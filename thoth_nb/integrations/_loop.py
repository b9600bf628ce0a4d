"""What the OpenAI and Anthropic tool-loop helpers share: governed functions, schemas, and drivers.

A provider loop is a sans-I/O generator (like `_flow.Governor.flow`): it yields `Model(kwargs)` when
it needs a completion and `Tool(name, arguments, call_id)` when the model asked for a tool, and
receives the response / the `ToolCallRecord`. `drive_sync` and `drive_async` carry the effects out,
so the sync and the async helper of each provider are the same loop. No provider library is
imported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any

from thoth_nb import _instrument, _runtime
from thoth_nb._exceptions import ThothConfigError, ThothPolicyViolation
from thoth_nb._flow import Governor
from thoth_nb._transports.base import Transport

__all__ = [
    "Model",
    "Tool",
    "ToolCallRecord",
    "ToolLoopResult",
    "aexecute",
    "blocked_message",
    "check_on_block",
    "drive_async",
    "drive_sync",
    "execute",
    "function_schema",
    "prepare_functions",
    "set_framework",
]

ON_BLOCK = ("message", "raise")


@dataclasses.dataclass
class ToolCallRecord:
    """One tool call the model asked for, and what happened to it."""

    name: str
    arguments: Any
    call_id: str
    outcome: str  # "ok" | "blocked" | "error"
    output: str
    result: Any = None
    error: BaseException | None = None

    @property
    def is_error(self) -> bool:
        return self.outcome != "ok"


@dataclasses.dataclass
class ToolLoopResult:
    """The end of a tool loop: `final` is the last ChatCompletionMessage / Response / Message."""

    final: Any
    text: str
    messages: list[Any]
    calls: list[ToolCallRecord]
    turns: int
    stopped: str  # "done" | "max_turns"

    @property
    def blocked(self) -> list[ToolCallRecord]:
        return [c for c in self.calls if c.outcome == "blocked"]

    def __repr__(self) -> str:
        summary = ", ".join(f"{c.name}:{c.outcome}" for c in self.calls) or "no tool calls"
        return f"ToolLoopResult(stopped={self.stopped!r}, turns={self.turns}, calls=[{summary}], text={self.text!r})"


class Model:
    __slots__ = ("kwargs",)

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs


class Tool:
    __slots__ = ("arguments", "call_id", "name")

    def __init__(self, name: str, arguments: Any, call_id: str) -> None:
        self.name = name
        self.arguments = arguments
        self.call_id = call_id


LoopGen = Generator["Model | Tool", Any, ToolLoopResult]


def check_on_block(on_block: str) -> None:
    if on_block not in ON_BLOCK:
        raise ThothConfigError(f"on_block must be one of {', '.join(ON_BLOCK)}; got {on_block!r}")


def check_turns(max_turns: int) -> None:
    if not isinstance(max_turns, int) or max_turns < 1:
        raise ThothConfigError(f"max_turns must be a positive integer; got {max_turns!r}")


# --- governed functions -------------------------------------------------------------------------


def _items(
    functions: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
) -> list[tuple[str, Callable[..., Any]]]:
    if isinstance(functions, Mapping):
        items = [(str(k), v) for k, v in functions.items()]
    else:
        items = [(_instrument._tool_name(f, "tool"), f) for f in functions]
    if not items:
        raise ThothConfigError("no tool functions given: pass functions={'get_weather': get_weather}")
    for name, fn in items:
        if not callable(fn):
            raise ThothConfigError(f"tool {name!r} is a {type(fn).__name__}, not a function")
    return items


def prepare_functions(
    functions: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
    *,
    transport: Transport | None,
    config: Mapping[str, Any],
    framework: str,
) -> dict[str, Callable[..., Any]]:
    """Governed functions by tool name. Already governed functions (from `wrap_openai_tools`) are used
    as they are when no thoth config is given; otherwise they are re-pointed to this configuration."""
    items = _items(functions)
    if not config and transport is None and all(_instrument.is_governed(fn) for _, fn in items):
        return dict(items)
    cfg = _instrument._config(config)
    governor = _runtime.governor_for(cfg, transport)
    set_framework(governor, framework)
    out = {name: _instrument.govern_callable(fn, governor, name) for name, fn in items}
    _instrument._send_inventory(
        governor,
        [{"name": name, "description": inspect.getdoc(_instrument.unwrap(fn)) or ""} for name, fn in items],
    )
    return out


def set_framework(governor: Governor, framework: str) -> None:
    """Record the framework's name in the events of this governor (metadata.framework)."""
    governor.framework = framework
    base = getattr(governor, "metadata_base", None)
    if isinstance(base, dict):
        base["framework"] = framework


def _description(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(_instrument.unwrap(fn)) or ""
    return doc.split("\n\n", 1)[0].strip()


def function_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """JSON schema of a function's parameters (from its signature and type hints, via pydantic)."""
    import pydantic  # a dependency of both provider SDKs

    target = _instrument.unwrap(fn)
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = pydantic.create_model(f"{getattr(target, '__name__', 'tool')}_arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def describe(name: str, fn: Callable[..., Any]) -> tuple[str, str, dict[str, Any]]:
    return name, _description(fn), function_schema(fn)


# --- running one tool call ----------------------------------------------------------------------


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if result is None:
        return ""
    try:
        return json.dumps(result, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)


def _parse(name: str, arguments: Any, call_id: str) -> tuple[dict[str, Any] | None, ToolCallRecord | None]:
    if isinstance(arguments, Mapping):
        return dict(arguments), None
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}, None
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError) as exc:
        return None, ToolCallRecord(
            name, arguments, call_id, "error", f"Tool error: invalid JSON arguments ({exc})", error=exc
        )
    if not isinstance(parsed, dict):
        return None, ToolCallRecord(name, parsed, call_id, "error", "Tool error: arguments must be a JSON object")
    return parsed, None


def blocked_message(name: str, exc: ThothPolicyViolation) -> str:
    """What the model is told about a call that was not allowed to run."""
    text = f"Tool call '{name}' was blocked by policy and did not run: {exc.reason}"
    if exc.violation_id:
        text += f" (violation {exc.violation_id})"
    return text


def _blocked(name: str, args: Any, call_id: str, exc: ThothPolicyViolation, on_block: str) -> ToolCallRecord:
    if on_block == "raise":
        raise exc
    return ToolCallRecord(name, args, call_id, "blocked", blocked_message(name, exc), error=exc)


def _lookup(fns: Mapping[str, Callable[..., Any]], name: str, args: Any, call_id: str) -> ToolCallRecord | None:
    if name in fns:
        return None
    known = ", ".join(sorted(fns)) or "none"
    return ToolCallRecord(name, args, call_id, "error", f"Tool error: unknown tool '{name}' (available: {known})")


def _run_coroutine(awaitable: Awaitable[Any]) -> Any:
    """Finish an async tool from sync code, also inside a running loop (a notebook): in a worker thread."""

    async def wait() -> Any:
        return await awaitable

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="thoth-nb-tool") as pool:
        return pool.submit(asyncio.run, wait()).result()


def _collect(result: Any) -> Any:
    if inspect.isgenerator(result):
        return [chunk for chunk in result]
    return result


def execute(fns: Mapping[str, Callable[..., Any]], tool: Tool, on_block: str) -> ToolCallRecord:
    args, bad = _parse(tool.name, tool.arguments, tool.call_id)
    if bad is not None:
        return bad
    missing = _lookup(fns, tool.name, args, tool.call_id)
    if missing is not None:
        return missing
    try:
        result = fns[tool.name](**(args or {}))
        if inspect.isawaitable(result):
            result = _run_coroutine(result)
        elif inspect.isasyncgen(result):
            result = _run_coroutine(_acollect(result))
        result = _collect(result)
    except ThothPolicyViolation as exc:
        return _blocked(tool.name, args, tool.call_id, exc, on_block)
    except Exception as exc:
        return ToolCallRecord(
            tool.name, args, tool.call_id, "error", f"Tool error: {type(exc).__name__}: {exc}", error=exc
        )
    return ToolCallRecord(tool.name, args, tool.call_id, "ok", _text(result), result)


async def _acollect(agen: Any) -> list[Any]:
    return [chunk async for chunk in agen]


async def aexecute(fns: Mapping[str, Callable[..., Any]], tool: Tool, on_block: str) -> ToolCallRecord:
    """Async twin of `execute`: sync tools run in a worker thread so a held call never blocks the loop."""
    args, bad = _parse(tool.name, tool.arguments, tool.call_id)
    if bad is not None:
        return bad
    missing = _lookup(fns, tool.name, args, tool.call_id)
    if missing is not None:
        return missing
    fn = fns[tool.name]
    try:
        if inspect.iscoroutinefunction(fn):
            result = await fn(**(args or {}))
        elif inspect.isasyncgenfunction(fn):
            result = await _acollect(fn(**(args or {})))
        else:
            result = await asyncio.to_thread(lambda: _collect(fn(**(args or {}))))
            if inspect.isawaitable(result):
                result = await result
    except ThothPolicyViolation as exc:
        return _blocked(tool.name, args, tool.call_id, exc, on_block)
    except Exception as exc:
        return ToolCallRecord(
            tool.name, args, tool.call_id, "error", f"Tool error: {type(exc).__name__}: {exc}", error=exc
        )
    return ToolCallRecord(tool.name, args, tool.call_id, "ok", _text(result), result)


# --- drivers ------------------------------------------------------------------------------------


def drive_sync(
    loop: LoopGen, create: Callable[..., Any], fns: Mapping[str, Callable[..., Any]], on_block: str
) -> ToolLoopResult:
    effect = next(loop)
    try:
        while True:
            if isinstance(effect, Model):
                reply: Any = create(**effect.kwargs)
            else:
                reply = execute(fns, effect, on_block)
            effect = loop.send(reply)
    except StopIteration as stop:
        result: ToolLoopResult = stop.value
        return result
    finally:
        loop.close()


async def drive_async(
    loop: LoopGen, create: Callable[..., Awaitable[Any]], fns: Mapping[str, Callable[..., Any]], on_block: str
) -> ToolLoopResult:
    effect = next(loop)
    try:
        while True:
            if isinstance(effect, Model):
                reply: Any = await create(**effect.kwargs)
            else:
                reply = await aexecute(fns, effect, on_block)
            effect = loop.send(reply)
    except StopIteration as stop:
        result: ToolLoopResult = stop.value
        return result
    finally:
        loop.close()


def is_async_client(client: Any) -> bool:
    """Async clients of the Stainless-generated SDKs (AsyncOpenAI, AsyncAnthropic, their Azure/Bedrock/
    Vertex variants) derive from `AsyncAPIClient`; their `create` is not a coroutine function."""
    return any(k.__name__ == "AsyncAPIClient" or k.__name__.startswith("Async") for k in type(client).__mro__)


def require_sync(client: Any, async_name: str) -> None:
    if is_async_client(client):
        raise TypeError(f"{type(client).__name__} is an async client; use `await {async_name}(client, ...)`")


def require_async(client: Any, sync_name: str) -> None:
    if not is_async_client(client):
        raise TypeError(
            f"{type(client).__name__} is a sync client; use `{sync_name}(client, ...)` or pass an async client"
        )
