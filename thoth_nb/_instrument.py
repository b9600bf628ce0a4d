"""`instrument()`, `wrap_*_tools()`, `governed` and `ThothClient`: find tools and wrap every shape.

Each wrapper drives the one sans-I/O flow of `_flow.Governor` with a sync or an async driver.
Sync, async, generator and async-generator tools each get a wrapper of their own shape, so
governance covers the whole iteration of a streaming tool (PROTOCOL §10).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar, overload

from thoth_nb import _context, _runtime
from thoth_nb._config import ThothConfig, resolve_config
from thoth_nb._exceptions import EnforcerError, ThothConfigError
from thoth_nb._flow import Call, CancelHold, Enforce, Governor, PollHold, Sleep, failure_decision
from thoth_nb._flow import logger as _flow_logger
from thoth_nb._models import DecisionType, EnforcementDecision, tool_args_of
from thoth_nb._transports.base import Transport

__all__ = [
    "Binding",
    "ThothClient",
    "configure",
    "govern_callable",
    "governed",
    "instrument",
    "is_governed",
    "register_adapter",
    "unwrap",
    "wrap_anthropic_tools",
    "wrap_openai_tools",
]

logger = logging.getLogger("thoth_nb")
_ALLOW = DecisionType.ALLOW
_DEBUG = logging.DEBUG
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_defaults: dict[str, Any] = {}


def configure(**defaults: Any) -> None:
    """Set defaults for later `instrument()` / `governed` calls in this process (notebook convenience).

    `thoth_nb.configure(tenant_id="local", agent_id="nb-agent", approved_scope=[...])`; explicit
    arguments still win, then these, then environment variables. `configure()` with no arguments clears.
    """
    if not defaults:
        _defaults.clear()
        return
    resolve_config(**{"agent_id": "x", "tenant_id": "x", "approved_scope": [], **_defaults, **defaults})
    _defaults.update(defaults)


Options = ThothConfig | Mapping[str, Any] | None


def _options(config: Options, keywords: dict[str, Any]) -> dict[str, Any]:
    """The seed passes every option as one object (`instrument(agent, config)`); here that is a
    `ThothConfig` or a dict, with keyword options winning over it. A ThothConfig's values are taken as
    given (an explicit `enforcement="block"` is never weakened by THOTH_* variables); its None fields
    and blank ids still fall back, so each `instrument()` of a hand-built one starts its own session."""
    if config is None:
        return keywords
    if isinstance(config, ThothConfig):
        base = {k: v for k, v in config.as_kwargs().items() if v is not None and v != ""}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise ThothConfigError(
            f"the options must be a ThothConfig or a dict of options (or keyword arguments); got "
            f"{type(config).__name__}")
    return {**base, **keywords}


def _config(config: Mapping[str, Any]) -> ThothConfig:
    merged = {**_defaults, **{k: v for k, v in config.items() if v is not None}}
    override = _context.config_override.get()
    if override:
        merged.update(override)
    try:
        return resolve_config(**merged)
    except TypeError as exc:
        raise ThothConfigError(f"unknown option: {exc}") from None


# --- drivers ------------------------------------------------------------------------------------


def drive_sync(flow: Generator[Any, Any, EnforcementDecision], transport: Transport, call: Call, *,
               resume_at: Any = None, on_hold: Callable[[PollHold], None] | None = None,
               pause: tuple[type[BaseException], ...] = ()) -> EnforcementDecision:
    """Carry out the flow's effects with blocking I/O. An interrupt while held denies the hold.

    For a framework that pauses a run on a hold (LangGraph's interrupt): `on_hold` is called once, with the
    first hold, before it is polled; an exception in `pause` leaves the hold pending (the run resumes
    later) and `resume_at` is the effect a resumed flow continues from."""
    if resume_at is not None:
        effect = resume_at
    else:
        try:
            effect = next(flow)
        except StopIteration as done:  # a flow given its decision up front may need no effect at all
            first: EnforcementDecision = done.value
            return first
    while True:
        try:
            try:
                if type(effect) is Enforce:
                    result: Any = transport.enforce(effect.body)
                elif type(effect) is PollHold:
                    if on_hold is not None:
                        ask, on_hold = on_hold, None
                        ask(effect)
                    hook = _context.wait_hook
                    if hook is None or effect.wait <= 0:
                        result = transport.poll_hold(effect.token, effect.wait)
                    else:
                        result = transport.poll_hold(effect.token, 0.0)
                        if not result.get("resolved"):
                            hook(min(effect.wait, 0.1))
                elif type(effect) is CancelHold:
                    transport.cancel_hold(effect.token, effect.reason)
                    result = None
                else:
                    assert isinstance(effect, Sleep)
                    _sleep(effect.seconds, _context.wait_hook or time.sleep)
                    result = None
            except EnforcerError as exc:
                effect = flow.throw(exc)
                continue
            effect = flow.send(result)
        except StopIteration as stop:
            decision: EnforcementDecision = stop.value
            return decision
        except pause:
            raise
        except BaseException:
            _cancel(call, transport)
            raise


def _sleep(seconds: float, wait: Callable[[float], None]) -> None:
    # slices keep Ctrl-C / Interrupt Kernel prompt in any thread (and let a notebook's hook pump clicks)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        wait(min(left, 0.1))


def _cancel(call: Call, transport: Transport) -> None:
    decision = call.decision
    if decision is not None and decision.hold_token:
        try:
            transport.cancel_hold(decision.hold_token, "the waiting call was interrupted")
        except Exception:
            logger.debug("thoth: could not cancel hold", exc_info=True)


async def _acancel(call: Call, transport: Transport) -> None:
    decision = call.decision
    if decision is not None and decision.hold_token:
        try:
            await transport.acancel_hold(decision.hold_token, "the waiting call was interrupted")
        except Exception:
            logger.debug("thoth: could not cancel hold", exc_info=True)


async def drive_async(flow: Generator[Any, Any, EnforcementDecision], transport: Transport, call: Call, *,
                      resume_at: Any = None, on_hold: Callable[[PollHold], Awaitable[None]] | None = None,
                      pause: tuple[type[BaseException], ...] = ()) -> EnforcementDecision:
    """`drive_sync` on an event loop."""
    effect = resume_at if resume_at is not None else next(flow)
    while True:
        try:
            try:
                if type(effect) is Enforce:
                    result: Any = await transport.aenforce(effect.body)
                elif type(effect) is PollHold:
                    if on_hold is not None:
                        ask, on_hold = on_hold, None
                        await ask(effect)
                    result = await transport.apoll_hold(effect.token, effect.wait)
                elif type(effect) is CancelHold:
                    await transport.acancel_hold(effect.token, effect.reason)
                    result = None
                else:
                    assert isinstance(effect, Sleep)
                    await asyncio.sleep(effect.seconds)
                    result = None
            except EnforcerError as exc:
                effect = flow.throw(exc)
                continue
            effect = flow.send(result)
        except StopIteration as stop:
            decision: EnforcementDecision = stop.value
            return decision
        except pause:
            raise
        except asyncio.CancelledError:
            await _acancel(call, transport)  # a cancelled task may still await: the hold is denied before it ends
            raise
        except BaseException:
            # (closed, interrupted): no awaiting here, and the blocking request must not hold the event loop
            threading.Thread(target=_cancel, args=(call, transport), name="thoth-nb-cancel-hold", daemon=True).start()
            raise


# --- argument binding ---------------------------------------------------------------------------


def _param_names(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """Names to bind positional arguments to, when the signature is simple enough to do it safely."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            names.append(p.name)
        elif p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD):
            continue
        else:
            return None
    return tuple(names)


_NAMER_ARITY = 16  # positional arguments named by a generated function; more go through dict(zip())


def _namer(names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """`lambda a: {names[0]: a[0], ..., names[n-1]: a[n-1]}`: a dict display is ~4x cheaper than
    `dict(zip(names, a))` (no zip object, no generic constructor). The names are parameter names
    from `inspect.signature` (identifiers) and enter the source only through `repr`."""
    body = ", ".join(f"{name!r}: a[{i}]" for i, name in enumerate(names))
    namer: Callable[[tuple[Any, ...]], dict[str, Any]] = eval(f"lambda a: {{{body}}}")
    return namer


class Binding:
    """What a governed wrapper points at; re-instrumenting swaps the governor instead of re-wrapping."""

    __slots__ = ("governor", "namers", "names", "tool_name")

    def __init__(self, governor: Governor, tool_name: str, names: tuple[str, ...] | None) -> None:
        self.governor = governor
        self.tool_name = tool_name
        self.names = names
        #: namers[n] names n positional arguments (n <= len(names), up to _NAMER_ARITY); made on first use
        self.namers: list[Callable[[tuple[Any, ...]], dict[str, Any]] | None] = (
            [None] * (min(len(names), _NAMER_ARITY) + 1) if names else [])

    def tool_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The named arguments policies and events see (`path`, not `args.0`).

        `kwargs` is the wrapper's own fresh dict (or one built here), so it doubles as the recorded
        `tool_args` without another copy (the tool receives a copy through `**`)."""
        if not args:
            return kwargs or None
        names = self.names
        n = len(args)
        # `_nameable`, inlined
        if names is None or n > len(names) or (n == 1 and not kwargs and isinstance(args[0], dict)):
            return tool_args_of(args, kwargs)
        namers = self.namers
        if n < len(namers):
            namer = namers[n]
            if namer is None:
                namer = namers[n] = _namer(names[:n])
            named = namer(args)
        else:
            named = dict(zip(names, args))  # noqa: B905 - fewer args than names is fine
        if kwargs:
            named.update(kwargs)
        return named

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        """Name the arguments and start the call. The tool runs with `call.args` / `call.kwargs`: the
        caller's own arguments unless a MODIFY rewrote them (`modify_args`); the named dict is what
        policies and events see."""
        gov = self.governor  # Governor.begin, inlined
        call = Call(gov, self.tool_name, args, kwargs, self.tool_args(args, kwargs))
        gov.emitter.emit(call)  # a bare Call is its PRE event
        return call

    def _nameable(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        names = self.names
        return names is not None and len(args) <= len(names) and not (
            len(args) == 1 and not kwargs and isinstance(args[0], dict))

    def modify_args(self, call: Call, decision: EnforcementDecision) -> None:
        """Apply a MODIFY decision to the arguments the tool will run with (in their named form)."""
        if decision.decision is not DecisionType.MODIFY:
            return
        args, kwargs = call.args, call.kwargs
        if args and call.tool_args is not None and self._nameable(args, kwargs):
            args, kwargs = (), call.tool_args
        call.args, call.kwargs = self.governor.apply(decision, args, kwargs)


def is_governed(fn: Any) -> bool:
    return getattr(fn, "__thoth_binding__", None) is not None


def unwrap(fn: F) -> F:
    """The original callable behind a governed wrapper."""
    while is_governed(fn):
        fn = fn.__wrapped__  # type: ignore[attr-defined]
    return fn


def _decide_sync(binding: Binding, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """PRE, decide, hold: returns the call to run with `call.args` / `call.kwargs`, or raises."""
    call = binding.begin(args, kwargs)
    _decide_call(binding, call)
    return call


def _decide_call(binding: Binding, call: Call) -> None:
    """Decide (and hold) a started call: afterwards it runs with `call.args` / `call.kwargs`, or this raises."""
    gov = call.governor
    transport = gov.transport
    # The flow's first effect is always this enforce call; making it here lets the common case (a plain
    # ALLOW, nobody listening, no debug log) skip the generator. Anything else continues in the flow.
    try:
        decision = transport.enforce(gov.request(call))
    except EnforcerError as exc:
        decision = failure_decision(exc, gov.config)
    if decision.decision is _ALLOW and not _context.listeners and not _flow_logger.isEnabledFor(_DEBUG):
        call.decision = decision
        return
    decision = drive_sync(gov.flow(call, decision), transport, call)
    if not decision.allowed:
        raise gov.violation(call, decision)
    binding.modify_args(call, decision)


async def _decide_async(binding: Binding, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    call = binding.begin(args, kwargs)
    gov = binding.governor
    decision = await drive_async(gov.flow(call), gov.transport, call)
    if not decision.allowed:
        raise gov.violation(call, decision)
    binding.modify_args(call, decision)
    return call


def _size(chunk: Any) -> int:
    try:
        return len(str(chunk).encode("utf-8", "replace"))
    except Exception:
        return 0


def govern_callable(fn: Callable[..., Any], governor: Governor, tool_name: str | None = None) -> Callable[..., Any]:
    """Wrap one callable of any shape. An already governed one is re-pointed, never wrapped twice."""
    name = tool_name or getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    existing: Binding | None = getattr(fn, "__thoth_binding__", None)
    if existing is not None:
        existing.governor = governor
        if tool_name:
            existing.tool_name = tool_name
        return fn
    binding = Binding(governor, str(name), _param_names(fn))

    if inspect.isasyncgenfunction(fn):

        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            call = await _decide_async(binding, args, kwargs)
            gov = binding.governor
            size = 0
            inner = fn(*call.args, **call.kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:  # `async for`, but asend() and athrow() reach the tool
                    try:
                        chunk = await (inner.asend(sent) if thrown is None else inner.athrow(thrown))
                    except StopAsyncIteration:
                        break
                    thrown = None
                    call.chunks += 1
                    size += _size(chunk)
                    try:
                        sent = yield chunk
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # athrow(): the tool decides what it means
                        sent, thrown = None, exc
            except GeneratorExit:
                call.size = size
                gov.failed(call, GeneratorExit(), "closed_early")
                raise
            except BaseException as exc:
                call.size = size
                gov.failed(call, exc)
                raise
            finally:
                await inner.aclose()
            call.size = size
            gov.finished(call, None, "async_generator")

        wrapper: Callable[..., Any] = agen_wrapper
    elif inspect.isgeneratorfunction(fn):

        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            call = _decide_sync(binding, args, kwargs)
            gov = binding.governor
            size = 0
            inner = fn(*call.args, **call.kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:  # `yield from` that counts: send(), throw() and the return value reach the tool
                    try:
                        chunk = inner.send(sent) if thrown is None else inner.throw(thrown)
                    except StopIteration as stop:
                        returned = stop.value
                        break
                    thrown = None
                    call.chunks += 1
                    size += _size(chunk)
                    try:
                        sent = yield chunk
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # throw(): the tool decides what it means
                        sent, thrown = None, exc
            except GeneratorExit:
                call.size = size
                gov.failed(call, GeneratorExit(), "closed_early")
                raise
            except BaseException as exc:
                call.size = size
                gov.failed(call, exc)
                raise
            finally:
                inner.close()
            call.size = size
            gov.finished(call, None, "generator")
            return returned

        wrapper = gen_wrapper
    elif inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = await _decide_async(binding, args, kwargs)
            gov = binding.governor
            try:
                result = await fn(*call.args, **call.kwargs)
            except BaseException as exc:
                gov.failed(call, exc)
                raise
            gov.finished(call, result)
            return result

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            # _decide_sync, inlined with a shortcut: the hot path is an in-process plain ALLOW
            gov = binding.governor
            tool_args = binding.tool_args(args, kwargs)
            # args and kwargs go on the call only when the full path needs them: a pending event keeps
            # the call alive, and every object it keeps counts towards the next garbage collection
            call = Call(gov, binding.tool_name, (), _NO_KWARGS, tool_args)
            gov.emitter.emit(call)  # PRE
            decision = None
            check = gov.allow_check
            if check is not None and not _context.listeners and not _flow_logger.isEnabledFor(_DEBUG):
                try:
                    decision = check(call.tool_name, tool_args)
                except Exception:  # the full path asks again and fails closed
                    decision = None
            if decision is None:
                call.args, call.kwargs = args, kwargs
                _decide_call(binding, call)
                args, kwargs = call.args, call.kwargs
            else:
                call.decision = decision
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                gov.failed(call, exc)
                raise
            kind = type(result)
            if kind not in _PLAIN_RESULTS and hasattr(kind, "__await__"):
                return _finish_awaitable(gov, call, result)  # a sync callable returned an awaitable: POST later
            gov.finished(call, result)
            return result

        wrapper = sync_wrapper

    try:
        functools.update_wrapper(wrapper, fn)
    except (AttributeError, TypeError):
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__thoth_binding__ = binding  # type: ignore[attr-defined]
    return wrapper


#: `Call.kwargs` of a shortcut call (never mutated: MODIFY replaces `call.kwargs`, it does not edit it)
_NO_KWARGS: dict[str, Any] = {}
#: result types that are certainly not awaitable (skips a `hasattr` on the hot path)
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})


async def _finish_awaitable(gov: Governor, call: Call, awaitable: Any) -> Any:
    try:
        result = await awaitable
    except BaseException as exc:
        gov.failed(call, exc)
        raise
    gov.finished(call, result)
    return result


# --- finding tools ------------------------------------------------------------------------------

Adapter = Callable[..., Any]  # adapter(obj, governor, **options)
_ADAPTER_OPTIONS = ("on_block",)
_adapters: list[tuple[str, Callable[[Any], bool], Adapter]] = []
_adapter_lock = threading.Lock()


def register_adapter(identifier: str, matches: Callable[[Any], bool], adapter: Adapter) -> None:
    """Let an integration teach `instrument()` a framework's shape (STYLE: sentry's integrations).
    `matches(obj)` must be cheap and must not import the framework."""
    with _adapter_lock:
        _adapters[:] = [a for a in _adapters if a[0] != identifier]
        _adapters.append((identifier, matches, adapter))


def _set(obj: Any, name: str, value: Any) -> None:
    try:
        setattr(obj, name, value)
    except (AttributeError, TypeError, ValueError):
        object.__setattr__(obj, name, value)  # pydantic models and frozen-ish objects


def _tool_name(tool: Any, fallback: str) -> str:
    for attr in ("name", "__name__"):
        value = getattr(tool, attr, None)
        if isinstance(value, str) and value:
            return value
    return fallback


def _instrument_tools(tools: Any, governor: Governor) -> int:
    """Govern every tool in a `.tools` collection in place; returns how many."""
    count = 0
    if isinstance(tools, dict):
        for key, tool in list(tools.items()):
            if hasattr(tool, "run") and callable(tool.run):
                _set(tool, "run", govern_callable(tool.run, governor, _tool_name(tool, str(key))))
            elif callable(tool):
                tools[key] = govern_callable(tool, governor, str(key))
            else:
                continue
            count += 1
        return count
    for index, tool in enumerate(list(tools)):
        if hasattr(tool, "run") and callable(tool.run):
            _set(tool, "run", govern_callable(tool.run, governor, _tool_name(tool, f"tool_{index}")))
        elif callable(tool) and isinstance(tools, list):
            tools[index] = govern_callable(tool, governor)
        else:
            raise ThothConfigError(
                f"tool #{index} ({type(tool).__name__}) has no .run method and is not callable; thoth_nb "
                "cannot govern it"
            )
        count += 1
    return count


def _tool_descriptions(tools: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = getattr(tool, "run", tool)
        out.append({"name": _tool_name(tool, getattr(fn, "__name__", "tool")),
                    "description": (getattr(tool, "description", None) or inspect.getdoc(unwrap(fn)) or "")[:4096]})
    return out


def _send_inventory(governor: Governor, tools: list[dict[str, Any]]) -> None:
    if not governor.config.tool_inventory or not tools:
        return

    def send() -> None:
        try:
            governor.transport.send_inventory(governor.config.tenant_id, governor.config.agent_id, tools)
        except Exception:
            logger.debug("thoth: tool inventory not recorded", exc_info=True)

    threading.Thread(target=send, name="thoth-nb-inventory", daemon=True).start()


def instrument(agent: T, config: Options = None, /, *, transport: Transport | None = None, **options: Any) -> T:
    """Govern every tool of `agent` in place and return the same object (the seed's `instrument`).

    Options come as keywords, or as the seed's one options object (a `ThothConfig` or a dict) with
    keywords overriding it.

    Accepts any object with a `.tools` list (or dict) whose items have `.run` or are callables, a
    framework object an integration recognises (LangChain, LangGraph, ...), a list or dict of tools,
    or a single callable (returned governed). Config problems raise `ThothConfigError` here, not at
    the first tool call.
    """
    merged = _options(config, options)
    # integration-only options (e.g. on_block="raise"|"message" for LangChain/LangGraph tools)
    options = {key: merged.pop(key) for key in _ADAPTER_OPTIONS if merged.get(key) is not None}
    cfg = _config(merged)
    governor = _runtime.governor_for(cfg, transport)
    try:
        return _govern(agent, governor, options)
    except Exception:
        _runtime.forget_governor(governor)  # nothing was governed: no trace in status() or default tenants
        raise


def _govern(agent: T, governor: Governor, options: dict[str, Any]) -> T:
    """`instrument()` once its governor exists: find the shape of `agent` and govern its tools."""
    for _identifier, matches, adapter in list(_adapters):
        try:
            hit = matches(agent)
        except Exception:
            hit = False
        if hit:
            result: T = adapter(agent, governor, **options)
            return result
    if options:
        raise ThothConfigError(
            f"{', '.join(options)} only applies to framework objects (LangChain, LangGraph, ...), "
            f"not to a {type(agent).__name__}"
        )
    tools = getattr(agent, "tools", None)
    if tools is not None and not isinstance(agent, (dict, list, tuple)):
        if not isinstance(tools, (list, dict)):
            raise ThothConfigError(
                f"{type(agent).__name__}.tools is a {type(tools).__name__}; thoth_nb needs a list or dict of tools "
                "to instrument in place"
            )
        if not tools:
            raise ThothConfigError(f"{type(agent).__name__} has an empty .tools list: there is nothing to govern")
        _instrument_tools(tools, governor)
        _send_inventory(governor, _tool_descriptions(tools.values() if isinstance(tools, dict) else tools))
        return agent
    if isinstance(agent, (list, dict)):
        if not agent:
            raise ThothConfigError("the list of tools is empty: there is nothing to govern")
        _instrument_tools(agent, governor)
        return agent
    if callable(agent):
        return govern_callable(agent, governor)  # type: ignore[return-value]
    raise ThothConfigError(
        f"cannot instrument a {type(agent).__name__}: it has no .tools and no integration recognises it. "
        "Pass an object with .tools, a list/dict of tool functions, or use wrap_openai_tools()/governed()"
    )


def _wrap_dict(fns: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
               transport: Transport | None, config: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    cfg = _config(config)
    items = list(fns.items()) if isinstance(fns, Mapping) else [(_tool_name(f, "tool"), f) for f in fns]
    if not items:
        raise ThothConfigError("no tool functions given: pass a dict like {'search_docs': search_docs}")
    for name, fn in items:
        if not callable(fn):
            raise ThothConfigError(f"tool {name!r} is a {type(fn).__name__}, not a function")
    governor = _runtime.governor_for(cfg, transport)  # only once the tools are known good (see instrument())
    out = {str(name): govern_callable(fn, governor, str(name)) for name, fn in items}
    _send_inventory(governor, [{"name": n, "description": inspect.getdoc(unwrap(f)) or ""} for n, f in items])
    return out


def wrap_anthropic_tools(fns: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]], config: Options = None,
                         /, *, transport: Transport | None = None, **options: Any) -> dict[str, Callable[..., Any]]:
    """Govern tool functions used in an Anthropic `tool_use` loop: `fn = wrapped[block.name]; fn(block.input)`."""
    return _wrap_dict(fns, transport, _options(config, options))


def wrap_openai_tools(fns: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]], config: Options = None,
                      /, *, transport: Transport | None = None, **options: Any) -> dict[str, Callable[..., Any]]:
    """Govern tool functions used in an OpenAI tool-call loop: `wrapped[name](json.loads(arguments))`."""
    return _wrap_dict(fns, transport, _options(config, options))


@overload
def governed(fn: F, /) -> F: ...


@overload
def governed(*, name: str | None = None, transport: Transport | None = None, **config: Any) -> Callable[[F], F]: ...


def governed(fn: Any = None, /, *, name: str | None = None, transport: Transport | None = None,
             **config: Any) -> Any:
    """Decorator for plain tool functions: `@governed(agent_id=..., tenant_id=..., approved_scope=[...])`.

    Bare `@governed` uses the defaults set with `thoth_nb.configure(...)` and environment variables.
    """

    def decorate(func: F) -> F:
        cfg = _config(config)
        governor = _runtime.governor_for(cfg, transport)
        return govern_callable(func, governor, name)  # type: ignore[return-value]

    if fn is not None:
        return decorate(fn)
    return decorate


class ThothClient:
    """Legacy client (the seed's `ThothClient`): holds defaults (tenant, user, ...), instruments agents.
    Each method takes the seed's options object (`ThothConfig` or dict) and/or keywords, as `instrument`."""

    def __init__(self, tenant_id: str | ThothConfig | Mapping[str, Any] | None = None, user_id: str | None = None,
                 **defaults: Any) -> None:
        if isinstance(tenant_id, (ThothConfig, Mapping)):  # the seed's `new ThothClient({tenantId, userId})`
            self._defaults = _options(tenant_id, {k: v for k, v in {"user_id": user_id, **defaults}.items()
                                                  if v is not None})
            return
        self._defaults = {"tenant_id": tenant_id, "user_id": user_id, **defaults}

    def _merged(self, config: Options, options: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in self._defaults.items() if v is not None}, **_options(config, options)}

    def instrument(self, agent: T, config: Options = None, /, **options: Any) -> T:
        return instrument(agent, **self._merged(config, options))

    def wrap(self, agent: T, config: Options = None, /, **options: Any) -> T:
        """Legacy alias of `instrument`."""
        return self.instrument(agent, config, **options)

    def instrument_anthropic(self, fns: Mapping[str, Callable[..., Any]], config: Options = None, /,
                             **options: Any) -> dict[str, Callable[..., Any]]:
        """`wrap_anthropic_tools` with this client's defaults (the seed's `instrumentAnthropic`)."""
        return wrap_anthropic_tools(fns, **self._merged(config, options))

    def instrument_openai(self, fns: Mapping[str, Callable[..., Any]], config: Options = None, /,
                          **options: Any) -> dict[str, Callable[..., Any]]:
        """`wrap_openai_tools` with this client's defaults (the seed's `instrumentOpenAI`)."""
        return wrap_openai_tools(fns, **self._merged(config, options))

    def wrap_anthropic_tools(self, fns: Mapping[str, Callable[..., Any]], config: Options = None, /,
                             **options: Any) -> dict[str, Callable[..., Any]]:
        """Legacy alias of `instrument_anthropic`."""
        return self.instrument_anthropic(fns, config, **options)

    def wrap_openai_tools(self, fns: Mapping[str, Callable[..., Any]], config: Options = None, /,
                          **options: Any) -> dict[str, Callable[..., Any]]:
        """Legacy alias of `instrument_openai`."""
        return self.instrument_openai(fns, config, **options)
