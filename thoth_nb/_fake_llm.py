"""A scripted, OpenAI- and Anthropic-compatible HTTP API on 127.0.0.1 (a test double, no key, no network).

Point the real SDK clients at it:

    from thoth_nb.testing import FakeLLMServer, call_tool, reply

    with FakeLLMServer([call_tool("get_weather", city="Paris"), reply("It is sunny.")]) as server:
        client = OpenAI(base_url=server.openai_base_url, api_key="test")        # or
        client = Anthropic(base_url=server.anthropic_base_url, api_key="test")

Each request to `/v1/chat/completions`, `/v1/responses` or `/v1/messages` consumes the next scripted
turn and answers in that API's format. A turn is a dict made by `reply()` / `call_tool()` /
`call_tools()`, or a callable receiving the request body and returning one. When the script is used
up, the server answers with the tool results it was just sent (`echo_tool_results`), so a test can
see what the model would have seen. Only the standard library is used.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLMServer", "call_tool", "call_tools", "echo_tool_results", "reply"]

Turn = dict[str, Any]
ScriptItem = Turn | Callable[[dict[str, Any]], Turn]


def reply(text: str) -> Turn:
    """A turn where the model answers with text and calls no tool."""
    return {"text": text, "tool_calls": []}


def call_tool(name: str, /, **arguments: Any) -> Turn:
    """A turn where the model calls one tool with these arguments."""
    return {"text": None, "tool_calls": [{"name": name, "arguments": arguments}]}


def call_tools(*calls: tuple[str, Mapping[str, Any]], text: str | None = None) -> Turn:
    """A turn with several tool calls: `call_tools(("a", {"x": 1}), ("b", {}))`."""
    return {"text": text, "tool_calls": [{"name": n, "arguments": dict(a)} for n, a in calls]}


def _tool_results(api: str, body: Mapping[str, Any]) -> list[str]:
    """The tool results at the end of a request: what the model is being told happened."""
    out: list[str] = []
    if api == "chat":
        for message in reversed(body.get("messages") or []):
            if message.get("role") != "tool":
                break
            out.append(_content_text(message.get("content")))
    elif api == "responses":
        items = body.get("input")
        for item in reversed(items if isinstance(items, list) else []):
            if not isinstance(item, dict) or item.get("type") != "function_call_output":
                break
            out.append(_content_text(item.get("output")))
    else:
        messages = body.get("messages") or []
        if messages and messages[-1].get("role") == "user" and isinstance(messages[-1].get("content"), list):
            for block in reversed(messages[-1]["content"]):
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    prefix = "[error] " if block.get("is_error") else ""
                    out.append(prefix + _content_text(block.get("content")))
    return list(reversed(out))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


def echo_tool_results(body: dict[str, Any]) -> Turn:
    """A final text turn quoting the tool results at the end of the request (any of the three APIs)."""
    results = next((r for api in ("chat", "responses", "anthropic") if (r := _tool_results(api, body))), [])
    return reply("Tool results: " + " | ".join(results) if results else "Done.")


class FakeLLMServer:
    """OpenAI Chat Completions / Responses and Anthropic Messages, scripted, on 127.0.0.1."""

    def __init__(self, script: Iterable[ScriptItem] = (), *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script: list[ScriptItem] = list(script)
        self.requests: list[dict[str, Any]] = []  # {"api", "path", "body"} per request
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeLLMServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="thoth-nb-fake-llm",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, *turns: ScriptItem) -> None:
        with self._lock:
            self.script.extend(turns)

    @property
    def remaining(self) -> int:
        return len(self.script)

    # -- answering --------------------------------------------------------------------------------

    def _next_turn(self, api: str, body: dict[str, Any]) -> Turn:
        with self._lock:
            item = self.script.pop(0) if self.script else None
        if item is None:
            return echo_tool_results(body)
        if callable(item):
            return item(body)
        return item

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        api = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "anthropic"}.get(
            path
        )
        if api is None:
            return 404, {"error": {"message": f"the fake server has no {path}", "type": "not_found"}}
        with self._lock:
            self.requests.append({"api": api, "path": path, "body": body})
        turn = self._next_turn(api, body)
        model = str(body.get("model") or "fake-model")
        n = next(self._ids)
        calls = [
            {"id": c.get("id") or f"call_{n}_{i}", "name": c["name"], "arguments": c.get("arguments") or {}}
            for i, c in enumerate(turn.get("tool_calls") or [])
        ]
        text = turn.get("text")
        if api == "chat":
            return 200, _chat(n, model, text, calls)
        if api == "responses":
            return 200, _responses(n, model, text, calls)
        return 200, _anthropic(n, model, text, calls)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                    status, payload = fake.answer(self.path.split("?", 1)[0], body)
                except Exception as exc:  # a broken script should be visible to the test, not hang it
                    status, payload = 500, {"error": {"message": f"fake server: {type(exc).__name__}: {exc}"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _chat(n: int, model: str, text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for c in calls
        ]
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if calls else "stop",
                "message": message,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _responses(n: int, model: str, text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if text:
        output.append(
            {
                "type": "message",
                "id": f"msg_{n}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for c in calls:
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{c['id']}",
                "call_id": c["id"],
                "name": c["name"],
                "arguments": json.dumps(c["arguments"]),
                "status": "completed",
            }
        )
    return {
        "id": f"resp_{n}",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": None,
        "top_p": None,
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _anthropic(n: int, model: str, text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for c in calls:
        content.append(
            {
                "type": "tool_use",
                "id": c["id"].replace("call_", "toolu_"),
                "name": c["name"],
                "input": c["arguments"],
            }
        )
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
