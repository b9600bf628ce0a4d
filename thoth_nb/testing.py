"""Test doubles shipped with the product (STYLE: OpenTelemetry's InMemorySpanExporter).

`isolated_home()` gives a fresh `$THOTH_HOME` and forgets cached stores; `ScriptedEnforcer` is an
`httpx.MockTransport` handler that answers `/v1/enforce` from a script, so the real HTTP transport
can be driven through every decision and failure without a network.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from thoth_nb import _runtime
from thoth_nb._emitter import all_emitters

__all__ = ["ScriptedEnforcer", "isolated_home", "run_notebook", "run_notebook_cells"]


@contextlib.contextmanager
def isolated_home(path: str | Path | None = None) -> Iterator[Path]:
    """Run with `$THOTH_HOME` pointing at a fresh folder; restore everything afterwards."""
    previous = {k: os.environ.get(k) for k in ("THOTH_HOME", "THOTH_DB", "THOTH_POLICY")}
    with contextlib.ExitStack() as stack:
        home = Path(path) if path else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="thoth-")))
        _runtime.reset()
        os.environ["THOTH_HOME"] = str(home)
        for key in ("THOTH_DB", "THOTH_POLICY"):
            os.environ.pop(key, None)
        try:
            yield home
        finally:
            _runtime.reset()
            for emitter in all_emitters():  # emitters a test built by hand: stop their threads too
                emitter.shutdown(timeout=1.0)
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


Responder = Callable[[dict[str, Any]], httpx.Response | dict[str, Any]]


class ScriptedEnforcer:
    """An enforcer fake for `httpx.MockTransport`: records requests, answers from `responder`.

    `holds` maps hold tokens to the reply the hold endpoint should give (a dict, or a list of
    dicts consumed one per poll). Events posted to `/v1/events/batch` are appended to `events`.
    """

    def __init__(self, responder: Responder | dict[str, Any] | None = None) -> None:
        self.responder = responder or {"decision": "ALLOW", "reason": "ok"}
        self.requests: list[httpx.Request] = []
        self.enforce_bodies: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.holds: dict[str, Any] = {}
        self.event_status = 202
        self.long_poll = False  # what /readyz advertises; the hold endpoint still answers at once
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        path = request.url.path
        if path == "/v1/enforce":
            body = json.loads(request.content)
            self.enforce_bodies.append(body)
            answer = self.responder(body) if callable(self.responder) else self.responder
            return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)
        if path.startswith("/v1/enforce/hold/"):
            raw = request.url.raw_path.decode().split("?", 1)[0]
            token = urllib.parse.unquote(raw.rsplit("/", 1)[-1])
            reply = self.holds.get(token)
            if reply is None:
                return httpx.Response(404, json={"error": "unknown hold"})
            if isinstance(reply, list):
                reply = reply.pop(0) if len(reply) > 1 else reply[0]
            return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)
        if path == "/v1/events/batch":
            if self.event_status >= 300:
                return httpx.Response(self.event_status, json={"error": "unavailable"})
            data = json.loads(request.content)
            self.events.extend(data["events"] if isinstance(data, dict) else data)
            return httpx.Response(202, json={"accepted": len(self.events)})
        if path == "/readyz":
            return httpx.Response(200, json={"status": "ok", "long_poll": self.long_poll})
        return httpx.Response(202, json={})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

# the scripted OpenAI/Anthropic-compatible API server lives in its own module (stdlib only)
from thoth_nb._fake_llm import FakeLLMServer, call_tool, call_tools, echo_tool_results, reply  # noqa: E402

__all__ += ["FakeLLMServer", "call_tool", "call_tools", "echo_tool_results", "reply"]


def run_notebook(path: str | Path, *, cwd: str | Path | None = None, timeout: int = 120) -> str:
    """Execute a notebook top to bottom in a real `python3` kernel (nbclient) and return everything
    its cells showed (streams, text/plain, errors as `ERROR name: value`). Raises on a failing cell."""
    return "".join(run_notebook_cells(path, cwd=cwd, timeout=timeout))


def run_notebook_cells(path: str | Path, *, cwd: str | Path | None = None, timeout: int = 120) -> list[str]:
    """`run_notebook`, one string per code cell, for checking what a given cell showed."""
    import nbclient
    import nbformat

    notebook = nbformat.read(Path(path), as_version=4)  # type: ignore[no-untyped-call]
    where = str(cwd or Path(path).resolve().parents[1])
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": where}}).execute()
    shown: list[str] = []
    for cell in notebook.cells:
        if cell.get("cell_type") != "code":
            continue
        parts: list[str] = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                parts.append(f"ERROR {out.get('ename')}: {out.get('evalue')}")
            else:
                parts.append(str(out.get("data", {}).get("text/plain", "")))
        shown.append("".join(parts))
    return shown
