"""Shared pieces for the fault tests: a real `thoth-nb serve` process on a fixed free loopback port
(killed with SIGKILL and restarted on the same port and store), keys, and an instrumented agent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from thoth_nb.engine.store import SQLiteStore

POLICY = """\
version: 1
default: allow
rules:
  - id: no-drop
    tool: drop_table
    decision: block
    reason: dropping tables is forbidden
    hard: true
  - id: big-transfer
    tool: transfer
    when: {amount: {gt: 100}}
    decision: step_up
    reason: transfers over 100 need a human
"""

SCOPE = ["lookup", "transfer", "drop_table"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`python -m thoth_nb.cli serve` as a child process; `kill()` is SIGKILL, `start()` reuses port and store."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.db = folder / "server.db"
        self.policy = folder / "policy.yaml"
        self.policy.write_text(POLICY)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        store = SQLiteStore(self.db)
        try:
            self.keys = {
                f"{tenant}:{role}": store.create_api_key(tenant, role, f"{tenant}-{role}")[1]
                for tenant in ("acme", "globex") for role in ("agent", "reviewer", "admin")
            }
        finally:
            store.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServeProcess:
        env = {**os.environ, "THOTH_HOME": str(self.folder / "serve-home")}
        log = (self.folder / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thoth_nb.cli", "serve", "--port", str(self.port), "--db", str(self.db),
             "--policy", str(self.policy), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", trust_env=False, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"thoth-nb serve did not start: {(self.folder / 'serve.log').read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def events(self, tenant: str = "acme", **params: Any) -> list[dict[str, Any]]:
        """Every stored event of the tenant (paged through the API, as a reviewer)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        headers = {"x-api-key": self.keys[f"{tenant}:reviewer"]}
        while True:
            query = {"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(f"{self.url}/v1/events", params=query, headers=headers, trust_env=False,
                             timeout=10).json()
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


class Agent:
    """A stand-in agent whose tools record what actually ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []

        def lookup(q: str) -> str:
            self.ran.append(("lookup", q))
            return f"found {q}"

        def transfer(to: str, amount: int) -> str:
            self.ran.append(("transfer", (to, amount)))
            return f"sent {amount} to {to}"

        def drop_table(name: str) -> str:
            self.ran.append(("drop_table", name))
            return "dropped"

        self.tools = [lookup, transfer, drop_table]

    def lookup(self, q: str) -> Any:
        return self.tools[0](q=q)


def http_agent(url: str, key: str, **over: Any) -> tuple[Agent, str]:
    import thoth_nb

    session = over.pop("session_id", None) or str(uuid.uuid4())
    options: dict[str, Any] = {
        "api_url": url, "api_key": key, "agent_id": "agent-1", "tenant_id": "acme", "approved_scope": SCOPE,
        "enforcement": "block", "session_id": session, "tool_inventory": False,
    }
    options.update(over)
    agent = Agent()
    thoth_nb.instrument(agent, **options)
    return agent, session


class RawEnforcer:
    """A tiny HTTP/1.1 server on a raw socket (127.0.0.1) whose answers to `/v1/enforce` are scripted
    byte for byte: delays, truncated bodies, bad JSON, odd statuses. Events are accepted (202)."""

    def __init__(self) -> None:
        import socketserver
        import threading

        self.enforce_raw: bytes = b""
        self.delay = 0.0
        self.events_status = b"202 Accepted"
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(5)
                while True:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, path = lines[0].split(" ")[:2]
                    length = 0
                    for line in lines[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    while len(body) < length:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        body += chunk
                    owner.requests.append((method, path.split("?")[0]))
                    if path.startswith("/v1/enforce") and method == "POST":
                        if owner.delay:
                            time.sleep(owner.delay)
                        try:
                            sock.sendall(owner.enforce_raw)
                        except OSError:
                            return
                        return  # close after every scripted answer
                    if path.startswith("/v1/events/batch"):
                        reply = b'{"accepted": 0, "duplicates": 0, "rejected": []}'
                        status = owner.events_status
                    else:
                        reply, status = b'{"error": "not_found"}', b"404 Not Found"
                    sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: str, body: bytes, *, headers: str = "", length: int | None = None) -> None:
        """Script the enforce reply: `length` other than len(body) sends a lying Content-Length."""
        size = len(body) if length is None else length
        self.enforce_raw = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
                            f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode() + body

    def enforce_count(self) -> int:
        return sum(1 for m, p in self.requests if m == "POST" and p == "/v1/enforce")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ListSink:
    """An event sink in memory that can fail like a dead server (for Emitter tests without HTTP)."""

    name = "list sink"

    def __init__(self, *, failing: bool = True, sink_id: str = "list-test-sink") -> None:
        self.failing = failing
        self.ids: list[str] = []
        self._sink_id = sink_id

    @property
    def sink_id(self) -> str:
        return self._sink_id

    def send_events(self, events: Any) -> None:
        from thoth_nb._exceptions import EnforcerError

        if self.failing:
            raise EnforcerError("network", "connection refused")
        self.ids += [str(e["event_id"]) for e in events]


def make_events(n: int, pad: int = 0) -> list[dict[str, Any]]:
    session = str(uuid.uuid4())
    return [
        {"event_id": f"t:{uuid.uuid4()}", "tenant_id": "t", "session_id": session, "user_id": "u",
         "event_type": "TOOL_CALL_PRE", "occurred_at": "2026-01-01T00:00:00Z", "metadata": {"pad": "x" * pad}}
        for _ in range(n)
    ]
