"""MCP (`mcp`): govern tool calls on the client side (`ClientSession.call_tool`, `mcp.Client.call_tool`)
and on the server side (the tools of an `MCPServer`, called `FastMCP` before mcp 2).

    from thoth_nb.integrations.mcp import govern_session, govern_server

    govern_session(session, server_name="files", agent_id="a", tenant_id="acme",
                   approved_scope=["files.read_file"])          # client side
    govern_server(server, agent_id="files-server", tenant_id="acme",
                  approved_scope=["files.read_file"])           # server side

`thoth_nb.instrument(session_or_client_or_server, ...)` does the same with the default options. Tool
names in decisions and events are `<server>.<tool>` (the server name defaults to the name the server
reports, or the MCPServer's name). A blocked call does not reach the tool: the caller gets an MCP
error result (`isError=True`, the reason as text) and the session keeps working. With
`on_block="raise"`, the client side raises `ThothPolicyViolation` and the server side answers with a
JSON-RPC error. Only the instance is patched; `ungovern(obj)` restores it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from thoth_nb import _instrument, _runtime
from thoth_nb._exceptions import ThothConfigError, ThothPolicyViolation
from thoth_nb._flow import Governor
from thoth_nb._transports.base import Transport
from thoth_nb.integrations import DidNotEnable, Integration
from thoth_nb.integrations._loop import ON_BLOCK, blocked_message, set_framework

try:
    import mcp
    from mcp import types as mcp_types
except ImportError:  # pragma: no cover - exercised without the extra
    raise DidNotEnable("the mcp package is not installed") from None


class MCPIntegration(Integration):
    """Version check (a warning naming the tested range) and install-once bookkeeping;
    sessions and servers are governed per instance: nothing is patched globally."""

    identifier = "mcp"
    package = "mcp"
    supported = ((1, 2), (3,))

    @classmethod
    def setup_once(cls) -> None:
        pass


MCPIntegration.install()

__all__ = ["govern_call_tool", "govern_client", "govern_server", "govern_session", "instrument_object", "ungovern"]

logger = logging.getLogger("thoth_nb")

FRAMEWORK = "mcp"
_MARK = "__thoth_mcp__"
BLOCKED_ERROR_CODE = -32001  # JSON-RPC server-defined range: "blocked by policy" (on_block="raise", server side)


class _State:
    """What one patched `call_tool` needs; re-instrumenting swaps it instead of wrapping twice."""

    def __init__(self, governor: Governor, server_name: str | None, on_block: str) -> None:
        self.governor = governor
        self.server_name = server_name
        self.on_block = on_block


def qualified(server_name: str | None, tool: str) -> str:
    return f"{server_name}.{tool}" if server_name else tool


def error_result(text: str) -> Any:
    """An MCP tool result with `isError=True` (validated from the wire form: works with mcp 1 and 2)."""
    return mcp_types.CallToolResult.model_validate({"content": [{"type": "text", "text": text}], "isError": True})


async def _governed(
    state: _State,
    tool_name: str,
    arguments: dict[str, Any] | None,
    run: Callable[[dict[str, Any] | None], Awaitable[Any]],
) -> Any:
    """PRE (decide, maybe wait for a hold) → run → POST. Raises ThothPolicyViolation when not allowed."""
    governor = state.governor
    args = dict(arguments or {})
    call = governor.begin(tool_name, (), args, args)
    decision = await _instrument.drive_async(governor.flow(call), governor.transport, call)
    if not decision.allowed:
        raise governor.violation(call, decision)
    _, kwargs = governor.apply(decision, (), args)
    try:
        result = await run(kwargs if (arguments is not None or kwargs) else arguments)
    except BaseException as exc:
        governor.failed(call, exc)
        raise
    if getattr(result, "is_error", None) or getattr(result, "isError", None):
        call.outcome = "tool_error"
    governor.finished(call, result)
    return result


# --- client side --------------------------------------------------------------------------------


def _reported_name(session: Any) -> str | None:
    try:
        info = getattr(session, "server_info", None)  # mcp 2: the server's Implementation
    except Exception:
        info = None
    if info is None:
        result = getattr(session, "initialize_result", None) or getattr(session, "_initialize_result", None)
        info = getattr(result, "serverInfo", None) or getattr(result, "server_info", None)
    name = getattr(info, "name", None)
    return name if isinstance(name, str) and name else None


def _patch_client_call(obj: Any, state: _State, session_of: Callable[[], Any]) -> None:
    existing = obj.__dict__.get("call_tool")
    if existing is not None and hasattr(existing, _MARK):
        old: _State = getattr(existing, _MARK)
        old.governor, old.on_block = state.governor, state.on_block
        old.server_name = state.server_name or old.server_name
        return
    original = obj.call_tool  # the bound method of the class

    async def call_tool(name: str, arguments: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        server = state.server_name or _reported_name(session_of()) or "mcp"

        async def run(final: dict[str, Any] | None) -> Any:
            return await original(name, final, *args, **kwargs)

        try:
            return await _governed(state, qualified(server, name), arguments, run)
        except ThothPolicyViolation as exc:
            if state.on_block == "raise":
                raise
            return error_result(blocked_message(exc.tool_name, exc))

    call_tool.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(call_tool, _MARK, state)
    obj.call_tool = call_tool


def govern_call_tool(obj: Any, governor: Governor, server_name: str, on_block: str = "message") -> Any:
    """Govern any object with an MCP-style `async call_tool(name, arguments, ...)` returning a
    CallToolResult (e.g. the OpenAI Agents SDK's MCP servers); tool names are `<server_name>.<tool>`."""
    _check(on_block)
    _patch_client_call(obj, _State(governor, server_name, on_block), lambda: None)
    return obj


def _check(on_block: str) -> None:
    if on_block not in ON_BLOCK:
        raise ThothConfigError(f"on_block must be one of {', '.join(ON_BLOCK)}; got {on_block!r}")


def _governor(transport: Transport | None, config: dict[str, Any]) -> Governor:
    governor = _runtime.governor_for(_instrument._config(config), transport)
    set_framework(governor, FRAMEWORK)
    return governor


def govern_session(
    session: Any,
    *,
    server_name: str | None = None,
    on_block: str = "message",
    transport: Transport | None = None,
    **config: Any,
) -> Any:
    """Govern `session.call_tool` of one `mcp.ClientSession` (in place; returns the session)."""
    _check(on_block)
    return _session(session, _governor(transport, config), server_name, on_block)


def _session(session: Any, governor: Governor, server_name: str | None, on_block: str) -> Any:
    _patch_client_call(session, _State(governor, server_name, on_block), lambda: session)
    return session


def govern_client(
    client: Any,
    *,
    server_name: str | None = None,
    on_block: str = "message",
    transport: Transport | None = None,
    **config: Any,
) -> Any:
    """Govern `call_tool` of an `mcp.Client` (the high-level client of mcp 2)."""
    _check(on_block)
    return _client(client, _governor(transport, config), server_name, on_block)


def _client(client: Any, governor: Governor, server_name: str | None, on_block: str) -> Any:
    _patch_client_call(client, _State(governor, server_name, on_block), lambda: getattr(client, "_session", None))
    return client


# --- server side --------------------------------------------------------------------------------


def _tool_error(message: str) -> Exception:
    """The exception the server turns into an `isError` tool result."""
    try:
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:  # mcp 1
        from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]
    error: Exception = ToolError(message)
    return error


def _protocol_error(message: str) -> Exception:
    from mcp.shared import exceptions

    kind = getattr(exceptions, "MCPError", None) or getattr(exceptions, "McpError")  # noqa: B009
    if kind.__name__ == "MCPError":
        error: Exception = kind(BLOCKED_ERROR_CODE, message)
    else:  # mcp 1's McpError takes ErrorData
        error = kind(mcp_types.ErrorData(code=BLOCKED_ERROR_CODE, message=message))
    return error


def govern_server(
    server: Any,
    *,
    server_name: str | None = None,
    on_block: str = "message",
    transport: Transport | None = None,
    **config: Any,
) -> Any:
    """Govern every tool of an `MCPServer` / `FastMCP` (also tools added later): patched on its tool manager."""
    _check(on_block)
    return _server(server, _governor(transport, config), server_name, on_block)


def _server(server: Any, governor: Governor, server_name: str | None, on_block: str) -> Any:
    manager = getattr(server, "_tool_manager", None)
    if manager is None or not callable(getattr(manager, "call_tool", None)):
        raise ThothConfigError(f"{type(server).__name__} has no tool manager; thoth_nb governs MCPServer/FastMCP tools")
    name = server_name or getattr(server, "name", None) or "mcp"
    state = _State(governor, name, on_block)
    existing = manager.__dict__.get("call_tool")
    if existing is not None and hasattr(existing, _MARK):
        old: _State = getattr(existing, _MARK)
        old.governor, old.on_block, old.server_name = governor, on_block, name
        return server
    original = manager.call_tool

    async def call_tool(tool: str, arguments: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        async def run(final: dict[str, Any] | None) -> Any:
            return await original(tool, final if final is not None else {}, *args, **kwargs)

        try:
            return await _governed(state, qualified(state.server_name, tool), arguments, run)
        except ThothPolicyViolation as exc:
            message = blocked_message(exc.tool_name, exc)
            if state.on_block == "raise":
                raise _protocol_error(message) from exc
            raise _tool_error(message) from exc

    call_tool.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(call_tool, _MARK, state)
    manager.call_tool = call_tool
    tools = [
        {"name": qualified(name, t.name), "description": getattr(t, "description", "") or ""}
        for t in manager.list_tools()
    ]
    _instrument._send_inventory(governor, tools)
    return server


# --- instrument() and unload --------------------------------------------------------------------


def _kind(obj: Any) -> str | None:
    # only classes of the mcp package itself (the Agents SDK also has an `MCPServer`, a client-side wrapper)
    names = {k.__name__ for k in type(obj).__mro__ if (k.__module__ or "").startswith("mcp.")}
    if "ClientSession" in names:
        return "session"
    client_type = getattr(mcp, "Client", None)
    if client_type is not None and isinstance(obj, client_type):
        return "client"
    if "MCPServer" in names or "FastMCP" in names:
        return "server"
    return None


def instrument_object(obj: Any, governor: Governor, *, on_block: str = "message") -> Any:
    """`thoth_nb.instrument()` adapter for MCP objects."""
    _check(on_block)
    kind = _kind(obj)
    if kind is None:
        raise ThothConfigError(
            f"cannot instrument a {type(obj).__name__} from mcp: thoth_nb governs a ClientSession or mcp.Client "
            "(client side) and an MCPServer/FastMCP (server side); see thoth_nb.integrations.mcp"
        )
    set_framework(governor, FRAMEWORK)
    if kind == "session":
        return _session(obj, governor, None, on_block)
    if kind == "client":
        return _client(obj, governor, None, on_block)
    return _server(obj, governor, None, on_block)


def ungovern(obj: Any) -> Any:
    """Restore the original `call_tool` of a governed session, client or server."""
    target = getattr(obj, "_tool_manager", None) if _kind(obj) == "server" else obj
    if target is not None and hasattr(target.__dict__.get("call_tool"), _MARK):
        del target.__dict__["call_tool"]
    return obj
