"""Small HTTP helpers for the server: orjson bodies, PROTOCOL §7 error bodies, limits and cursors.

The hot endpoints (`/v1/enforce`, `/v1/events/batch`) parse and answer with orjson directly rather
than through pydantic models: the issue's measurements put pydantic at 0.30x a bare round trip and
~20k events/s, orjson at 42-50k.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from thoth_nb.engine import ingest
from thoth_nb.engine.store import parse_ts

__all__ = [
    "ApiError",
    "JSONResponse",
    "decode_cursor",
    "encode_cursor",
    "error_body",
    "json_response",
    "parse_json",
    "query_limit",
    "query_number",
    "query_ts",
    "read_json",
]

_OPTS = orjson.OPT_NON_STR_KEYS


class ApiError(Exception):
    """An error answered as `{"error", "message"}` (plus `field` for 422s) with an HTTP status."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    @classmethod
    def refused(cls, exc: ingest.BatchRefused) -> ApiError:
        """The answer to a batch body the engine refused as a whole (`engine.ingest`)."""
        return cls(exc.status, exc.error, exc.message, field=exc.field)


def error_body(error: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTS, default=str)


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=dict(headers) if headers else None)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {message}", field=field)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 past `limit` bytes. A moderately oversized body is drained before
    answering so the client reads a clean 413 instead of a reset connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= limit:
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    too_big = False
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_big = True
            if size > 8 * limit:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
    return b"".join(chunks)


def parse_json(data: bytes) -> Any:
    """400 (saying what is wrong) when `data` is empty or not JSON."""
    try:
        return ingest.parse_json(data)
    except ingest.BatchRefused as exc:
        raise ApiError.refused(exc) from None


async def read_json(request: Request, limit: int) -> Any:
    """Parse a JSON body: 413 over the limit, 400 (saying what is wrong) when it is not JSON."""
    return parse_json(await read_body(request, limit))


def query_limit(request: Request, default: int = 100, maximum: int = 500) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid("limit", f"must be a whole number; got {raw!r}") from None
    if value < 1:
        raise invalid("limit", "must be at least 1")
    return min(value, maximum)


def query_number(request: Request, name: str, default: float, *, low: float, high: float,
                 whole: bool = False) -> float:
    """A numeric query parameter in [low, high]; 422 naming it and the range otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise invalid(name, f"must be {kind} from {low:g} to {high:g}; got {raw!r}")
    return value


def query_ts(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        parse_ts(raw)
    except ValueError:
        raise invalid(
            name, f"must be an RFC 3339 timestamp, e.g. 2026-06-21T20:52:13Z; got {raw!r}"
        ) from None
    return raw


#: no cursor this server issues stands past this position; a larger one would overflow the store's
#: 64-bit integers (a 500) once a list adds its page size to it
MAX_CURSOR = 2**62


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, value])).decode().rstrip("=")


def decode_cursor(request: Request, kind: str) -> int:
    """The position an opaque `cursor` query parameter stands for (0 without one); 422 if forged."""
    raw = request.query_params.get("cursor")
    if not raw:
        return 0
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise invalid("cursor", "is not a cursor this server issued") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or decoded[0] != kind
        or not isinstance(decoded[1], int)
        or isinstance(decoded[1], bool)
        or not 0 <= decoded[1] <= MAX_CURSOR
    ):
        raise invalid("cursor", "is not a cursor this server issued for this list")
    return int(decoded[1])
