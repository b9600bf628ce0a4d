"""OpenAI Agents SDK (`openai-agents`, import name `agents`): every function tool of an Agent governed.

    from agents import Agent, Runner, function_tool
    import thoth_nb

    agent = Agent(name="ops", tools=[read_file, delete_file])
    thoth_nb.instrument(agent, agent_id="ops", tenant_id="acme", approved_scope=["read_file"])

Each `FunctionTool`'s `on_invoke_tool` is wrapped: the policy decides before the body runs; a blocked
call returns the refusal as the tool's output, so the model sees it (`on_block="raise"` raises
`ThothPolicyViolation` out of the run instead).

STEP_UP uses the SDK's own human-in-the-loop (`step_up="approval"`, the default): the tool's
`needs_approval` asks thoth first, a held call interrupts the run (`result.interruptions`), the
Thoth hold is pending (`thoth_nb.holds()`), and `state.approve(item)` + `Runner.run(agent, state)`
runs it; that SDK approval also resolves the Thoth hold (reviewer recorded). A hold denied in
thoth first stays denied. `step_up="hold"` instead waits inside the tool call until the hold is
approved or denied with `thoth_nb.approve()` / `thoth_nb.deny()` (or times out).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import json
import logging
from collections.abc import Generator, Iterable
from typing import Any

from thoth_nb import _approvals, _instrument, _runtime
from thoth_nb._exceptions import EnforcerError, ThothConfigError
from thoth_nb._flow import Call, Enforce, Governor, PollHold
from thoth_nb._models import EnforcementDecision
from thoth_nb._transports.base import Transport
from thoth_nb.integrations import DidNotEnable, Integration
from thoth_nb.integrations._loop import ON_BLOCK, blocked_message, set_framework

try:
    import agents
    from agents import Agent, FunctionTool
    from agents.mcp import MCPServer as AgentsMCPServer
except ImportError:  # pragma: no cover - exercised without the extra
    raise DidNotEnable("the openai-agents package is not installed") from None


class OpenAIAgentsIntegration(Integration):
    """Tools are governed per instance by instrument()/govern_agent(). Patched once, restored on unload:
    `RunContextWrapper.approve_tool` / `reject_tool`, so a decision taken in the SDK (`state.approve()` /
    `state.reject()`) is recorded on the Thoth hold of that call at once (bookkeeping only: the SDK
    decides first, and a failure here is logged, never raised)."""

    identifier = "openai_agents"
    package = "openai-agents"
    supported = ((0, 2), (0, 30))

    @classmethod
    def setup_once(cls) -> None:
        from agents.run_context import RunContextWrapper

        for attr, approve in (("approve_tool", True), ("reject_tool", False)):
            original = getattr(RunContextWrapper, attr, None)
            if callable(original):
                cls.patch(RunContextWrapper, attr, _recording(original, approve))


def _recording(original: Any, approve: bool) -> Any:
    @functools.wraps(original)
    def decide(self: Any, approval_item: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, approval_item, *args, **kwargs)
        try:
            _sdk_decided(approval_item, approve)
        except Exception:  # bookkeeping: never break the SDK's own approval
            logger.warning("thoth: could not record the SDK's tool approval on the Thoth hold", exc_info=True)
        return result

    return decide


#: call_id -> governance of a call held by thoth and interrupted in the SDK (see _NeedsApproval)
_held: collections.OrderedDict[str, _Governance] = collections.OrderedDict()


def _sdk_decided(approval_item: Any, approve: bool) -> None:
    call_id = getattr(getattr(approval_item, "raw_item", None), "call_id", None)
    if not isinstance(call_id, str):
        return
    state = _held.pop(call_id, None)
    if state is None:
        return
    entry = state.pending.get(call_id)
    if entry is None or not isinstance(entry[2], PollHold):
        return
    call, flow, effect = entry
    if flow is None:
        return
    governor = call.governor
    note = (
        "approved in the OpenAI Agents SDK (RunState.approve)"
        if approve
        else ("rejected in the OpenAI Agents SDK (RunState.reject)")
    )
    config = governor.config
    try:
        _approvals.resolve(effect.token, approve=approve, note=note, api_url=config.api_url, api_key=config.api_key)
    except (LookupError, RuntimeError, ThothConfigError) as exc:
        logger.debug("thoth: hold %s not resolved from the SDK decision: %s", effect.token, exc)
    if not approve:  # the SDK will not run it: finish the call now, as a block, so it is recorded
        state.pending.pop(call_id, None)
        decision = _instrument.drive_sync(_resume(flow, effect), governor.transport, call)
        if not decision.allowed:
            governor.violation(call, decision)


OpenAIAgentsIntegration.install()

__all__ = ["govern_agent", "instrument_object", "ungovern_agent"]

logger = logging.getLogger("thoth_nb")

FRAMEWORK = "openai_agents"
STEP_UP_MODES = ("approval", "hold")
_PENDING_LIMIT = 1024
_SYNC_MARKER = "__agents_sync_function_tool__"


class _Governance:
    """The thoth state of one function tool: governor, options, and decisions waiting for the SDK."""

    def __init__(self, tool: FunctionTool, governor: Governor, on_block: str, step_up: str) -> None:
        self.name = tool.name
        self.governor = governor
        self.on_block = on_block
        self.step_up = step_up
        # call_id -> (call, suspended flow, its next effect) decided in needs_approval, run in on_invoke
        self.pending: collections.OrderedDict[
            str, tuple[Call, Generator[Any, Any, EnforcementDecision] | None, Any]
        ] = collections.OrderedDict()

    def remember(self, call_id: str, entry: tuple[Call, Any, Any]) -> None:
        self.pending[call_id] = entry
        while len(self.pending) > _PENDING_LIMIT:
            self.pending.popitem(last=False)


async def _start(governor: Governor, call: Call) -> tuple[Generator[Any, Any, EnforcementDecision] | None, Any]:
    """Run the flow up to the decision: returns (None, final decision) or (flow, PollHold) when held."""
    flow = governor.flow(call)
    effect = next(flow)
    try:
        while type(effect) is Enforce:
            try:
                reply = await governor.transport.aenforce(effect.body)
            except EnforcerError as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(reply)
    except StopIteration as stop:
        return None, stop.value
    return flow, effect


def _resume(flow: Generator[Any, Any, EnforcementDecision], effect: Any) -> Generator[Any, Any, EnforcementDecision]:
    """A flow that continues a suspended one from `effect` (what `drive_async` can carry out)."""
    try:
        while True:
            try:
                reply = yield effect
            except EnforcerError as exc:
                effect = flow.throw(exc)
                continue
            effect = flow.send(reply)
    except StopIteration as stop:
        decision: EnforcementDecision = stop.value
        return decision


async def _approve_for_sdk(governor: Governor, token: str) -> None:
    """The SDK's RunState.approve() was the human decision: record it on the Thoth hold."""
    config = governor.config
    try:
        await asyncio.to_thread(
            _approvals.resolve,
            token,
            approve=True,
            note="approved in the OpenAI Agents SDK (RunState.approve)",
            api_url=config.api_url,
            api_key=config.api_key,
        )
    except (LookupError, RuntimeError) as exc:  # already resolved (e.g. denied in thoth): polling tells
        logger.debug("thoth: hold %s not resolved from the SDK approval: %s", token, exc)
    except ThothConfigError as exc:  # the server wants a reviewer key: wait for a thoth reviewer too
        logger.info("thoth: %s; waiting for a reviewer to resolve hold %s", exc, token)


async def _stale(state: _Governance, call_id: str, args: dict[str, Any]) -> bool:
    """Is the decision remembered for `call_id` one for other arguments? Call ids are only unique within
    a response (local models and proxies reuse `call_0`), and a call the SDK never invoked (a tool input
    guardrail rejected it, the run stopped) leaves its decision behind: it is dropped, its hold cancelled,
    so another call is decided afresh and never inherits it."""
    entry = state.pending.get(call_id)
    if entry is None or entry[0].kwargs == args:
        return False
    state.pending.pop(call_id, None)
    _held.pop(call_id, None)
    call, flow, effect = entry
    if flow is not None:
        if isinstance(effect, PollHold):
            try:
                await call.governor.transport.acancel_hold(effect.token, "a later tool call reused its call id")
            except Exception:
                logger.debug("thoth: could not cancel stale hold %s", effect.token, exc_info=True)
        flow.close()
    return True


def _sdk_approved(ctx: Any, name: str) -> bool:
    getter = getattr(ctx, "get_approval_status", None)
    call_id = getattr(ctx, "tool_call_id", None)
    if getter is None or not call_id:
        return False
    try:
        return getter(name, call_id) is True
    except Exception:
        return False


def _parse(raw: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if raw and raw.strip() else {}
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


#: errors of the governed call running in this context that the SDK turned into a tool output
_handled: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar("thoth_agents_handled",
                                                                                     default=None)


class _RecordHandledError:
    """Wraps the SDK's `_on_handled_error` hook (called when its `failure_error_function` turned a tool's
    exception into the output the model sees), so the governed call is recorded as failed, not as a
    success. Bookkeeping only: it always calls the SDK's own hook."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        errors = _handled.get()
        if errors is not None:
            errors.extend(a for a in args[1:2] if isinstance(a, BaseException))
        return self.original(*args, **kwargs)


def _record_handled_errors(inner: Any) -> None:
    """The SDK (0.2x) wraps a function tool's body in an invoker that catches its exceptions; feature-detected."""
    hook = getattr(inner, "_on_handled_error", None)
    if callable(hook) and not isinstance(hook, _RecordHandledError):
        inner._on_handled_error = _RecordHandledError(hook)


def _unrecord_handled_errors(inner: Any) -> None:
    hook = getattr(inner, "_on_handled_error", None)
    if isinstance(hook, _RecordHandledError):
        inner._on_handled_error = hook.original


class _GovernedInvoker:
    """Replaces `FunctionTool.on_invoke_tool(ctx, input_json)`; the original is kept in `.inner`."""

    def __init__(self, inner: Any, state: _Governance) -> None:
        self.inner = inner
        self.state = state
        _record_handled_errors(inner)
        if getattr(inner, _SYNC_MARKER, False):
            setattr(self, _SYNC_MARKER, True)

    def __agents_bind_function_tool__(self, tool: FunctionTool) -> _GovernedInvoker:
        """FunctionTool copies rebind their invoker; keep governance around the rebound original."""
        bind = getattr(self.inner, "__agents_bind_function_tool__", None)
        inner = bind(tool) if callable(bind) else self.inner
        return self if inner is self.inner else _GovernedInvoker(inner, self.state)

    async def __call__(self, ctx: Any, input: str) -> Any:
        state = self.state
        call_id = getattr(ctx, "tool_call_id", None)
        if call_id:
            await _stale(state, call_id, _parse(input))
        entry = state.pending.pop(call_id, None) if call_id else None
        if call_id:
            _held.pop(call_id, None)
        if entry is not None:
            call, flow, effect = entry
            governor = call.governor
            sdk_approved = True  # the SDK runs a call whose needs_approval said True only once approved
        else:
            governor = state.governor
            args = _parse(input)
            call = governor.begin(state.name, (), args, args)
            flow, effect = await _start(governor, call)
            sdk_approved = _sdk_approved(ctx, state.name)
        if flow is None:
            decision: EnforcementDecision = effect
        else:
            if isinstance(effect, PollHold) and sdk_approved:
                await _approve_for_sdk(governor, effect.token)
            decision = await _instrument.drive_async(_resume(flow, effect), governor.transport, call)
        if not decision.allowed:
            violation = governor.violation(call, decision)
            if state.on_block == "raise":
                raise violation
            return blocked_message(state.name, violation)
        _, kwargs = governor.apply(decision, (), dict(call.kwargs))
        if kwargs != call.kwargs:  # MODIFY: the tool runs with the reviewed arguments
            input = json.dumps(kwargs)
        errors: list[BaseException] = []
        token = _handled.set(errors)
        try:
            result = await self.inner(ctx, input)
        except BaseException as exc:
            governor.failed(call, exc)
            raise
        finally:
            _handled.reset(token)
        if errors:  # the tool raised and the SDK told the model so: a failed call
            call.error, call.outcome = errors[-1], "error"
        governor.finished(call, result)
        return result


class _NeedsApproval:
    """Replaces `FunctionTool.needs_approval`: asks thoth; STEP_UP becomes the SDK's interruption."""

    def __init__(self, original: Any, state: _Governance) -> None:
        self.original = original
        self.state = state

    async def __call__(self, run_context: Any, params: dict[str, Any], call_id: str) -> bool:
        original = self.original
        wanted = False
        if original is True:
            wanted = True
        elif callable(original):
            answer = original(run_context, params, call_id)
            wanted = bool(await answer) if asyncio.iscoroutine(answer) else bool(answer)
        state = self.state
        await _stale(state, call_id, dict(params))
        known = state.pending.get(call_id)
        if known is not None:  # evaluated again for the same call: one decision, one hold
            return wanted or isinstance(known[2], PollHold)
        governor = state.governor
        args = dict(params)
        call = governor.begin(state.name, (), args, args)
        flow, effect = await _start(governor, call)
        state.remember(call_id, (call, flow, effect))
        if isinstance(effect, PollHold):
            _held[call_id] = state
            while len(_held) > _PENDING_LIMIT:
                _held.popitem(last=False)
        return wanted or isinstance(effect, PollHold)


def _govern_tool(tool: FunctionTool, governor: Governor, on_block: str, step_up: str) -> None:
    current = tool.on_invoke_tool
    if isinstance(current, _GovernedInvoker):  # re-instrumenting: re-point, never wrap twice
        state = current.state
        state.governor, state.on_block = governor, on_block
    else:
        state = _Governance(tool, governor, on_block, step_up)
        tool.on_invoke_tool = _GovernedInvoker(current, state)
    needs = tool.needs_approval
    if step_up == "approval":
        if isinstance(needs, _NeedsApproval):
            needs.state = state
        else:
            tool.needs_approval = _NeedsApproval(needs, state)
    elif isinstance(needs, _NeedsApproval):
        tool.needs_approval = needs.original
    state.step_up = step_up


def _restore_tool(tool: FunctionTool) -> None:
    if isinstance(tool.on_invoke_tool, _GovernedInvoker):
        tool.on_invoke_tool = tool.on_invoke_tool.inner
        _unrecord_handled_errors(tool.on_invoke_tool)
    if isinstance(tool.needs_approval, _NeedsApproval):
        tool.needs_approval = tool.needs_approval.original


def _agents_and_tools(obj: Any) -> tuple[list[Any], list[FunctionTool], list[str]]:
    """Agents reachable from obj (handoffs, agents used as tools), their function tools, and tools we skip."""
    seen: set[int] = set()
    found_agents: list[Any] = []
    tools: list[FunctionTool] = []
    skipped: list[str] = []

    def visit(item: Any) -> None:
        if id(item) in seen:
            return
        seen.add(id(item))
        if isinstance(item, Agent):
            found_agents.append(item)
            for tool in item.tools:
                visit(tool)
            for handoff in item.handoffs:
                visit(handoff)
        elif isinstance(item, FunctionTool):
            tools.append(item)
            nested = getattr(item, "_agent_instance", None)
            if nested is not None:
                visit(nested)
        elif isinstance(item, (list, tuple)):
            for part in item:
                visit(part)
        elif not isinstance(item, agents.Handoff):
            skipped.append(getattr(item, "name", type(item).__name__))

    visit(obj)
    return found_agents, tools, skipped


def _check(on_block: str, step_up: str) -> None:
    if on_block not in ON_BLOCK:
        raise ThothConfigError(f"on_block must be one of {', '.join(ON_BLOCK)}; got {on_block!r}")
    if step_up not in STEP_UP_MODES:
        raise ThothConfigError(f"step_up must be 'approval' (the SDK's interruptions) or 'hold'; got {step_up!r}")


def _mcp_servers(obj: Any, found_agents: list[Any]) -> list[Any]:
    """The Agents SDK's MCP servers (`Agent(mcp_servers=[...])`) reachable from obj."""
    servers = [s for a in found_agents for s in (getattr(a, "mcp_servers", None) or [])]
    if isinstance(obj, AgentsMCPServer):
        servers.append(obj)
    unique: dict[int, Any] = {id(s): s for s in servers}
    return list(unique.values())


def instrument_object(obj: Any, governor: Governor, *, on_block: str = "message", step_up: str = "approval") -> Any:
    """`thoth_nb.instrument()` adapter: an Agent (with its handoffs, agents-as-tools and MCP servers), a
    FunctionTool, an Agents SDK MCP server, or a list of them, governed in place."""
    _check(on_block, step_up)
    OpenAIAgentsIntegration.install()  # again after an unload; a no-op otherwise
    found_agents, tools, skipped = _agents_and_tools(obj)
    servers = _mcp_servers(obj, found_agents)
    skipped = [name for name in skipped if not any(name == getattr(s, "name", None) for s in servers)]
    if not tools and not servers:
        raise ThothConfigError(
            f"cannot instrument a {type(obj).__name__} from the OpenAI Agents SDK: it has no function tools. "
            "Pass an agents.Agent with tools=[...] (@function_tool or FunctionTool) or mcp_servers=[...], a "
            "FunctionTool, or a list of them"
        )
    set_framework(governor, FRAMEWORK)
    for tool in tools:
        _govern_tool(tool, governor, on_block, step_up)
    if servers:
        # MCP tools: the server's call_tool is governed (STEP_UP is a blocking hold there), named <server>.<tool>
        from thoth_nb.integrations import mcp as mcp_integration  # openai-agents depends on mcp

        for server in servers:
            mcp_integration.govern_call_tool(server, governor, str(server.name), on_block)
    if skipped:
        logger.warning(
            "thoth: %s are not Python function tools and run outside thoth_nb governance", ", ".join(skipped)
        )
    _instrument._send_inventory(governor, [{"name": t.name, "description": t.description or ""} for t in tools])
    return obj


def govern_agent(
    agent: Any,
    *,
    step_up: str = "approval",
    on_block: str = "message",
    transport: Transport | None = None,
    **config: Any,
) -> Any:
    """Govern every function tool of `agent` in place (also its handoff agents and agents used as tools).

    `step_up="approval"` maps STEP_UP onto the SDK's tool approval (run interruptions); `"hold"` waits for
    `thoth_nb.approve()`. `on_block="message"` returns the refusal to the model; `"raise"` raises.
    The remaining keyword arguments are thoth configuration. Returns the same agent.
    """
    _check(on_block, step_up)
    governor = _runtime.governor_for(_instrument._config(config), transport)
    return instrument_object(agent, governor, on_block=on_block, step_up=step_up)


def ungovern_agent(agent: Any) -> Any:
    """Restore the original `on_invoke_tool` / `needs_approval` of every governed function tool (and the
    `call_tool` of governed MCP servers)."""
    found_agents, tools, _ = _agents_and_tools(agent)
    for tool in tools:
        _restore_tool(tool)
    servers = _mcp_servers(agent, found_agents)
    if servers:
        from thoth_nb.integrations import mcp as mcp_integration

        for server in servers:
            mcp_integration.ungovern(server)
    return agent


def tool_names(obj: Iterable[Any] | Any) -> list[str]:
    """Names of the function tools thoth_nb would govern in `obj` (handy in notebooks)."""
    return [t.name for t in _agents_and_tools(obj)[1]]
