"""A remote enforcer over HTTP, speaking PROTOCOL.md (Aten's enforcer or `thoth-nb serve`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from thoth_nb import _json
from thoth_nb._exceptions import EnforcerError
from thoth_nb._models import MAX_DECIDE_DEPTH, EnforcementDecision, json_safe
from thoth_nb._transports.base import Transport
from thoth_nb._version import __version__

__all__ = ["HTTPTransport", "error_message"]

logger = logging.getLogger("thoth_nb")

ENFORCE_TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=2.0, pool=2.0)
POLL_TIMEOUT = httpx.Timeout(6.0, connect=2.0)
MAX_LONG_POLL = 30.0


def error_message(response: httpx.Response) -> str:
    """PROTOCOL §7: the first non-empty message-like field of an error body, at most 512 chars."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:512]
    candidates: list[Any] = []
    if isinstance(body, dict):
        candidates = [body.get(k) for k in ("message", "error_description", "error", "reason", "detail")]
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            candidates += [errors[0].get(k) for k in ("message", "error", "detail")]
    for value in candidates:
        if value:
            return (value if isinstance(value, str) else _json.dumps(value))[:512]
    return response.text[:512]


def _hint(status: int) -> str:
    if status == 401:
        return " (check THOTH_API_KEY / api_key: the enforcer did not accept it)"
    if status == 403:
        return " (the API key's role may not call this endpoint; enforcement needs an 'agent' key)"
    if status == 404:
        return " (check THOTH_API_URL / api_url: it should be the enforcer's base URL)"
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta form; an HTTP date is treated as 'soon'), capped at 30 s."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, min(float(value), 30.0))
    except ValueError:
        return 1.0


def _close_with_loop(client: httpx.AsyncClient) -> object:
    """Close `client` inside its loop when the loop shuts down (`asyncio.run` calls
    `shutdown_asyncgens()` before closing): a started async generator the loop finalises. Without it
    every finished loop leaves its keep-alive sockets open. Returns the generator (keep a reference:
    the loop only holds it weakly)."""

    async def closer() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    gen = closer()
    step: Any = gen.__anext__()  # registers the generator with the running loop's asyncgen hooks
    try:
        step.send(None)
    except StopIteration:
        pass
    return gen


class HTTPTransport(Transport):
    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        event_ingest_token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.name = f"http ({self.api_url})"
        self._api_key = api_key
        self._event_token = event_ingest_token
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._aclients: dict[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, object]] = {}
        self._lock = threading.Lock()
        self._long_poll: bool | None = None
        self._waits_honoured = True  # cleared when a long-poll comes back unresolved at once

    @property
    def sink_id(self) -> str:
        import hashlib

        return "http-" + hashlib.sha256(self.api_url.encode()).hexdigest()[:12]

    # -- clients ---------------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        out = {"Content-Type": "application/json", "User-Agent": f"thoth-nb/{__version__}"}
        if self._api_key:
            out["Authorization"] = f"Bearer {self._api_key}"
            out["x-api-key"] = self._api_key
        return out

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        base_url=self.api_url, headers=self.headers(), timeout=ENFORCE_TIMEOUT,
                        transport=self._transport, trust_env=False,
                    )
        return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        """One client per running event loop: connections belong to the loop that opened them, and
        several loops (`asyncio.run` per call, one loop per worker thread) may govern calls at once."""
        loop = asyncio.get_running_loop()
        found = self._aclients.get(loop)
        if found is not None and not found[0].is_closed:
            return found[0]
        client = httpx.AsyncClient(
            base_url=self.api_url, headers=self.headers(), timeout=ENFORCE_TIMEOUT,
            transport=self._async_transport, trust_env=False,
        )
        with self._lock:
            for old in [k for k in self._aclients if k.is_closed()]:
                del self._aclients[old]
            self._aclients[loop] = (client, _close_with_loop(client))
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- enforce ---------------------------------------------------------------------------------

    @staticmethod
    def _encode(body: Mapping[str, Any]) -> bytes:
        out = dict(body)
        if "tool_args" in out:
            # deep enough that the server still sees a too-deep container and blocks it (not a cut string)
            out["tool_args"] = json_safe(out["tool_args"], max_depth=MAX_DECIDE_DEPTH + 2)
        return _json.dumps_bytes(out)

    def _check(self, response: httpx.Response, what: str) -> Any:
        if not 200 <= response.status_code < 300:
            status = response.status_code
            message = error_message(response)
            raise EnforcerError("status", f"enforcer rejected {what} (status={status}): {message}{_hint(status)}",
                                status=status)
        try:
            return _json.loads(response.content)
        except ValueError as exc:
            raise EnforcerError("decode", f"enforcer sent a body that is not JSON for {what}: {exc}") from None

    @staticmethod
    def _failure(exc: httpx.HTTPError, what: str, url: str) -> EnforcerError:
        if isinstance(exc, httpx.TimeoutException):
            return EnforcerError("timeout", f"enforcer at {url} timed out on {what} ({type(exc).__name__})")
        return EnforcerError(
            "network",
            f"enforcer unavailable at {url}: {exc or type(exc).__name__} (is `thoth-nb serve` running there, and "
            f"is THOTH_API_URL right?)",
        )

    def enforce(self, body: Mapping[str, Any]) -> EnforcementDecision:
        try:
            response = self.client.post("/v1/enforce", content=self._encode(body))
        except httpx.HTTPError as exc:
            raise self._failure(exc, "enforce", self.api_url) from None
        return self._decision(self._check(response, "enforce"))

    async def aenforce(self, body: Mapping[str, Any]) -> EnforcementDecision:
        try:
            response = await self.aclient.post("/v1/enforce", content=self._encode(body))
        except httpx.HTTPError as exc:
            raise self._failure(exc, "enforce", self.api_url) from None
        decision = self._decision(self._check(response, "enforce"))
        if decision.hold_token and self._long_poll is None:
            # the flow reads `long_poll` next, synchronously: learn it here, without blocking the event loop
            try:
                self._long_poll = _offers_long_poll(await self.aclient.get("/readyz", timeout=2.0))
            except httpx.HTTPError:
                self._long_poll = False
        return decision

    @staticmethod
    def _decision(data: Any) -> EnforcementDecision:
        if not isinstance(data, dict):
            raise EnforcerError("decode", f"enforcer answered {type(data).__name__}, not an object")
        return EnforcementDecision.from_response(data)

    # -- holds -----------------------------------------------------------------------------------

    def _supports_long_poll(self) -> bool:
        if self._long_poll is None:
            try:
                self._long_poll = _offers_long_poll(self.client.get("/readyz", timeout=2.0))
            except httpx.HTTPError:
                self._long_poll = False
        return self._long_poll

    @property
    def long_poll(self) -> bool:  # type: ignore[override]
        return self._supports_long_poll() and self._waits_honoured

    def _hold_url(self, token: str, wait: float) -> tuple[str, dict[str, str], httpx.Timeout, float]:
        """Path, query, timeout, and how long the server was asked to hold the request."""
        path = "/v1/enforce/hold/" + urllib.parse.quote(token, safe="")
        if wait > 0 and self._long_poll and self._waits_honoured:
            seconds = min(wait, MAX_LONG_POLL)
            return path, {"wait": f"{seconds:g}"}, httpx.Timeout(seconds + 6.0, connect=2.0), seconds
        return path, {}, POLL_TIMEOUT, 0.0

    def _hold_reply(self, response: httpx.Response, asked: float, started: float) -> dict[str, Any]:
        if response.status_code == 202:
            data: Any = {"resolved": False, "decision": "STEP_UP"}
        else:
            data = self._check(response, "hold poll")
            if not isinstance(data, dict):
                raise EnforcerError("decode", "hold reply is not an object")
        if asked and not data.get("resolved") and time.monotonic() - started < asked / 2:
            # the server, or a proxy in front of it, answers long-polls at once: poll at the interval
            # from now on instead of asking again straight away (which would spin)
            logger.debug("thoth: %s answered a %gs long-poll at once; polling instead", self.api_url, asked)
            self._waits_honoured = False
        return dict(data)

    def poll_hold(self, token: str, wait: float) -> dict[str, Any]:
        path, params, timeout, asked = self._hold_url(token, wait)
        started = time.monotonic()
        try:
            response = self.client.get(path, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._failure(exc, "hold poll", self.api_url) from None
        return self._hold_reply(response, asked, started)

    async def apoll_hold(self, token: str, wait: float) -> dict[str, Any]:
        path, params, timeout, asked = self._hold_url(token, wait)
        started = time.monotonic()
        try:
            response = await self.aclient.get(path, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._failure(exc, "hold poll", self.api_url) from None
        return self._hold_reply(response, asked, started)

    def cancel_hold(self, token: str, reason: str) -> None:
        """Best effort, and only on a thoth-nb server (it advertised long-poll; upstream has no such
        endpoint): deny the hold the interrupted or timed-out call was waiting on."""
        if not self._long_poll:
            return
        try:
            self.client.post(_cancel_path(token), content=_json.dumps_bytes({"reason": reason}), timeout=2.0)
        except httpx.HTTPError as exc:
            logger.debug("thoth: could not cancel hold %s: %s", token, exc)

    async def acancel_hold(self, token: str, reason: str) -> None:
        if not self._long_poll:
            return
        try:
            await self.aclient.post(_cancel_path(token), content=_json.dumps_bytes({"reason": reason}), timeout=2.0)
        except httpx.HTTPError as exc:
            logger.debug("thoth: could not cancel hold %s: %s", token, exc)

    # -- events and advisory calls ---------------------------------------------------------------

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        headers = {"X-Thoth-Event-Ingest-Token": self._event_token} if self._event_token else None
        try:
            response = self.client.post(
                "/v1/events/batch", content=_json.dumps_bytes({"events": list(events)}), headers=headers
            )
        except httpx.HTTPError as exc:
            raise self._failure(exc, "event batch", self.api_url) from None
        if not 200 <= response.status_code < 300:
            raise EnforcerError(
                "status", f"event batch rejected (status={response.status_code}): {error_message(response)}",
                status=response.status_code, retry_after=_retry_after(response),
            )

    def explain(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            response = self.client.post("/v1/explain", content=self._encode(body))
            data = self._check(response, "explain")
        except (httpx.HTTPError, EnforcerError) as exc:
            logger.debug("thoth: explain failed: %s", exc)
            return None
        return data if isinstance(data, dict) else None

    def send_inventory(self, tenant_id: str, agent_id: str, tools: Sequence[Mapping[str, Any]]) -> None:
        path = "/" + urllib.parse.quote(tenant_id, safe="") + "/thoth/tool-inventory"
        for start in range(0, len(tools), 100):
            chunk = [
                {"name": t.get("name"), "description": str(t.get("description") or "")[:4096],
                 "input_schema": t.get("input_schema") or {}}
                for t in tools[start : start + 100]
            ]
            try:
                self.client.post(path, content=_json.dumps_bytes(
                    {"agent_id": agent_id, "source": "python_sdk", "tools": chunk}))
            except httpx.HTTPError as exc:
                logger.debug("thoth: tool inventory not sent: %s", exc)
                return


def _offers_long_poll(reply: httpx.Response) -> bool:
    """Whether a `/readyz` reply advertises `?wait=` long-polls (a thoth-nb server; upstream has none)."""
    try:
        return bool(reply.status_code == 200 and reply.json().get("long_poll"))
    except (ValueError, AttributeError):
        return False


def _cancel_path(token: str) -> str:
    return "/v1/enforce/hold/" + urllib.parse.quote(token, safe="") + "/cancel"
