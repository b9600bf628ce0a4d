"""LangChain integration: govern `BaseTool`, `@tool` and `StructuredTool` calls (langchain-core).

    tools = thoth_nb.instrument([search, write_file], agent_id="a", tenant_id="t", approved_scope=["search"])
    thoth_nb.instrument(agent_executor, ...)     # any object whose .tools are LangChain tools
    thoth_nb.instrument(chain_with_tools, ...)   # a Runnable whose steps include tools

How: `BaseTool.run` and `BaseTool.arun` are patched once per process (STYLE: sentry's integrations).
Every way a framework calls a tool ends there (`invoke` → `run`, `ainvoke` → `arun`, the sync fallback
of `StructuredTool.ainvoke` → `invoke` in a thread, `stream`/`batch` → `invoke`, AgentExecutor →
`run`/`arun`, LangGraph's ToolNode → `invoke`/`ainvoke`), so each call is governed exactly once. The
patched methods check at call time whether *this tool instance* was instrumented; other tools run
untouched. Instrumenting a tool again re-points it, it is never governed twice.

Events use `tool.name` as the tool name and the tool's input dict (minus injected arguments such as
LangGraph state or runtime) as the tool arguments, with `metadata.framework = "langchain"`.

A blocked call never runs the tool body. With `on_block="message"` (default) the agent sees a tool
error: a `ToolMessage(status="error")` when the call came with a tool-call id (ToolNode,
`create_agent`, tool-calling agents), the refusal text otherwise (AgentExecutor observations). With
`on_block="raise"` the call raises `ThothPolicyViolation`. Either way LangChain callbacks see the
blocked call as `on_tool_start` + `on_tool_error` (tracing, LangGraph's `tools` stream mode).

Tested with langchain-core 1.8 and 0.3, langchain 1.5 (`create_agent`) and langchain-classic 1.0
(`AgentExecutor`, sync and async).

STEP_UP waits for `thoth_nb.approve()` / `thoth_nb.deny()` like any governed call, except inside a
LangGraph run with a checkpointer, where it becomes a LangGraph interrupt (see
`thoth_nb.integrations.langgraph`).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from thoth_nb import _instrument
from thoth_nb._exceptions import ThothConfigError, ThothPolicyViolation
from thoth_nb._flow import Call, Governor
from thoth_nb._models import DecisionType, EnforcementDecision
from thoth_nb.integrations import DidNotEnable, Integration

try:
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DidNotEnable("langchain-core is not installed") from exc

__all__ = [
    "ON_BLOCK",
    "LangChainIntegration",
    "find_tools",
    "govern_tool",
    "instrument_object",
    "is_governed",
    "ungovern_tool",
]

logger = logging.getLogger("thoth_nb")

ON_BLOCK = ("message", "raise")
_SUPPORTED = (
    "a LangChain tool (BaseTool, @tool, StructuredTool), a list/tuple/dict of them, an AgentExecutor or any "
    "object with .tools, a Runnable chain whose steps include tools, or a LangGraph ToolNode / compiled "
    "graph / create_react_agent agent"
)


class ToolBinding:
    """What an instrumented tool instance is governed with; re-instrumenting swaps the fields."""

    __slots__ = ("framework", "governor", "injected", "on_block", "ref")

    def __init__(self, tool: BaseTool, governor: Governor, on_block: str, framework: str) -> None:
        self.ref = _ref(tool)
        self.governor = governor
        self.on_block = on_block
        self.framework = framework
        #: input keys -> the injected ones among them (LangChain recomputes this from the schema per call)
        self.injected: dict[frozenset[str], frozenset[str]] = {}


def _ref(tool: BaseTool) -> Callable[[], BaseTool | None]:
    try:
        return weakref.ref(tool, _forget(id(tool)))
    except TypeError:  # pragma: no cover - BaseTool subclasses support weakrefs; keep a strong ref if not
        return lambda: tool


def _forget(key: int) -> Callable[[Any], None]:
    def callback(_: Any) -> None:
        binding = _bindings.get(key)
        if binding is not None and binding.ref() is None:
            _bindings.pop(key, None)

    return callback


#: id(tool) -> binding. pydantic tools are unhashable, so no WeakKeyDictionary; entries die with the tool.
_bindings: dict[int, ToolBinding] = {}
_bindings_lock = threading.Lock()
#: tools whose governed run is in progress in this context (a subclass `run` calling `super().run`,
#: or `ainvoke` falling back to `invoke` in a thread, must not be governed a second time)
_active: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("thoth_lc_active",
                                                                       default=frozenset())


def binding_of(tool: Any) -> ToolBinding | None:
    binding = _bindings.get(id(tool))
    if binding is not None and binding.ref() is tool:
        return binding
    return None


def is_governed(tool: Any) -> bool:
    return binding_of(tool) is not None


# --- the patch ----------------------------------------------------------------------------------


class LangChainIntegration(Integration):
    identifier = "langchain"
    package = "langchain-core"
    supported = ((0, 3), (2,))

    @classmethod
    def setup_once(cls) -> None:
        cls.patch(BaseTool, "run", _patched_run(BaseTool.run))
        cls.patch(BaseTool, "arun", _patched_arun(BaseTool.arun))
        from langchain_core.tools import base as tools_base

        for name in ("_handle_tool_error", "_handle_validation_error"):  # feature-detected
            original = getattr(tools_base, name, None)
            if callable(original):
                cls.patch(tools_base, name, _recording_handler(original))

    @classmethod
    def ensure_class(cls, klass: type) -> None:
        """A tool class that overrides `run`/`arun` itself gets the same patch (restored on teardown)."""
        with _bindings_lock:
            for name, make in (("run", _patched_run), ("arun", _patched_arun)):
                method = getattr(klass, name, None)
                if method is not None and not getattr(method, "__thoth_patched__", False):
                    owner = next(k for k in klass.__mro__ if name in k.__dict__)
                    cls.patch(owner, name, make(method))

    @classmethod
    def teardown(cls) -> None:
        super().teardown()
        with _bindings_lock:
            _bindings.clear()


#: errors LangChain handled itself (`handle_tool_error`, `handle_validation_error`) in the governed run of
#: this context: without a tool-call id the tool returns the error text, so nothing else says it failed
_handled: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar("thoth_lc_handled",
                                                                                     default=None)


def _recording_handler(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps `langchain_core.tools.base._handle_tool_error` (and the validation twin), which `run`/`arun`
    call when they turn an exception into the tool's output. Bookkeeping only."""

    @functools.wraps(original)
    def handle(error: BaseException, *args: Any, **kwargs: Any) -> Any:
        errors = _handled.get()
        if errors is not None:
            errors.append(error)
        return original(error, *args, **kwargs)

    return handle


def _patched_run(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        binding = _bindings.get(id(self))
        if binding is None or binding.ref() is not self or id(self) in _active.get():
            return original(self, tool_input, *args, **kwargs)
        return _governed_run(binding, original, self, tool_input, args, kwargs)

    run.__thoth_patched__ = True  # type: ignore[attr-defined]
    return run


def _patched_arun(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def arun(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        binding = _bindings.get(id(self))
        if binding is None or binding.ref() is not self or id(self) in _active.get():
            return await original(self, tool_input, *args, **kwargs)
        return await _governed_arun(binding, original, self, tool_input, args, kwargs)

    arun.__thoth_patched__ = True  # type: ignore[attr-defined]
    return arun


# --- one governed call --------------------------------------------------------------------------


def _injected_keys(tool: BaseTool, tool_input: Mapping[str, Any]) -> frozenset[str]:
    keys = frozenset(tool_input)
    binding = binding_of(tool)
    cache = binding.injected if binding is not None else None
    if cache is not None and keys in cache:
        return cache[keys]
    try:
        kept = tool._filter_injected_args(dict(tool_input))
    except Exception:
        return frozenset()
    injected = keys - set(kept)
    if cache is not None and len(cache) < 64:
        cache[keys] = injected
    return injected


def tool_args(tool: BaseTool, tool_input: Any) -> dict[str, Any]:
    """The tool's input as policies and events see it: its argument dict without injected values."""
    if isinstance(tool_input, Mapping):
        injected = _injected_keys(tool, tool_input)
        return {k: v for k, v in tool_input.items() if k not in injected}
    try:
        key = next(iter(tool.args), "input")
    except Exception:
        key = "input"
    return {key: tool_input}


def _modified_input(tool: BaseTool, tool_input: Any, decision: EnforcementDecision) -> Any:
    modified = decision.modified_tool_args
    if decision.decision is not DecisionType.MODIFY or modified is None:
        return tool_input
    if isinstance(tool_input, Mapping):
        injected = _injected_keys(tool, tool_input)
        return {**{k: tool_input[k] for k in injected}, **modified}
    if len(modified) == 1:
        return next(iter(modified.values()))
    logger.warning("thoth: could not apply modified args %r to a string-input tool; running as asked",
                   modified)
    return tool_input


def _pregel_key(tool: BaseTool, kwargs: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
    """Inside a LangGraph task with a checkpointer: a key for this call's pending hold, else None."""
    config = kwargs.get("config")
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not configurable or configurable.get("__pregel_checkpointer") is None:
        return None
    if configurable.get("__pregel_scratchpad") is None:
        return None
    from thoth_nb.integrations import langgraph as lg

    if not lg.HAS_INTERRUPT:
        return None
    return lg.hold_key(configurable, tool.name, kwargs.get("tool_call_id"), args)


def _blocked(binding: ToolBinding, tool: BaseTool, call: Call, decision: EnforcementDecision,
             kwargs: Mapping[str, Any]) -> Any:
    violation = binding.governor.violation(call, decision)
    _report_blocked(tool, call, kwargs, violation)
    if binding.on_block == "raise":
        raise violation
    return block_output(tool, violation, kwargs.get("tool_call_id"))


async def _ablocked(binding: ToolBinding, tool: BaseTool, call: Call, decision: EnforcementDecision,
                    kwargs: Mapping[str, Any]) -> Any:
    violation = binding.governor.violation(call, decision)
    await _areport_blocked(tool, call, kwargs, violation)
    if binding.on_block == "raise":
        raise violation
    return block_output(tool, violation, kwargs.get("tool_call_id"))


def _callback_args(tool: BaseTool, call: Call, kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    configure = (kwargs.get("callbacks"), tool.callbacks, tool.verbose or bool(kwargs.get("verbose")),
                 kwargs.get("tags"), tool.tags, kwargs.get("metadata"), tool.metadata)
    start = {"name": kwargs.get("run_name"), "run_id": kwargs.get("run_id"), "inputs": call.tool_args,
             "tool_call_id": kwargs.get("tool_call_id")}
    return configure, start


def _report_blocked(tool: BaseTool, call: Call, kwargs: Mapping[str, Any], violation: ThothPolicyViolation) -> None:
    """Tell LangChain callbacks (tracing, LangGraph's `tools` stream) that the tool started and failed
    with the block, as if it had raised. Bookkeeping only: errors here are logged and swallowed."""
    try:
        from langchain_core.callbacks import CallbackManager

        configure, start = _callback_args(tool, call, kwargs)
        manager = CallbackManager.configure(*configure)
        run = manager.on_tool_start({"name": tool.name, "description": tool.description}, str(call.tool_args),
                                    **start)
        run.on_tool_error(violation, tool_call_id=kwargs.get("tool_call_id"))
    except Exception:
        logger.debug("thoth: LangChain callbacks for a blocked call failed", exc_info=True)


async def _areport_blocked(tool: BaseTool, call: Call, kwargs: Mapping[str, Any],
                           violation: ThothPolicyViolation) -> None:
    try:
        from langchain_core.callbacks import AsyncCallbackManager

        configure, start = _callback_args(tool, call, kwargs)
        manager = AsyncCallbackManager.configure(*configure)
        run = await manager.on_tool_start({"name": tool.name, "description": tool.description},
                                          str(call.tool_args), **start)
        await run.on_tool_error(violation, tool_call_id=kwargs.get("tool_call_id"))
    except Exception:
        logger.debug("thoth: LangChain callbacks for a blocked call failed", exc_info=True)


def block_output(tool: BaseTool, violation: ThothPolicyViolation, tool_call_id: str | None) -> Any:
    """What the agent sees for a blocked call: a tool error, like a handled ToolException."""
    text = f"Blocked by Thoth policy: {violation.reason}"
    if violation.violation_id:
        text += f" (violation {violation.violation_id})"
    text += ". The tool was not run."
    if tool_call_id is None:
        return text
    return ToolMessage(text, tool_call_id=tool_call_id, name=tool.name, status="error")


def _finish(gov: Governor, call: Call, result: Any, handled: list[BaseException]) -> None:
    if handled:  # the tool raised and LangChain returned its handled error as the output
        call.error, call.outcome = handled[-1], "error"
    if isinstance(result, ToolMessage):
        if result.status == "error":  # a handled ToolException: the tool ran and reported an error
            call.outcome = "error"
        gov.finished(call, result.content, "ToolMessage")
    else:
        gov.finished(call, result)


def _governed_run(binding: ToolBinding, original: Callable[..., Any], tool: BaseTool, tool_input: Any,
                  args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    gov = binding.governor
    targs = tool_args(tool, tool_input)
    key = _pregel_key(tool, kwargs, targs)
    if key is not None:
        from thoth_nb.integrations import langgraph as lg

        done, output = lg.settle(key, tool.name, targs)
        if done:
            return output
        try:
            call, decision = lg.decide_sync(gov, tool.name, targs, key, kwargs.get("tool_call_id"))
            result = _run_decided_sync(binding, original, tool, tool_input, args, kwargs, call, decision)
            lg.remember(key, tool.name, targs, result)
            return result
        finally:
            lg.release(key)
    call = gov.begin(tool.name, (), {}, targs)
    decision = _instrument.drive_sync(gov.flow(call), gov.transport, call)
    return _run_decided_sync(binding, original, tool, tool_input, args, kwargs, call, decision)


def _run_decided_sync(binding: ToolBinding, original: Callable[..., Any], tool: BaseTool, tool_input: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any], call: Call, decision: EnforcementDecision) -> Any:
    if not decision.allowed:
        return _blocked(binding, tool, call, decision, kwargs)
    tool_input = _modified_input(tool, tool_input, decision)
    token = _active.set(_active.get() | {id(tool)})
    handled: list[BaseException] = []
    handled_token = _handled.set(handled)
    try:
        result = original(tool, tool_input, *args, **kwargs)
    except BaseException as exc:
        binding.governor.failed(call, exc)
        raise
    finally:
        _handled.reset(handled_token)
        _active.reset(token)
    _finish(binding.governor, call, result, handled)
    return result


async def _governed_arun(binding: ToolBinding, original: Callable[..., Any], tool: BaseTool, tool_input: Any,
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    gov = binding.governor
    targs = tool_args(tool, tool_input)
    key = _pregel_key(tool, kwargs, targs)
    if key is not None:
        from thoth_nb.integrations import langgraph as lg

        done, output = await lg.asettle(key, tool.name, targs)
        if done:
            return output
        try:
            call, decision = await lg.decide_async(gov, tool.name, targs, key, kwargs.get("tool_call_id"))
            result = await _run_decided_async(binding, original, tool, tool_input, args, kwargs, call, decision)
            lg.remember(key, tool.name, targs, result)
            return result
        finally:
            lg.release(key)
    call = gov.begin(tool.name, (), {}, targs)
    decision = await _instrument.drive_async(gov.flow(call), gov.transport, call)
    return await _run_decided_async(binding, original, tool, tool_input, args, kwargs, call, decision)


async def _run_decided_async(binding: ToolBinding, original: Callable[..., Any], tool: BaseTool, tool_input: Any,
                             args: tuple[Any, ...], kwargs: dict[str, Any], call: Call,
                             decision: EnforcementDecision) -> Any:
    if not decision.allowed:
        return await _ablocked(binding, tool, call, decision, kwargs)
    tool_input = _modified_input(tool, tool_input, decision)
    token = _active.set(_active.get() | {id(tool)})
    handled: list[BaseException] = []
    handled_token = _handled.set(handled)
    try:
        result = await original(tool, tool_input, *args, **kwargs)
    except BaseException as exc:
        binding.governor.failed(call, exc)
        raise
    finally:
        _handled.reset(handled_token)
        _active.reset(token)
    _finish(binding.governor, call, result, handled)
    return result


# --- instrumenting objects ----------------------------------------------------------------------


def _check_on_block(on_block: str) -> str:
    if on_block not in ON_BLOCK:
        raise ThothConfigError(f"on_block must be 'message' or 'raise', not {on_block!r}")
    return on_block


def govern_tool(tool: BaseTool, governor: Governor, *, on_block: str = "message",
                framework: str = "langchain") -> BaseTool:
    """Govern one tool instance in place (idempotent: a second call re-points it)."""
    _check_on_block(on_block)
    LangChainIntegration.install()
    LangChainIntegration.ensure_class(type(tool))
    with _bindings_lock:
        binding = binding_of(tool)
        if binding is not None:
            binding.governor, binding.on_block, binding.framework = governor, on_block, framework
        else:
            _bindings[id(tool)] = ToolBinding(tool, governor, on_block, framework)
    return tool


def ungovern_tool(tool: BaseTool) -> None:
    with _bindings_lock:
        if binding_of(tool) is not None:
            _bindings.pop(id(tool), None)


#: attributes that lead from agents, chains and graphs to the tools they run
_EDGES = ("tools", "tools_by_name", "steps", "first", "middle", "last", "bound", "runnable", "nodes",
          "branches", "default", "agent", "runnable_agent", "steps__", "mapper")
_MAX_DEPTH = 8


def find_tools(obj: Any) -> list[BaseTool]:
    """Every LangChain tool reachable from `obj` through agents, chains, ToolNodes and graph nodes."""
    found: dict[int, BaseTool] = {}
    seen: set[int] = set()

    def visit(node: Any, depth: int) -> None:
        if node is None or depth > _MAX_DEPTH or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, BaseTool):
            found.setdefault(id(node), node)
            return
        if isinstance(node, Mapping):
            for value in list(node.values()):
                visit(value, depth + 1)
            return
        if isinstance(node, (list, tuple)):
            for value in node:
                visit(value, depth + 1)
            return
        if isinstance(node, (str, bytes, int, float)) or (callable(node) and not hasattr(node, "invoke")):
            return
        for attr in _EDGES:
            try:
                value = getattr(node, attr, None)
            except Exception:
                continue
            if value is not None and (not callable(value) or hasattr(value, "invoke")):
                visit(value, depth + 1)

    visit(obj, 0)
    return list(found.values())


def _replace_callables(obj: Any, governor: Governor) -> int:
    """Plain functions next to LangChain tools in a list/dict are governed like `instrument([fn])` does."""
    count = 0
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            if callable(item) and not isinstance(item, BaseTool) and not hasattr(item, "invoke"):
                obj[i] = _instrument.govern_callable(item, governor)
                count += 1
    elif isinstance(obj, dict):
        for name, item in list(obj.items()):
            if callable(item) and not isinstance(item, BaseTool) and not hasattr(item, "invoke"):
                obj[name] = _instrument.govern_callable(item, governor, str(name))
                count += 1
    return count


def govern_all(obj: Any, governor: Governor, *, on_block: str = "message", framework: str = "langchain",
               what: str = "LangChain") -> list[BaseTool]:
    """Find and govern every tool of `obj`; an object with nothing to govern is an error, never a no-op."""
    _check_on_block(on_block)
    governor.framework = framework
    tools = find_tools(obj)
    extra = _replace_callables(obj, governor)
    if not tools and not extra:
        hint = ""
        bound = getattr(obj, "kwargs", None)
        if isinstance(bound, Mapping) and bound.get("tools"):
            hint = (" It only carries tool schemas (model.bind_tools(...)); instrument the tools themselves, "
                    "or the agent / ToolNode that runs them.")
        raise ThothConfigError(
            f"found no {what} tools to govern in a {type(obj).__name__}.{hint} "
            f"thoth_nb can govern {_SUPPORTED}. "
            "If your own code calls the tools, pass the list of tools to thoth_nb.instrument()."
        )
    for tool in tools:
        govern_tool(tool, governor, on_block=on_block, framework=framework)
    _instrument._send_inventory(governor, _descriptions(tools))
    return tools


def _descriptions(tools: Iterable[BaseTool]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": (t.description or "")[:4096]} for t in tools]


def instrument_object(obj: Any, governor: Governor, *, on_block: str = "message") -> Any:
    """The `instrument()` adapter for LangChain objects: govern in place, return the same object."""
    govern_all(obj, governor, on_block=on_block)
    return obj
