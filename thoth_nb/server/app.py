"""The FastAPI app over the engine: PROTOCOL §3-§6 plus our §11 additions, auth and the reviewer page.

No decision logic lives here (D10): `Engine.decide`, `hold_status`, `resolve` and `explain` decide;
this module parses, authenticates, scopes every call to the key's tenant and answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from thoth_nb._exceptions import PolicyError
from thoth_nb._frames_upkeep import FrameKeeperTrigger
from thoth_nb._models import EnforcementDecision
from thoth_nb._version import __version__
from thoth_nb.engine.decide import Engine, RequestError
from thoth_nb.engine.ingest import BatchRefused, batch_events, ingest_body, prepare_events
from thoth_nb.engine.policy import Policy, parse_policy
from thoth_nb.engine.store import HoldConflict, HoldNotFound, IngestResult, SQLiteStore, parse_ts
from thoth_nb.server import analytics as server_analytics
from thoth_nb.server._http import (
    ApiError,
    decode_cursor,
    encode_cursor,
    error_body,
    invalid,
    json_response,
    parse_json,
    query_limit,
    query_number,
    query_ts,
    read_body,
    read_json,
)
from thoth_nb.server._ingest import IngestChild
from thoth_nb.server.auth import Authenticator, Principal, check_ingest_token

__all__ = ["ServerSettings", "ServerState", "create_app"]

logger = logging.getLogger("thoth_nb.server")

MAX_LONG_POLL = 30.0
HOLD_STATUSES = ("pending", "approved", "denied", "expired", "all")


@dataclasses.dataclass(slots=True)
class ServerSettings:
    #: serve one local tenant without keys (the CLI refuses this on a non-loopback host)
    no_auth: bool = False
    local_tenant: str = "local"
    #: PROTOCOL §5: more bytes than this in any request body -> 413
    max_body_bytes: int = 5 * 1024 * 1024
    #: PROTOCOL §5: more events than this in one batch -> 413
    max_events: int = 500
    #: how often a long-poll re-reads the store (resolutions by other processes, expiry)
    hold_recheck_seconds: float = 0.05
    #: the same when the store pushes resolutions (PostgreSQL LISTEN/NOTIFY): only a fallback
    hold_fallback_seconds: float = 1.0
    #: how often a tenant's stored policy is re-checked for a newer version (PUT here applies at once)
    policy_recheck_seconds: float = 1.0
    key_cache_seconds: float = 2.0
    #: a SQLite file store's event batches are stored by a child process (server/_ingest.py), so that
    #: ingest does not hold this process's GIL while enforce requests wait; False: on a worker thread here
    ingest_child: bool = True
    #: PROTOCOL §2/§9: when set, `POST /v1/events/batch` also needs `X-Thoth-Event-Ingest-Token` equal to
    #: it (a dedicated secret for event ingestion, beside the API key that names the tenant); None: the
    #: header is not required and ignored
    event_ingest_token: str | None = None


class ServerState:
    """Everything the handlers share: store, engine, keys, policy cache and the hold wake-up."""

    def __init__(self, store: SQLiteStore, policy: Policy, settings: ServerSettings) -> None:
        self.store = store
        self.settings = settings
        self.default_policy = policy
        self._policies: dict[str, tuple[float, int, Policy | None]] = {}
        self._policy_lock = threading.Lock()
        self.engine = Engine(store, policy, policy_for=self.policy_for)
        self.auth = Authenticator(
            store,
            no_auth=settings.no_auth,
            local_tenant=settings.local_tenant,
            cache_seconds=settings.key_cache_seconds,
        )
        self._hold_changed: asyncio.Event | None = None
        self.put_lock = asyncio.Lock()
        # replicas: a hold resolved through another server wakes this one's long-polls (store_pg LISTEN)
        self._loop: asyncio.AbstractEventLoop | None = None
        subscribe = getattr(store, "subscribe_holds", None)
        pushed = subscribe(self._pushed) if subscribe is not None else None
        self.hold_recheck_seconds = settings.hold_fallback_seconds if pushed else settings.hold_recheck_seconds
        # a SQLite store file gets its DataFrame disk cache kept up to date as events come in (`_frames_upkeep`)
        path = store.path if isinstance(store, SQLiteStore) and str(store.path) != ":memory:" else None
        self.frames_keeper = FrameKeeperTrigger(path) if path is not None else None
        #: stores event batches in a child process, off this one's GIL (`_ingest`; settings.ingest_child)
        self.ingest_child = (IngestChild(path, float(store._busy_timeout))
                             if path is not None and settings.ingest_child else None)
        if self.ingest_child is not None:  # an app dropped without close() (a test's) stops its child too
            weakref.finalize(self, self.ingest_child.close)

    def close(self) -> None:
        """Stop the ingest child and run the frame keeper over what came in (the store is the caller's)."""
        if self.ingest_child is not None:
            self.ingest_child.close()
        if self.frames_keeper is not None:
            self.frames_keeper.close()

    # -- policies --------------------------------------------------------------------------------

    def policy_for(self, tenant_id: str) -> Policy | None:
        """The tenant's latest stored policy (None: the server's default); cached, re-checked each second."""
        now = time.monotonic()
        cached = self._policies.get(tenant_id)
        if cached is not None and now - cached[0] < self.settings.policy_recheck_seconds:
            return cached[2]
        row = self.store.latest_policy(tenant_id)
        if row is None:
            policy: Policy | None = None
            version = 0
        elif cached is not None and cached[1] == row["version"]:
            policy, version = cached[2], cached[1]
        else:
            version = int(row["version"])
            try:
                policy = parse_policy(row["body"], name=f"tenant {tenant_id} policy v{version}")
            except PolicyError:  # stored versions were validated on PUT; keep serving the last good one
                logger.exception("thoth: stored policy v%s of tenant %s does not parse", version, tenant_id)
                policy = cached[2] if cached is not None else None
        with self._policy_lock:
            self._policies[tenant_id] = (now, version, policy)
        return policy

    def current_policy(self, tenant_id: str) -> tuple[int, str, str]:
        """(version, etag, YAML text) the tenant is enforced with; version 0 is the server default."""
        row = self.store.latest_policy(tenant_id)
        if row is None:
            return 0, self.default_policy.etag, self.default_policy.text
        return int(row["version"]), str(row["etag"]), str(row["body"])

    def policy_saved(self, tenant_id: str, version: int, policy: Policy) -> None:
        with self._policy_lock:
            self._policies[tenant_id] = (time.monotonic(), version, policy)

    # -- hold wake-ups ---------------------------------------------------------------------------

    def _event(self) -> asyncio.Event:
        if self._hold_changed is None:
            self._hold_changed = asyncio.Event()
        return self._hold_changed

    def holds_changed(self) -> None:
        """Wake every long-poll in this process (they re-read their hold); called after a resolution."""
        event = self._event()
        self._hold_changed = asyncio.Event()
        event.set()

    def _pushed(self) -> None:
        """From the store's listener thread: wake this server's long-polls on its event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.holds_changed)

    def hold_change(self) -> asyncio.Event:
        """The event the next resolution sets; take it before reading a hold so none slips in between."""
        self._loop = asyncio.get_running_loop()
        return self._event()

    async def wait_hold_change(self, seconds: float, event: asyncio.Event | None = None) -> None:
        event = event or self.hold_change()
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass


# --- request shaping ----------------------------------------------------------------------------

_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "user_id": (str,),
    "environment": (str,),
    "enforcement_trace_id": (str,),
    "request_id": (str,),
    "session_tool_calls": (list,),
    "session_intent": (str,),
    "purpose": (str,),
    "data_classification": (str,),
    "task_context": (dict,),
    "identity_binding": (dict,),
    "metadata": (dict,),
    "step_up_timeout_seconds": (int, float),
}
_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a number", float: "a number"}


def _check_enforce_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("body", f"must be a JSON object; got {type(body).__name__}")
    for field, types in _OPTIONAL_TYPES.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise invalid(field, f"must be {_TYPE_NAMES[types[0]]}")
    return body


_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(EnforcementDecision) if f.name != "raw")


def wire_body(decision: EnforcementDecision) -> dict[str, Any]:
    """`engine.decide.wire_response` without `dataclasses.asdict`'s deep copy (40% of an ALLOW's time in
    the handler); the body is serialised at once, so a shallow read is enough. A test keeps the two equal."""
    out: dict[str, Any] = {}
    for name in _DECISION_FIELDS:
        value = getattr(decision, name)
        if value is None or value == "" or value == []:
            continue
        out[name] = value
    out["decision"] = out["authorization_decision"] = decision.decision.value
    if decision.observed_decision is not None:
        out["observed_decision"] = decision.observed_decision.value
    out.setdefault("reason", "")
    out.setdefault("decision_reason_code", "")
    out.setdefault("action_classification", "")
    out["risk_score"] = decision.risk_score
    return out


_VIOLATION_FIELDS = (
    "violation_id",
    "created_at",
    "session_id",
    "agent_id",
    "user_id",
    "tool_name",
    "decision",
    "observed",
    "reason",
    "decision_reason_code",
    "risk_score",
    "matched_rule_ids",
    "tool_args",
)
_APPROVAL_FIELDS = (
    "approval_id",
    "hold_token",
    "status",
    "created_at",
    "expires_at",
    "session_id",
    "agent_id",
    "user_id",
    "tool_name",
    "tool_args",
    "args_hash",
    "reason",
    "decision_reason_code",
    "risk_score",
    "matched_rule_ids",
    "violation_id",
    "reviewer",
    "note",
    "resolved_at",
    "grant_scope",
    "modified_args",
    "allow_modify",
)


def approval_record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in _APPROVAL_FIELDS}


def _page(rows: list[dict[str, Any]], offset: int, limit: int, kind: str) -> dict[str, Any]:
    """Offset pages for lists ordered by time; `rows` was fetched with limit offset+limit+1."""
    items = rows[offset : offset + limit]
    more = len(rows) > offset + limit
    return {"items": items, "next_cursor": encode_cursor(kind, offset + limit) if more else None}


def _opt_str(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(field, "must be a string")
    return value or None


# --- the app ------------------------------------------------------------------------------------


def _static(name: str) -> bytes:
    return importlib.resources.files("thoth_nb.server").joinpath("static", name).read_bytes()


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def _body_schema(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        },
        "security": _SECURED,
    }


_HOLD_PARAMETERS = [
    {"name": "hold_token", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "wait", "in": "query", "required": False, "description": "long-poll: seconds to wait (max 30)",
     "schema": {"type": "number", "minimum": 0, "maximum": 30}},
]

_ANALYTICS_PARAMETERS: list[dict[str, Any]] = [
    {"name": "agent_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "since", "in": "query", "required": False, "description": "RFC 3339, inclusive",
     "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "required": False, "description": "RFC 3339, exclusive",
     "schema": {"type": "string", "format": "date-time"}},
]
_DURATION_SCHEMA = {"type": "string", "pattern": r"^\d+(s|m|min|h|d)?$"}
_BUCKET_PARAMETER = {"name": "bucket", "in": "query", "required": False,
                     "description": "bucket length: 30s, 5m, 1h (default), 1d or seconds", "schema": _DURATION_SCHEMA}
_DRIFT_PARAMETERS: list[dict[str, Any]] = [
    {"name": "window", "in": "query", "required": False, "description": "window length (default 1h)",
     "schema": _DURATION_SCHEMA},
    {"name": "step", "in": "query", "required": False, "description": "step between windows (default: window)",
     "schema": _DURATION_SCHEMA},
    {"name": "threshold", "in": "query", "required": False, "description": "drifted at or above (default 0.05)",
     "schema": {"type": "number", "minimum": 0, "maximum": 1}},
    {"name": "min_calls", "in": "query", "required": False, "description": "fewer calls in a window: null (20)",
     "schema": {"type": "integer", "minimum": 1}},
    {"name": "train", "in": "query", "required": False,
     "description": "share of the span the baseline is learnt from (default 0.25)",
     "schema": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
]

_ENFORCE_SCHEMA = {
    "type": "object",
    "required": ["agent_id", "tenant_id", "tool_name", "session_id", "approved_scope", "enforcement_mode"],
    "properties": {
        "agent_id": {"type": "string"},
        "tenant_id": {"type": "string"},
        "user_id": {"type": "string"},
        "tool_name": {"type": "string"},
        "tool_args": {"type": "object"},
        "session_id": {"type": "string"},
        "session_tool_calls": {"type": "array", "items": {"type": "string"}},
        "approved_scope": {"type": "array", "items": {"type": "string"}},
        "enforcement_mode": {"type": "string", "enum": ["observe", "step_up", "block", "progressive"]},
        "environment": {"type": "string"},
        "enforcement_trace_id": {"type": "string"},
        "request_id": {"type": "string"},
        "step_up_timeout_seconds": {"type": "number"},
    },
    "additionalProperties": True,
}
_EVENTS_SCHEMA = {
    "oneOf": [
        {"type": "array", "items": {"type": "object"}, "maxItems": 500},
        {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": {"type": "object"}, "maxItems": 500}},
        },
    ]
}
_RESOLVE_SCHEMA = {
    "type": "object",
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "deny"]},
        "reviewer": {"type": "string"},
        "note": {"type": "string"},
        "modified_args": {"type": "object"},
        "scope": {"type": "string", "enum": ["once", "session"]},
    },
}
_POLICY_SCHEMA = {
    "type": "object",
    "required": ["policy"],
    "properties": {"policy": {"oneOf": [{"type": "string"}, {"type": "object"}]}},
}


_HOLD_PREFIX = "/v1/enforce/hold/"
Endpoint = Callable[[Request], Awaitable[Response]]


class ThothApp(FastAPI):
    """FastAPI, with the three hot wire endpoints (enforce, ingest, hold polling) called directly.

    Going through FastAPI costs about what the enforce handler itself costs: its native-telemetry check
    reads the environment on every request, then the middleware stack and the router run. Answered
    here, `/v1/enforce` at one connection went from 3,417 to 4,165-4,504 requests/s. The handlers take
    a plain `Request` and raise `ApiError`, so this answers exactly what the routes answer (tested both
    ways). Once any middleware is added (CORS, OpenTelemetry's ASGI middleware...) every request takes
    the normal way; FastAPI's own native telemetry does not see these three routes.
    """

    #: path -> (method, handler) of the hot routes, and the hold poll's handler; set by `create_app`
    hot_routes: Mapping[str, tuple[str, Endpoint]] = MappingProxyType({})
    hold_route: Endpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._hot(scope) if scope["type"] == "http" and not self.user_middleware else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ApiError as exc:
            response = _api_error_response(exc)
        except ClientDisconnect:
            return
        except Exception as exc:
            response = _internal_error_response(scope["method"], scope["path"], exc)
        await response(scope, receive, send)

    def _hot(self, scope: Scope) -> Endpoint | None:
        if self.root_path or scope.get("root_path"):
            return None
        path: str = scope["path"]
        route = self.hot_routes.get(path)
        if route is not None:
            return route[1] if scope["method"] == route[0] else None
        if (self.hold_route is not None and scope["method"] == "GET" and path.startswith(_HOLD_PREFIX)
                and "/" not in path[len(_HOLD_PREFIX):] and len(path) > len(_HOLD_PREFIX)):
            scope["path_params"] = {"hold_token": path[len(_HOLD_PREFIX):]}
            return self.hold_route
        return None


def _internal_error_response(method: str, path: str, exc: Exception) -> Response:
    logger.exception("thoth: internal error on %s %s", method, path)
    return json_response(error_body("internal", f"internal error: {type(exc).__name__}"), 500)


def _api_error_response(exc: ApiError) -> Response:
    return json_response(error_body(exc.error, exc.message, exc.field, **exc.extra), exc.status, exc.headers)


def create_app(store: SQLiteStore, policy: Policy, settings: ServerSettings | None = None) -> ThothApp:
    """Build the server for one store. The caller owns the store (and closes it after the app stops)."""
    settings = settings or ServerSettings()
    if isinstance(store, SQLiteStore):  # ingest commits no longer pay the WAL checkpoint's fsyncs
        store.checkpoint_in_background()
    state = ServerState(store, policy, settings)
    engine = state.engine
    auth = state.auth
    app = ThothApp(
        title="thoth-nb enforcer",
        version=__version__,
        description="Wire-compatible Thoth enforcer (PROTOCOL.md): approvals, tenants, a reviewer page.",
    )
    app.state.thoth = state

    # -- errors: PROTOCOL §7 bodies everywhere ---------------------------------------------------

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _api_error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response(error_body(code, str(exc.detail)), exc.status_code, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return json_response(
            error_body("invalid_request", f"{field}: {first.get('msg', 'invalid')}", field), 422
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _internal_error_response(request.method, request.url.path, exc)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)

    limit = settings.max_body_bytes
    inline = isinstance(store, SQLiteStore)

    # -- PROTOCOL §3: enforce --------------------------------------------------------------------

    @app.post(
        "/v1/enforce",
        tags=["wire"],
        summary="Decide one tool call (PROTOCOL §3)",
        openapi_extra=_body_schema(_ENFORCE_SCHEMA, "PROTOCOL §3.1 request; unknown fields are ignored"),
    )
    async def enforce(request: Request) -> Response:
        principal = auth.principal(request, "enforce")
        body = _check_enforce_body(await read_json(request, limit))
        try:
            engine.validate(body)
        except RequestError as exc:
            raise invalid(exc.field, exc.message) from None
        principal.check_tenant(body["tenant_id"])
        # the engine lets only thoth_nb clients receive MODIFY on a hold (PROTOCOL §11)
        body["_user_agent"] = request.headers.get("user-agent", "")
        # SQLite: inline, not in a thread (ALLOW touches no storage, the rest is one short local write);
        # a networked store (PostgreSQL) would block the loop for a round trip, so it goes to a thread
        if inline:
            decision = engine.decide(body, dedupe=True)
        else:
            decision = await run_in_threadpool(engine.decide, body, dedupe=True)
        return json_response(wire_body(decision))

    # -- PROTOCOL §4 and §11: hold polling, with long-poll -----------------------------------------

    @app.get(
        "/v1/enforce/hold/{hold_token}",
        tags=["wire"],
        summary="Poll a step-up hold (PROTOCOL §4)",
        openapi_extra={"security": _SECURED, "parameters": _HOLD_PARAMETERS},
    )
    async def hold(request: Request) -> Response:
        hold_token: str = request.path_params["hold_token"]
        principal = auth.principal(request, "hold")
        raw_wait = request.query_params.get("wait")
        wait = 0.0
        if raw_wait:
            try:
                wait = float(raw_wait)
            except ValueError:
                raise invalid("wait", f"must be a number of seconds; got {raw_wait!r}") from None
            if wait != wait or wait < 0:  # NaN or negative
                raise invalid("wait", "must be a number of seconds >= 0")
            wait = min(wait, MAX_LONG_POLL)
        deadline = time.monotonic() + wait
        while True:
            changed = state.hold_change()
            try:
                if inline:
                    reply = engine.hold_status(hold_token, principal.tenant_id)
                else:
                    reply = await run_in_threadpool(engine.hold_status, hold_token, principal.tenant_id)
            except HoldNotFound:
                raise ApiError(404, "unknown_hold", f"no hold {hold_token!r} for this tenant") from None
            remaining = deadline - time.monotonic()
            if reply["resolved"] or remaining <= 0 or await request.is_disconnected():
                return json_response(reply)
            await state.wait_hold_change(min(remaining, state.hold_recheck_seconds), changed)

    @app.post(
        "/v1/enforce/hold/{hold_token}/cancel",
        tags=["wire"],
        summary="The waiting client gave up (interrupt, timeout): deny its hold so no one approves it later",
        openapi_extra={"security": _SECURED, "parameters": _HOLD_PARAMETERS[:1]},
    )
    async def cancel_hold(request: Request) -> Response:
        hold_token: str = request.path_params["hold_token"]
        principal = auth.principal(request, "hold")
        raw = await read_body(request, limit)
        body = parse_json(raw) if raw.strip() else {}  # the body is optional
        reason = _opt_str(body, "reason") if isinstance(body, dict) else None
        record = await run_in_threadpool(store.get_hold, hold_token, principal.tenant_id)
        if record is None or record["hold_token"] != hold_token:  # only the token's holder cancels
            raise ApiError(404, "unknown_hold", f"no hold {hold_token!r} for this tenant")
        try:
            resolved = await run_in_threadpool(
                lambda: engine.resolve(hold_token, approve=False, reviewer=f"{principal.label} (client)",
                                       note=reason or "the waiting client gave up", tenant_id=principal.tenant_id))
        except HoldConflict as exc:
            raise ApiError(409, "conflict", f"hold {exc.record['approval_id']} is already {exc.record['status']}",
                           extra={"record": approval_record(exc.record)}) from None
        finally:
            state.holds_changed()
        return json_response(approval_record(resolved))

    # -- PROTOCOL §5: event ingest ---------------------------------------------------------------

    def ingest_and_keep(data: bytes, tenant_id: str) -> IngestResult:
        """Store one body (through the ingest child when it is up), then count it for the frame keeper
        (which it may start: not on the event loop)."""
        child = state.ingest_child
        result = child.ingest(data, tenant_id, settings.max_events) if child is not None else None
        if result is None:
            result = ingest_body(store, data, settings.max_events, tenant_id)
        if state.frames_keeper is not None and result.accepted:
            state.frames_keeper.stored(result.accepted, (tenant_id,))
        return result

    @app.post(
        "/v1/events/batch",
        status_code=202,
        tags=["wire"],
        summary="Ingest events (PROTOCOL §5)",
        openapi_extra={
            **_body_schema(_EVENTS_SCHEMA, 'a bare array or {"events": [...]}, at most 500'),
            "parameters": [{"name": "X-Thoth-Event-Ingest-Token", "in": "header", "required": False,
                            "description": "required when the server is configured with an event ingest token",
                            "schema": {"type": "string"}}],
        },
    )
    async def events_batch(request: Request) -> Response:
        principal = auth.principal(request, "ingest")
        if settings.event_ingest_token is not None:
            check_ingest_token(request, settings.event_ingest_token)
        data = await read_body(request, limit)
        tenant_id = principal.tenant_id
        try:
            if inline:
                # parsed, checked, chained and stored event by event in one pass, by the ingest child
                # (server/_ingest.py) or on a worker thread here; answered only after the commit
                result = await run_in_threadpool(ingest_and_keep, data, tenant_id)
                rejected = result.rejected
            else:
                events = batch_events(data, settings.max_events)
                ready, indexes, rejected = prepare_events(events, tenant_id)
                result = await run_in_threadpool(store.ingest_events, ready)  # answered only after the commit
                rejected += [{"index": indexes[r["index"]], "error": r["error"]} for r in result.rejected]
                rejected.sort(key=lambda r: int(r["index"]))
        except BatchRefused as exc:
            raise ApiError.refused(exc) from None
        return json_response(
            {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": rejected}, 202
        )

    # -- PROTOCOL §6: explain and tool inventory -------------------------------------------------

    @app.post(
        "/v1/explain",
        tags=["wire"],
        summary="Explain a violation (PROTOCOL §6)",
        openapi_extra=_body_schema(
            {"type": "object", "required": ["violation_id"]}, "the enforce body plus the decision fields"
        ),
    )
    async def explain(request: Request) -> Response:
        principal = auth.principal(request, "explain")
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        violation_id = body.get("violation_id")
        if not isinstance(violation_id, str) or not violation_id:
            raise invalid("violation_id", "field required")
        principal.check_tenant(body.get("tenant_id"))
        try:
            answer = await run_in_threadpool(engine.explain, principal.tenant_id, violation_id)
        except LookupError:
            raise ApiError(
                404, "unknown_violation", f"no violation {violation_id!r} for this tenant"
            ) from None
        answer["request_url"] = str(request.url)
        return json_response(answer)

    @app.post(
        "/{tenant_id}/thoth/tool-inventory",
        status_code=202,
        tags=["wire"],
        summary="Advisory list of an agent's tools (PROTOCOL §6)",
        openapi_extra=_body_schema(
            {"type": "object", "required": ["agent_id", "tools"]},
            "{agent_id, source, tools: [{name, description, input_schema}]}",
        ),
    )
    async def tool_inventory(tenant_id: str, request: Request) -> Response:
        principal = auth.principal(request, "inventory")
        principal.check_tenant(tenant_id, "path tenant_id")
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        agent_id = body.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise invalid("agent_id", "field required")
        tools = body.get("tools")
        if not isinstance(tools, list):
            raise invalid("tools", "must be a list of {name, description, input_schema}")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid(f"tools[{i}].name", "must be a non-empty string")
        count = await run_in_threadpool(store.upsert_inventory, principal.tenant_id, agent_id, tools)
        return json_response({"accepted": count}, 202)

    @app.get(
        "/v1/inventory",
        tags=["read"],
        summary="Tools agents reported (feeds the coverage report)",
        openapi_extra={"security": _SECURED},
    )
    async def inventory(request: Request) -> Response:
        principal = auth.principal(request, "read")
        rows = await run_in_threadpool(
            store.inventory, principal.tenant_id, request.query_params.get("agent_id")
        )
        return json_response({"items": rows, "next_cursor": None})

    # -- §11: reads ------------------------------------------------------------------------------

    @app.get(
        "/v1/events",
        tags=["read"],
        summary="Query events (filters, cursor pages)",
        openapi_extra={"security": _SECURED},
    )
    async def list_events(request: Request) -> Response:
        principal = auth.principal(request, "read")
        q = request.query_params
        principal.check_tenant(q.get("tenant_id"))
        count = query_limit(request)
        after = decode_cursor(request, "events")
        since, until = query_ts(request, "since"), query_ts(request, "until")
        rows = await run_in_threadpool(
            lambda: store.events(
                principal.tenant_id,
                agent_id=q.get("agent_id") or None,
                session_id=q.get("session_id") or None,
                tool_name=q.get("tool_name") or None,
                event_type=q.get("event_type") or None,
                since=since,
                until=until,
                after_seq=after,
                limit=count + 1,
            )
        )
        more = len(rows) > count
        rows = rows[:count]
        return json_response(
            {"items": rows, "next_cursor": encode_cursor("events", rows[-1]["seq"]) if more else None}
        )

    @app.get(
        "/v1/sessions", tags=["read"], summary="Sessions with counts", openapi_extra={"security": _SECURED}
    )
    async def list_sessions(request: Request) -> Response:
        principal = auth.principal(request, "read")
        q = request.query_params
        count, offset = query_limit(request), decode_cursor(request, "sessions")
        since = query_ts(request, "since")
        rows = await run_in_threadpool(
            lambda: store.sessions(
                principal.tenant_id,
                agent_id=q.get("agent_id") or None,
                user_id=q.get("user_id") or None,
                since=since,
                limit=offset + count + 1,
            )
        )
        return json_response(_page(rows, offset, count, "sessions"))

    @app.get(
        "/v1/sessions/{session_id}",
        tags=["read"],
        summary="One session and its events",
        openapi_extra={"security": _SECURED},
    )
    async def get_session(session_id: str, request: Request) -> Response:
        principal = auth.principal(request, "read")
        count = query_limit(request, default=500, maximum=500)
        summary = await run_in_threadpool(store.session_summary, principal.tenant_id, session_id)
        if summary is None:
            raise ApiError(404, "unknown_session", f"no session {session_id!r} for this tenant")
        events = await run_in_threadpool(
            lambda: store.events(principal.tenant_id, session_id=session_id, limit=count + 1)
        )
        more = len(events) > count
        summary["events"] = events[:count]
        summary["events_next_cursor"] = encode_cursor("events", events[count - 1]["seq"]) if more else None
        return json_response(summary)

    @app.get(
        "/v1/violations",
        tags=["read"],
        summary="Violations, newest first",
        openapi_extra={"security": _SECURED},
    )
    async def list_violations(request: Request) -> Response:
        principal = auth.principal(request, "read")
        q = request.query_params
        count, offset = query_limit(request), decode_cursor(request, "violations")
        since = query_ts(request, "since")
        rows = await run_in_threadpool(
            lambda: store.violations(
                principal.tenant_id,
                agent_id=q.get("agent_id") or None,
                session_id=q.get("session_id") or None,
                since=since,
                limit=offset + count + 1,
            )
        )
        page = _page([{k: r.get(k) for k in _VIOLATION_FIELDS} for r in rows], offset, count, "violations")
        return json_response(page)

    # -- §11: analytics --------------------------------------------------------------------------

    def analytics_scope(request: Request) -> tuple[Principal, dict[str, Any]]:
        principal = auth.principal(request, "read")
        since, until = query_ts(request, "since"), query_ts(request, "until")
        if since and until and parse_ts(since) >= parse_ts(until):
            raise invalid("until", "must be later than since")
        return principal, {"agent_id": request.query_params.get("agent_id") or None, "since": since, "until": until}

    @app.get(
        "/v1/analytics/summary",
        tags=["analytics"],
        summary="Totals: events by kind, sessions, violations, approvals, top tools",
        openapi_extra={"security": _SECURED, "parameters": _ANALYTICS_PARAMETERS},
    )
    async def analytics_summary(request: Request) -> Response:
        principal, scope = analytics_scope(request)
        return json_response(await run_in_threadpool(
            lambda: server_analytics.summary(store, principal.tenant_id, **scope)))

    @app.get(
        "/v1/analytics/timeseries",
        tags=["analytics"],
        summary="Counts per time bucket (aligned to the Unix epoch, UTC)",
        openapi_extra={"security": _SECURED, "parameters": [*_ANALYTICS_PARAMETERS, _BUCKET_PARAMETER]},
    )
    async def analytics_timeseries(request: Request) -> Response:
        principal, scope = analytics_scope(request)
        bucket = server_analytics.parse_duration("bucket", request.query_params.get("bucket"), 3600)
        return json_response(await run_in_threadpool(
            lambda: server_analytics.timeseries(store, principal.tenant_id, bucket=bucket, **scope)))

    @app.get(
        "/v1/analytics/drift",
        tags=["analytics"],
        summary="Tool-usage drift from each agent's baseline (Jensen-Shannon, per window)",
        openapi_extra={"security": _SECURED, "parameters": [*_ANALYTICS_PARAMETERS, *_DRIFT_PARAMETERS]},
    )
    async def analytics_drift(request: Request) -> Response:
        principal, scope = analytics_scope(request)
        q = request.query_params
        window = server_analytics.parse_duration("window", q.get("window"), 3600)
        step = server_analytics.parse_duration("step", q.get("step"), window) if q.get("step") else None
        threshold = query_number(request, "threshold", 0.05, low=0.0, high=1.0)
        train = query_number(request, "train", 0.25, low=0.0, high=1.0)
        if not 0 < train < 1:
            raise invalid("train", "must be between 0 and 1 (the share of the span the baseline is learnt from)")
        min_calls = int(query_number(request, "min_calls", 20, low=1, high=1_000_000, whole=True))
        return json_response(await run_in_threadpool(
            lambda: server_analytics.drift(store, principal.tenant_id, window=window, step=step, threshold=threshold,
                                           min_calls=min_calls, train=train, **scope)))

    @app.get(
        "/v1/approvals",
        tags=["approvals"],
        summary="Held calls by status",
        openapi_extra={"security": _SECURED},
    )
    async def list_approvals(request: Request) -> Response:
        principal = auth.principal(request, "read")
        status = request.query_params.get("status") or "pending"
        if status not in HOLD_STATUSES:
            raise invalid("status", f"must be one of {', '.join(HOLD_STATUSES)}")
        count, offset = query_limit(request), decode_cursor(request, "approvals")
        rows = await run_in_threadpool(
            lambda: store.holds(principal.tenant_id, status=status, limit=offset + count + 1)
        )
        return json_response(_page([approval_record(r) for r in rows], offset, count, "approvals"))

    @app.get(
        "/v1/approvals/{approval_id}",
        tags=["approvals"],
        summary="One held call",
        openapi_extra={"security": _SECURED},
    )
    async def get_approval(approval_id: str, request: Request) -> Response:
        principal = auth.principal(request, "read")
        record = await run_in_threadpool(store.get_hold, approval_id, principal.tenant_id)
        if record is None:
            raise ApiError(404, "unknown_hold", f"no hold {approval_id!r} for this tenant")
        return json_response(approval_record(record))

    @app.post(
        "/v1/approvals/{approval_id}/resolve",
        tags=["approvals"],
        summary="Approve or deny a held call",
        openapi_extra=_body_schema(_RESOLVE_SCHEMA, "the reviewer's decision"),
    )
    async def resolve(approval_id: str, request: Request) -> Response:
        principal = auth.principal(request, "resolve")
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        decision = body.get("decision")
        if decision not in ("approve", "deny"):
            raise invalid("decision", "must be 'approve' or 'deny'")
        reviewer = _opt_str(body, "reviewer") or principal.label
        note = _opt_str(body, "note")
        scope = body.get("scope") or "once"
        if scope not in ("once", "session"):
            raise invalid("scope", "must be 'once' or 'session'")
        modified = body.get("modified_args")
        if modified is not None:
            if not isinstance(modified, dict):
                raise invalid("modified_args", "must be an object of argument names to values")
            if decision != "approve":
                raise invalid("modified_args", "only an approval can carry modified arguments")
        try:
            record = await run_in_threadpool(
                lambda: engine.resolve(
                    approval_id,
                    approve=decision == "approve",
                    reviewer=reviewer,
                    note=note,
                    modified_args=modified,
                    scope=scope,
                    tenant_id=principal.tenant_id,
                )
            )
        except HoldNotFound:
            raise ApiError(404, "unknown_hold", f"no hold {approval_id!r} for this tenant") from None
        except HoldConflict as exc:
            raise ApiError(
                409,
                "conflict",
                f"hold {exc.record['approval_id']} is already {exc.record['status']}",
                extra={"record": approval_record(exc.record)},
            ) from None
        except ValueError as exc:
            raise invalid("modified_args" if modified is not None else "body", str(exc)) from None
        finally:
            state.holds_changed()
        return json_response(approval_record(record))

    # -- §11: policies ---------------------------------------------------------------------------

    def policy_reply(version: int, etag: str, text: str) -> Response:
        return json_response(
            {"version": version, "etag": etag, "policy": text, "format": "yaml"},
            headers={"ETag": f'"{etag}"'},
        )

    @app.get(
        "/v1/policies",
        tags=["policies"],
        summary="The tenant's current policy",
        openapi_extra={"security": _SECURED},
    )
    async def get_policy(request: Request) -> Response:
        principal = auth.principal(request, "read")
        return policy_reply(*await run_in_threadpool(state.current_policy, principal.tenant_id))

    @app.get(
        "/v1/policies/versions",
        tags=["policies"],
        summary="Every stored version, newest first",
        openapi_extra={"security": _SECURED},
    )
    async def policy_versions(request: Request) -> Response:
        principal = auth.principal(request, "read")
        rows = await run_in_threadpool(store.policy_versions, principal.tenant_id)
        items = [{k: r[k] for k in ("version", "etag", "created_at", "created_by")} for r in rows]
        return json_response({"items": items, "next_cursor": None})

    @app.put(
        "/v1/policies",
        tags=["policies"],
        summary="Replace the tenant's policy (If-Match required)",
        openapi_extra=_body_schema(_POLICY_SCHEMA, '{"policy": YAML text or mapping}, or raw YAML'),
    )
    async def put_policy(request: Request) -> Response:
        principal = auth.principal(request, "admin")
        if_match = request.headers.get("if-match")
        if not if_match:
            raise ApiError(
                428, "precondition_required", "PUT /v1/policies needs If-Match: <etag from GET /v1/policies>"
            )
        content_type = request.headers.get("content-type", "")
        if "json" in content_type or not content_type:
            body = await read_json(request, limit)
            source = body.get("policy") if isinstance(body, dict) else None
            if not isinstance(source, (str, dict)):
                raise invalid("policy", "must be the policy as YAML text or an object")
        else:
            raw = await read_json_text(request, limit)
            source = raw
        try:
            policy = parse_policy(source, name="policy")
        except PolicyError as exc:
            raise ApiError(422, "invalid_policy", str(exc), field="policy") from None
        wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
        async with state.put_lock:
            version, etag, _ = await run_in_threadpool(state.current_policy, principal.tenant_id)
            new_version: int | None = None
            if "*" in wanted or etag in wanted:
                # saved only if still the version checked: another server sharing the store may have saved
                new_version = await run_in_threadpool(
                    lambda: store.save_policy(principal.tenant_id, policy.text, policy.etag, principal.label,
                                              expected_version=None if "*" in wanted else version)
                )
                if new_version is None:
                    version, etag, _ = await run_in_threadpool(state.current_policy, principal.tenant_id)
            if new_version is None:
                raise ApiError(
                    412,
                    "stale",
                    f"the policy changed (current etag {etag}); GET it and retry",
                    extra={"etag": etag, "version": version},
                )
            state.policy_saved(principal.tenant_id, new_version, policy)
        return policy_reply(new_version, policy.etag, policy.text)

    # -- keys (admin, own tenant only; `thoth-nb keys` manages any tenant locally) -----------------

    @app.get(
        "/v1/keys",
        tags=["keys"],
        summary="API keys of this tenant (never the secrets)",
        openapi_extra={"security": _SECURED},
    )
    async def list_keys(request: Request) -> Response:
        principal = auth.principal(request, "admin")
        rows = await run_in_threadpool(store.api_keys, principal.tenant_id)
        return json_response({"items": rows, "next_cursor": None})

    @app.post(
        "/v1/keys",
        status_code=201,
        tags=["keys"],
        summary="Create a key (the secret is shown once)",
        openapi_extra=_body_schema(
            {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": ["agent", "reviewer", "admin"]},
                    "name": {"type": "string"},
                },
            },
            "role and an optional name",
        ),
    )
    async def create_key(request: Request) -> Response:
        principal = auth.principal(request, "admin")
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")
        role = body.get("role")
        if role not in ("agent", "reviewer", "admin"):
            raise invalid("role", "must be agent, reviewer or admin")
        principal.check_tenant(body.get("tenant_id"))
        record, secret = await run_in_threadpool(
            store.create_api_key, principal.tenant_id, role, _opt_str(body, "name") or ""
        )
        return json_response({**record, "api_key": secret}, 201)

    @app.delete(
        "/v1/keys/{key_id}", tags=["keys"], summary="Revoke a key", openapi_extra={"security": _SECURED}
    )
    async def revoke_key(key_id: str, request: Request) -> Response:
        principal = auth.principal(request, "admin")
        done = await run_in_threadpool(store.revoke_api_key, key_id, principal.tenant_id)
        if not done:
            raise ApiError(404, "unknown_key", f"no active key {key_id!r} for this tenant")
        auth.forget(key_id)
        return json_response({"key_id": key_id, "revoked": True})

    # -- health ----------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"], summary="Readiness; advertises long-poll hold waits")
    async def readyz() -> Response:
        try:
            await run_in_threadpool(store.query, "SELECT 1")
        except Exception as exc:
            return json_response(
                {"status": "unavailable", "message": f"storage: {exc}", "long_poll": False}, 503
            )
        return json_response(
            {"status": "ok", "long_poll": True, "version": __version__, "auth": not settings.no_auth}
        )

    # -- the reviewer page -----------------------------------------------------------------------

    page = _static("review.html")
    assets = {
        "review.js": ("application/javascript", _static("review.js")),
        "review.css": ("text/css", _static("review.css")),
    }

    @app.get("/", include_in_schema=False)
    @app.get("/review", include_in_schema=False)
    async def review_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise ApiError(404, "not_found", f"no asset {name!r}")
        return Response(found[1], media_type=found[0], headers=_PAGE_HEADERS)

    # The three hot wire endpoints are answered straight from ThothApp.__call__ (see there); the FastAPI
    # routes above stay for the OpenAPI document and for an app that has middleware added.
    app.hot_routes = {"/v1/enforce": ("POST", enforce), "/v1/events/batch": ("POST", events_batch)}
    app.hold_route = hold

    _add_security_schemes(app)
    return app


async def read_json_text(request: Request, limit: int) -> str:
    data = await read_body(request, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_body", f"policy text is not UTF-8: {exc}") from None


def _add_security_schemes(app: FastAPI) -> None:
    """Declare the two key headers (PROTOCOL §2) in the OpenAPI document."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "thk_... API key"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def principal_of(request: Request, action: str) -> Principal:
    """For extensions mounting routes on the app: authenticate like the built-in handlers do."""
    state: ServerState = request.app.state.thoth
    return state.auth.principal(request, action)
