"""LangGraph integration: govern the tools of a `ToolNode`, a compiled graph or a prebuilt ReAct agent.

    agent = create_react_agent(model, tools, checkpointer=InMemorySaver())
    thoth_nb.instrument(agent, agent_id="a", tenant_id="t", approved_scope=["search"])

`instrument()` walks the graph (nodes, subgraphs, `ToolNode.tools_by_name`, including the tools a
ToolNode built from plain functions) and governs every LangChain tool it finds, in place, through the
LangChain integration (`BaseTool.run` / `arun`, so each call is governed exactly once whether the
ToolNode runs it sync or async). A graph with no tools to govern is an error, never a silent no-op.

Outcomes, as the agent sees them:

* ALLOW / MODIFY: the tool runs (with the modified arguments for MODIFY).
* BLOCK: the tool body does not run. `on_block="message"` (default) gives the model a
  `ToolMessage(status="error")` saying it was blocked and why, so the agent can carry on;
  `on_block="raise"` raises `ThothPolicyViolation` out of the graph run.
* STEP_UP with a checkpointer (the graph's own, or its parent's): the held call becomes LangGraph's
  own human-in-the-loop. The tool raises `interrupt({...})` with the hold (tool, args, reason, hold
  token), the run pauses with it in `result["__interrupt__"]` / `graph.get_state(config).interrupts`,
  and the Thoth hold stays pending (also visible in `thoth_nb.holds()`). Resume with
  `graph.invoke(Command(resume={"approve": True}), config)` (or `{"approve": False, "reason": "..."}`;
  `True`/`False` and `{"decision": "approve"|"deny"}` work too; optional `reviewer`, `note`, `scope`,
  `modified_args`). The resume value resolves the hold through `thoth_nb.approve` / `thoth_nb.deny`
  and the same governed call continues: one PRE event and one POST (or BLOCK) event per call, a
  denial becomes the blocked-tool error above. An unrecognised resume value denies (fail closed).
  When the paused process is gone, a resumed call asks again and the resume value answers the new hold.
  With a Thoth server (`api_url`), the resume value resolves the hold only when the SDK's API key may
  review holds; an agent key may not, so the resumed call then waits until a reviewer decides on the
  server (its UI, `thoth-nb approve`), up to the step-up timeout. Approve there, then resume.
* STEP_UP without a checkpointer: the call waits for `thoth_nb.approve()` / `deny()` (from another
  thread, the notebook widget, the CLI or the server) like any governed call, up to the step-up timeout.

Limits. LangGraph re-runs a whole node after a resume and matches resume values to interrupts by
their position within a task. The prebuilt agents (`langchain.agents.create_agent`,
`create_react_agent`) run every tool call as a task of its own, so each held call has its own
interrupt. A hand-built graph whose ToolNode gets several tool calls in one step runs them in one
task: governed calls that already finished in an earlier run of that task return their earlier output
(the tool does not run twice, the call is recorded once). With several *held* calls in one step, one
surfaces per pause and the others ask after each resume, in an order LangGraph does not fix: answer
with the hold token (`Command(resume=value["resume_with"])`) so an answer only resolves the hold it
was meant for; one that reaches another call denies that call (fail closed).

Events carry `metadata.framework = "langgraph"`.

Versions: tested with langgraph 1.2 (langchain-core 1.8) and langgraph 0.2.76 (langchain-core 0.3).
Before langgraph 1.0, `ToolNode(handle_tool_errors=True)` (its old default) turns every exception,
`ThothPolicyViolation` from `on_block="raise"` included, into an error `ToolMessage`; the tool still
does not run. A langgraph without `interrupt()` makes STEP_UP wait on the hold instead.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Generator, Mapping
from typing import Any

from thoth_nb import _instrument, _json
from thoth_nb._approvals import resolve
from thoth_nb._exceptions import ThothConfigError
from thoth_nb._flow import Call, Governor, PollHold
from thoth_nb._models import EnforcementDecision, json_safe
from thoth_nb.integrations import DidNotEnable, Integration

try:
    from langgraph.errors import GraphBubbleUp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DidNotEnable("langgraph is not installed") from exc
try:
    from langgraph.types import interrupt
except ImportError:  # pragma: no cover - langgraph before interrupt(): holds block instead
    interrupt = None  # type: ignore[assignment]

from thoth_nb.integrations import langchain as _lc

__all__ = [
    "LangGraphIntegration", "completed", "decide_async", "decide_sync", "hold_key", "instrument_object", "pending",
    "remember",
]

logger = logging.getLogger("thoth_nb")

#: False on langgraph versions without `interrupt()`: STEP_UP then waits on the hold as usual
HAS_INTERRUPT = interrupt is not None

INTERRUPT_TYPE = "thoth_step_up"
_MAX_PENDING = 512


class _Pending:
    """A governed call paused by a LangGraph interrupt: its flow is suspended at the hold poll."""

    __slots__ = ("call", "effect", "flow", "governor")

    def __init__(self, governor: Governor, call: Call, flow: Generator[Any, Any, EnforcementDecision],
                 effect: PollHold) -> None:
        self.governor = governor
        self.call = call
        self.flow = flow
        self.effect = effect


_pending: collections.OrderedDict[Any, _Pending] = collections.OrderedDict()
#: outputs of governed calls that finished inside a checkpointed task, for the task's re-run after a resume
_done: collections.OrderedDict[Any, tuple[str, Any, Any]] = collections.OrderedDict()
_MAX_DONE = 1024
#: calls of a task still running: LangGraph's async ToolNode leaves the siblings of an interrupted call
#: running (asyncio.gather), so a prompt resume can re-run the node while they are still in flight
_running: dict[Any, concurrent.futures.Future[None]] = {}
_WAIT_FOR_SIBLING = 30.0
_pending_lock = threading.Lock()


class LangGraphIntegration(Integration):
    identifier = "langgraph"
    package = "langgraph"
    supported = ((0, 2), (2,))

    @classmethod
    def setup_once(cls) -> None:
        """Nothing of LangGraph's is patched: its tools are governed through `BaseTool.run`/`arun`."""

    @classmethod
    def teardown(cls) -> None:
        super().teardown()
        with _pending_lock:
            entries = list(_pending.values())
            _pending.clear()
            _done.clear()
            running = list(_running.values())
            _running.clear()
        for future in running:
            if not future.done():
                future.set_result(None)
        for entry in entries:
            _cancel(entry, "thoth_nb's LangGraph integration was unloaded")


def pending() -> list[dict[str, Any]]:
    """Governed calls paused by an interrupt in this process, waiting for `Command(resume=...)`."""
    with _pending_lock:
        entries = list(_pending.values())
    return [_payload(e.call, e.effect) for e in entries]


def hold_key(configurable: Mapping[str, Any], tool_name: str, tool_call_id: str | None,
             args: Mapping[str, Any]) -> tuple[Any, ...]:
    """Identifies one tool call across the re-execution of its node after a resume."""
    thread = str(configurable.get("thread_id", ""))
    namespace = str(configurable.get("checkpoint_ns", ""))  # names the task; stable when it re-runs
    if tool_call_id:
        return (thread, namespace, tool_call_id)
    try:
        text = _json.dumps(json_safe(dict(args)))
    except Exception:
        text = repr(sorted(args))
    return (thread, namespace, tool_name, text)


def completed(key: Any, tool_name: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
    """The output of this call if it already finished in an earlier run of the same task.

    LangGraph re-runs a whole node after a resume, so a tool that ran (or was blocked) next to a held
    call in the same ToolNode step would run again; the governed call returns what it returned then,
    without running the tool or recording the call twice."""
    with _pending_lock:
        found = _done.get(key)
    if found is None or found[0] != tool_name or found[1] != json_safe(dict(args)):
        return False, None
    return True, found[2]


def _settled_or_claimed(key: Any, tool_name: str,
                        args: Mapping[str, Any]) -> tuple[bool, Any, concurrent.futures.Future[None] | None]:
    """One step of `settle`/`asettle`: (True, output, None) if the call already finished; else claim it for
    this run, (False, None, None); or, if a run of it is still in flight, (False, None, that run) to wait for."""
    done, output = completed(key, tool_name, args)
    if done:
        return done, output, None
    with _pending_lock:
        running = _running.get(key)
        if running is None:
            _running[key] = concurrent.futures.Future()
    return False, None, running


def _gave_up(key: Any, tool_name: str) -> None:
    logger.warning("thoth: an earlier run of %s is still in flight after %.0f s; deciding again",
                   tool_name, _WAIT_FOR_SIBLING)
    release(key)


def settle(key: Any, tool_name: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
    """`completed`, waiting first for a run of the same call still in flight (then it returns what that
    run returned, so a tool never runs twice); otherwise claims the call for this run (see `release`)."""
    while True:
        done, output, running = _settled_or_claimed(key, tool_name, args)
        if running is None:
            return done, output
        try:
            running.result(timeout=_WAIT_FOR_SIBLING)
        except concurrent.futures.TimeoutError:
            _gave_up(key, tool_name)


async def asettle(key: Any, tool_name: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
    """`settle` for async tools: waits without blocking the event loop."""
    while True:
        done, output, running = _settled_or_claimed(key, tool_name, args)
        if running is None:
            return done, output
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), _WAIT_FOR_SIBLING)
        except TimeoutError:
            _gave_up(key, tool_name)


def release(key: Any) -> None:
    """This run of the call is over (finished, failed or paused): wake whoever waits in `settle`."""
    with _pending_lock:
        running = _running.pop(key, None)
    if running is not None and not running.done():
        running.set_result(None)


def remember(key: Any, tool_name: str, args: Mapping[str, Any], output: Any) -> None:
    with _pending_lock:
        _done[key] = (tool_name, json_safe(dict(args)), output)
        _done.move_to_end(key)
        while len(_done) > _MAX_DONE:
            _done.popitem(last=False)


def _take(key: Any, tool_name: str, args: Mapping[str, Any]) -> _Pending | None:
    with _pending_lock:
        entry = _pending.pop(key, None)
    if entry is None:
        return None
    if entry.call.tool_name != tool_name or json_safe(entry.call.tool_args) != json_safe(dict(args)):
        _cancel(entry, "the resumed call did not match the held one")
        return None
    return entry


def _stash(key: Any, entry: _Pending) -> None:
    evicted: list[_Pending] = []
    with _pending_lock:
        old = _pending.pop(key, None)
        if old is not None and old is not entry:
            evicted.append(old)
        _pending[key] = entry
        while len(_pending) > _MAX_PENDING:
            evicted.append(_pending.popitem(last=False)[1])
    for item in evicted:
        _cancel(item, "too many paused LangGraph calls; the oldest was dropped")


def _cancel(entry: _Pending, reason: str) -> None:
    try:
        entry.governor.transport.cancel_hold(entry.effect.token, reason)
    except Exception:
        logger.debug("thoth: could not cancel hold %s", entry.effect.token, exc_info=True)
    try:
        entry.flow.close()
    except Exception:
        logger.debug("thoth: closing a paused flow failed", exc_info=True)


def _payload(call: Call, effect: PollHold) -> dict[str, Any]:
    decision = call.decision
    return {
        "type": INTERRUPT_TYPE,
        "tool": call.tool_name,
        "tool_args": json_safe(call.tool_args) if call.tool_args is not None else {},
        "reason": decision.reason if decision is not None else "",
        "hold_token": effect.token,
        "violation_id": decision.violation_id if decision is not None else None,
        "risk_score": decision.risk_score if decision is not None else None,
        "agent_id": call.config.agent_id,
        "tenant_id": call.config.tenant_id,
        "resume_with": {"approve": True, "hold_token": effect.token},
        "message": f"Thoth holds {call.tool_name}: "
                   f"{decision.reason if decision is not None else 'approval required'}. "
                   "Resume with Command(resume={'approve': True}) or {'approve': False, 'reason': '...'}.",
    }


_YES = {"approve", "approved", "allow", "allowed", "yes", "y", "true", "ok"}
_NO = {"deny", "denied", "block", "blocked", "reject", "rejected", "no", "n", "false"}


def parse_resume(value: Any) -> tuple[bool, dict[str, Any]]:
    """A resume value as (approve?, resolve options). Anything unrecognised denies (fail closed)."""
    options: dict[str, Any] = {}
    verdict: bool | None = None
    if isinstance(value, bool):
        verdict = value
    elif isinstance(value, str):
        verdict = True if value.strip().lower() in _YES else False if value.strip().lower() in _NO else None
    elif isinstance(value, Mapping):
        if isinstance(value.get("approve"), bool):
            verdict = value["approve"]
        elif isinstance(value.get("approved"), bool):
            verdict = value["approved"]
        elif isinstance(value.get("decision"), str):
            word = value["decision"].strip().lower()
            verdict = True if word in _YES else False if word in _NO else None
        for name in ("reviewer", "scope"):
            if isinstance(value.get(name), str):
                options[name] = value[name]
        note = value.get("note") or value.get("reason")
        if isinstance(note, str):
            options["note"] = note
        if isinstance(value.get("modified_args"), Mapping):
            options["modified_args"] = dict(value["modified_args"])
    if verdict is None:
        logger.warning("thoth: unrecognised resume value %r for a held call; denying it", value)
        return False, {"note": f"unrecognised resume value: {value!r}"[:200]}
    return verdict, options


def _meant_for(governor: Governor, call: Call, token: str, value: Any) -> bool:
    """A resume value naming a hold (`{"approve": True, "hold_token": ...}`) only answers that hold, so
    an answer can never approve a different call (several held calls in one ToolNode step). A named
    hold of the same tool and arguments is the same call asked again after the paused process was
    lost: accepted, and the stale hold is cancelled."""
    named = value.get("hold_token") if isinstance(value, Mapping) else None
    if not isinstance(named, str) or named == token:
        return True
    if not governor.config.embedded:
        logger.warning("thoth: resume value names hold %s but this call holds %s; applying it", named, token)
        return True
    from thoth_nb import _runtime

    record = _runtime.local_store().get_hold(named, governor.config.tenant_id)
    same = record is not None and record.get("tool_name") == call.tool_name and json_safe(
        record.get("tool_args")) == json_safe(call.tool_args)
    if same and record is not None and record.get("status") == "pending":
        try:
            governor.transport.cancel_hold(named, "superseded by the same call asked again after a resume")
        except Exception:
            logger.debug("thoth: could not cancel superseded hold %s", named, exc_info=True)
    if not same:
        logger.warning("thoth: resume value for hold %s reached the call holding %s; denying it", named, token)
    return same


def _resolve(governor: Governor, call: Call, token: str, value: Any) -> None:
    approve, options = parse_resume(value)
    if not _meant_for(governor, call, token, value):
        approve, options = False, {"note": "the resume value was for another held call"}
    config = governor.config
    if approve:
        options.setdefault("note", "approved by LangGraph resume")
    else:
        options.setdefault("note", "denied by LangGraph resume")
    try:
        resolve(token, approve=approve, api_url=config.api_url, api_key=config.api_key, **options)
    except (LookupError, RuntimeError) as exc:  # already resolved (e.g. in the dashboard) or expired
        logger.warning("thoth: resume value for hold %s not applied: %s", token, exc)
    except ThothConfigError as exc:  # a server refused this SDK's key: a reviewer must decide there
        logger.warning("thoth: resume value for hold %s not applied (%s); the call waits for a reviewer", token, exc)


def _ask(governor: Governor, call: Call, flow: Generator[Any, Any, EnforcementDecision], effect: PollHold,
         key: Any) -> Any:
    """LangGraph's interrupt: raises (pausing the run) the first time, returns the resume value after."""
    try:
        return interrupt(_payload(call, effect))
    except GraphBubbleUp:
        _stash(key, _Pending(governor, call, flow, effect))
        raise


def _start(governor: Governor, tool_name: str, args: dict[str, Any],
           key: Any) -> tuple[Governor, Call, Generator[Any, Any, EnforcementDecision], Any]:
    """The paused flow of this call when it is a resume (the effect it stopped at), else a new one (effect None)."""
    entry = _take(key, tool_name, args)
    if entry is None:
        call = governor.begin(tool_name, (), {}, args)
        return governor, call, governor.flow(call), None
    return entry.governor, entry.call, entry.flow, entry.effect


def decide_sync(governor: Governor, tool_name: str, args: dict[str, Any], key: Any,
                tool_call_id: str | None = None) -> tuple[Call, EnforcementDecision]:
    """Drive the governance flow; a hold becomes a LangGraph interrupt instead of a blocking wait."""
    gov, call, flow, effect = _start(governor, tool_name, args, key)

    def ask(hold: PollHold) -> None:
        _resolve(gov, call, hold.token, _ask(gov, call, flow, hold, key))

    decision = _instrument.drive_sync(flow, gov.transport, call, resume_at=effect, on_hold=ask,
                                      pause=(GraphBubbleUp,))
    return call, decision


async def decide_async(governor: Governor, tool_name: str, args: dict[str, Any], key: Any,
                       tool_call_id: str | None = None) -> tuple[Call, EnforcementDecision]:
    """`decide_sync` for `arun` / `ainvoke`."""
    gov, call, flow, effect = _start(governor, tool_name, args, key)

    async def ask(hold: PollHold) -> None:
        value = _ask(gov, call, flow, hold, key)
        await asyncio.to_thread(_resolve, gov, call, hold.token, value)

    decision = await _instrument.drive_async(flow, gov.transport, call, resume_at=effect, on_hold=ask,
                                             pause=(GraphBubbleUp,))
    return call, decision


def instrument_object(obj: Any, governor: Governor, *, on_block: str = "message") -> Any:
    """The `instrument()` adapter for LangGraph objects: govern every tool in place, return `obj`."""
    LangGraphIntegration.install()
    _lc.govern_all(obj, governor, on_block=on_block, framework="langgraph", what="LangGraph")
    return obj
