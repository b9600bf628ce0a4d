"""MCP: client-side (ClientSession / Client.call_tool) and server-side (MCPServer tools) governance,
over the SDK's in-process client/server connection."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

import thoth_nb  # noqa: E402
from thoth_nb import _runtime  # noqa: E402
from thoth_nb.integrations.mcp import govern_client, govern_server, govern_session, ungovern  # noqa: E402

TENANT = "acme"
CONFIG: dict[str, Any] = {
    "agent_id": "mcp-agent",
    "tenant_id": TENANT,
    "approved_scope": ["files.read_file"],
    "step_up_poll_interval_ms": 20,
}


def files_server() -> tuple[MCPServer, dict[str, int]]:
    runs = {"read_file": 0, "delete_file": 0}
    server = MCPServer("files")

    @server.tool()
    def read_file(path: str) -> str:
        """Read a text file."""
        runs["read_file"] += 1
        return f"contents of {path}"

    @server.tool()
    async def delete_file(path: str) -> str:
        """Delete a file."""
        runs["delete_file"] += 1
        return f"deleted {path}"

    return server, runs


def text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def events(kind: str) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return [e for e in _runtime.local_store().events(TENANT) if e["event_type"] == kind]


def review_first_hold(*, deny: bool = False) -> tuple[threading.Thread, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def review() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = thoth_nb.holds(tenant_id=TENANT)
            if pending:
                seen["hold"] = pending[0]
                (thoth_nb.deny if deny else thoth_nb.approve)(pending[0]["approval_id"], reviewer="alice")
                return
            time.sleep(0.01)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread, seen


async def test_client_session_allow_and_block() -> None:
    server, runs = files_server()
    async with Client(server) as client:
        session = client.session
        assert thoth_nb.instrument(session, **CONFIG) is session
        ok = await session.call_tool("read_file", {"path": "notes.txt"})
        blocked = await session.call_tool("delete_file", {"path": "notes.txt"})
        again = await client.call_tool("read_file", {"path": "todo.txt"})  # Client goes through the session
    assert not ok.is_error and text(ok) == "contents of notes.txt"
    assert blocked.is_error and "files.delete_file" in text(blocked) and "blocked by policy" in text(blocked)
    assert not again.is_error
    assert runs == {"read_file": 2, "delete_file": 0}
    post = events("TOOL_CALL_POST")
    assert [e["tool_name"] for e in post] == ["files.read_file", "files.read_file"]
    assert post[0]["metadata"]["framework"] == "mcp"
    assert post[0]["metadata"]["tool_args"] == {"path": "notes.txt"}
    assert [e["tool_name"] for e in events("TOOL_CALL_BLOCK")] == ["files.delete_file"]


async def test_client_raise_and_session_survives() -> None:
    server, runs = files_server()
    async with Client(server) as client:
        govern_session(
            client.session, server_name="fs", on_block="raise", **{**CONFIG, "approved_scope": ["fs.read_file"]}
        )
        with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
            await client.session.call_tool("delete_file", {"path": "x"})
        assert info.value.tool_name == "fs.delete_file"
        ok = await client.session.call_tool("read_file", {"path": "y"})
    assert text(ok) == "contents of y" and runs == {"read_file": 1, "delete_file": 0}


async def test_high_level_client_and_restore() -> None:
    server, runs = files_server()
    async with Client(server) as client:
        govern_client(client, **CONFIG)
        blocked = await client.call_tool("delete_file", {"path": "x"})
        assert blocked.is_error and runs["delete_file"] == 0
        ungovern(client)
        assert not (await client.call_tool("delete_file", {"path": "x"})).is_error
    assert runs["delete_file"] == 1


async def test_server_side_allow_block_and_raise() -> None:
    server, runs = files_server()
    govern_server(server, **{**CONFIG, "agent_id": "files-server"})
    async with Client(server) as client:  # an ungoverned client: the server enforces
        ok = await client.call_tool("read_file", {"path": "a"})
        blocked = await client.call_tool("delete_file", {"path": "a"})
        assert not ok.is_error and blocked.is_error
        assert "blocked by policy" in text(blocked)
        govern_server(server, on_block="raise", **{**CONFIG, "agent_id": "files-server"})  # re-pointed
        with pytest.raises(MCPError, match="blocked by policy"):
            await client.call_tool("delete_file", {"path": "b"})
        assert not (await client.call_tool("read_file", {"path": "c"})).is_error  # the session still works
    assert runs == {"read_file": 2, "delete_file": 0}
    blocks = events("TOOL_CALL_BLOCK")
    assert [(e["agent_id"], e["tool_name"]) for e in blocks] == [("files-server", "files.delete_file")] * 2


@pytest.mark.parametrize("side", ["client", "server"])
async def test_step_up_approved_from_another_thread(side: str) -> None:
    server, runs = files_server()
    config = {**CONFIG, "enforcement": "step_up"}
    if side == "server":
        govern_server(server, **config)
    thread, seen = review_first_hold()
    async with Client(server) as client:
        if side == "client":
            govern_session(client.session, **config)
        result = await client.call_tool("delete_file", {"path": "old.log"})
    thread.join(5)
    assert seen["hold"]["tool_name"] == "files.delete_file"
    assert seen["hold"]["tool_args"] == {"path": "old.log"}
    assert not result.is_error and text(result) == "deleted old.log"
    assert runs["delete_file"] == 1
    assert events("TOOL_CALL_POST")[0]["metadata"]["reviewer"] == "alice"


async def test_step_up_denied() -> None:
    server, runs = files_server()
    thread, _ = review_first_hold(deny=True)
    async with Client(server) as client:
        govern_session(client.session, **{**CONFIG, "enforcement": "step_up"})
        result = await client.call_tool("delete_file", {"path": "old.log"})
    thread.join(5)
    assert result.is_error and runs["delete_file"] == 0


def test_unsupported_mcp_object() -> None:
    lowlevel = mcp.server.Server("bare")  # no tool registry to govern
    with pytest.raises(thoth_nb.ThothConfigError, match=r"ClientSession or mcp\.Client"):
        thoth_nb.instrument(lowlevel, **CONFIG)


async def test_instrument_recognises_a_server_and_restores() -> None:
    server, runs = files_server()
    assert thoth_nb.instrument(server, **CONFIG) is server
    async with Client(server) as client:
        assert (await client.call_tool("delete_file", {"path": "a"})).is_error
        ungovern(server)
        assert not (await client.call_tool("delete_file", {"path": "a"})).is_error
    assert runs["delete_file"] == 1
