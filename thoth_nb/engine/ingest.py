"""A `POST /v1/events/batch` body (PROTOCOL §5) made into stored events: split, checked, mapped, stored.

It lives in the engine, not in server/, so that the server's ingest child (`_transports.store_writer`,
frame kind B) runs the very same code as the server does in-process. It imports only the store and
the standard library (plus orjson and, when installed, msgspec): the child loads it without the SDK.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from thoth_nb.engine.store import IngestResult, SQLiteStore

__all__ = [
    "BatchRefused",
    "batch_events",
    "ingest_body",
    "parse_json",
    "prepare_event",
    "prepare_events",
    "raw_batch_events",
]


class BatchRefused(Exception):
    """The whole batch is refused and nothing of it stored; the server answers `status` with a §7 body."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, "message": self.message, "field": self.field}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchRefused:
        return cls(int(data["status"]), str(data["error"]), str(data["message"]), data.get("field"))


def _invalid(field: str, message: str) -> BatchRefused:
    return BatchRefused(422, "invalid_request", f"{field}: {message}", field)


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake_keys(event: Mapping[str, Any]) -> dict[str, Any]:
    """ts events arrive camelCase (`eventId`, `occurredAt`, ...): map top-level keys to §5's names."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        snake = _CAMEL.sub(r"_\1", key).lower() if isinstance(key, str) and not key.islower() else key
        if snake != key and snake in event:
            continue
        out[snake] = value
    return out


def prepare_event(index: int, item: Any, tenant_id: str) -> dict[str, Any]:
    """One batch event made ready for the store: snake_case keys, the key's tenant, a prefixed id.

    A ValueError rejects this event (its message is the `rejected` entry's error); an event naming another
    tenant refuses the whole batch (403): a key writes only its own tenant. The event may be changed in
    place (it is the request's own parsed object), and preparing it twice gives the same event."""
    if not isinstance(item, dict):
        raise ValueError("event must be an object")
    event: dict[str, Any] = item if "event_id" in item else _snake_keys(item)
    tenant = event.get("tenant_id")
    if tenant in (None, ""):
        event["tenant_id"] = tenant_id
    elif tenant != tenant_id:
        raise BatchRefused(
            403,
            "forbidden",
            f"events[{index}].tenant_id {tenant!r} is not the tenant of this API key",
            f"events[{index}].tenant_id",
        )
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event_id: must be a non-empty string")
    prefix, sep, _ = event_id.partition(":")
    if not sep:
        event["event_id"] = f"{tenant_id}:{event_id}"
    elif prefix != tenant_id:
        raise ValueError(f"event_id must start with '{tenant_id}:'")
    return event


def parse_json(data: bytes) -> Any:
    """A request body's JSON; BatchRefused (400, saying what is wrong) when it is empty or not JSON."""
    if not data.strip():
        raise BatchRefused(400, "malformed_json", "request body is empty; send a JSON document")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BatchRefused(400, "malformed_json", f"request body is not valid JSON: {exc}") from None


def batch_events(data: bytes, max_events: int) -> list[Any]:
    """The events of a PROTOCOL §5 request body (a bare array or `{"events": [...]}`): 400 if it is not
    JSON, 422 if it has neither shape, 413 past `max_events`."""
    body = parse_json(data)
    if isinstance(body, dict):
        events = body.get("events")
        if not isinstance(events, list):
            raise _invalid("events", "must be a list of event objects")
    elif isinstance(body, list):
        events = body
    else:
        raise _invalid("body", 'must be an array of events or {"events": [...]}')
    _check_count(len(events), max_events)
    return events


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise BatchRefused(413, "payload_too_large", f"{count} events in one batch; send at most {max_events}")


def _raw_batch_decoder() -> tuple[Any, type[Exception]] | None:
    """msgspec's decoder of a batch body into each event's JSON text (`msgspec.Raw`), and its error; None
    without msgspec (the `server` extra installs it). Found by name so mypy passes with and without it."""
    try:
        msgspec: Any = importlib.import_module("msgspec")
    except ImportError:  # pragma: no cover - exercised only without msgspec
        return None
    batch = msgspec.defstruct("RawBatch", [("events", list[msgspec.Raw] | None, None)])
    return msgspec.json.Decoder(list[msgspec.Raw] | batch), msgspec.DecodeError


_RAW_BATCH = _raw_batch_decoder()


def raw_batch_events(data: bytes) -> list[Any] | None:
    """The batch's events as raw JSON texts, split by msgspec without building them; None if msgspec is
    missing or the body has neither §5 shape or is not JSON (`batch_events` then says what is wrong)."""
    if _RAW_BATCH is None:
        return None
    decoder, error = _RAW_BATCH
    try:
        decoded = decoder.decode(data)
    except error:
        return None
    return decoded if isinstance(decoded, list) else decoded.events  # type: ignore[no-any-return]


def _prepare_raw(index: int, raw: Any, tenant_id: str) -> dict[str, Any]:
    """`prepare_event` on one event's raw JSON text, parsed now: parsing the whole batch at once cost
    ~2x per event (500 events' objects built together in cold memory), and the store reads each event
    right after it is parsed."""
    try:
        item = orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError as exc:
        raise BatchRefused(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    return prepare_event(index, item, tenant_id)


def ingest_body(store: SQLiteStore, data: bytes, max_events: int, tenant_id: str) -> IngestResult:
    """Parse, check and store one request's batch in a single pass over its events; returns after the
    commit. BatchRefused (nothing stored) for a body that is not a batch or names another tenant."""
    raws = raw_batch_events(data)
    if raws is None:
        events = batch_events(data, max_events)
        return store.ingest_events(events, prepare=functools.partial(prepare_event, tenant_id=tenant_id))
    _check_count(len(raws), max_events)
    return store.ingest_events(raws, prepare=functools.partial(_prepare_raw, tenant_id=tenant_id))


def prepare_events(
    events: Sequence[Any], tenant_id: str
) -> tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]]:
    """Normalise a whole batch for a store without `prepare=` (PostgreSQL): `prepare_event` on each.

    Returns (events to store, their indexes in the batch, rejected entries)."""
    ready: list[dict[str, Any]] = []
    indexes: list[int] = []
    rejected: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        try:
            ready.append(prepare_event(index, event, tenant_id))
        except ValueError as exc:
            rejected.append({"index": index, "error": str(exc)})
            continue
        indexes.append(index)
    return ready, indexes, rejected
