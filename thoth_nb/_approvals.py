"""Resolving held calls from Python: the embedded store by default, a server when a URL is given."""

from __future__ import annotations

import getpass
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from thoth_nb import _json, _runtime
from thoth_nb._exceptions import ThothConfigError
from thoth_nb._transports.http import error_message
from thoth_nb._version import __version__
from thoth_nb.engine.store import HoldConflict, HoldNotFound

__all__ = ["approve", "deny", "holds", "resolve"]


def _reviewer(reviewer: str | None) -> str:
    if reviewer:
        return reviewer
    try:
        return getpass.getuser()
    except Exception:
        return "reviewer"


def _server(api_url: str | None) -> str | None:
    url = api_url or os.environ.get("THOTH_API_URL")
    return url.rstrip("/") if url else None


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("THOTH_API_KEY")
    out = {"Content-Type": "application/json", "User-Agent": f"thoth-nb/{__version__}"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def _call(method: str, server: str, url: str, **options: Any) -> httpx.Response:
    """One request to a thoth-nb server; an unreachable or malformed URL is a RuntimeError naming it (the
    CLI prints it as one line) rather than an httpx exception."""
    try:
        return httpx.request(method, url, timeout=10.0, trust_env=False, **options)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the thoth-nb server at {server} ({type(exc).__name__}: {exc}); "
                           "check --api-url / THOTH_API_URL") from None


def _json_reply(response: httpx.Response, server: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RuntimeError(f"{server} answered {response.status_code} without JSON: is it a thoth-nb server? "
                           "(check --api-url / THOTH_API_URL)") from None


def resolve(
    hold: str,
    *,
    approve: bool,
    reviewer: str | None = None,
    note: str | None = None,
    scope: str = "once",
    modified_args: Mapping[str, Any] | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Approve or deny one held call by approval id or hold token; returns the resolved record.

    `scope="session"` also allows the same tool with the same arguments for the rest of the session.
    Raises LookupError for an unknown hold and RuntimeError when it was already resolved or expired.
    """
    who = _reviewer(reviewer)
    server = _server(api_url)
    if server is None:
        engine = _runtime.local_engine()
        try:
            return engine.resolve(hold, approve=approve, reviewer=who, note=note, scope=scope,
                                  modified_args=modified_args)
        except HoldNotFound:
            raise LookupError(f"no hold {hold!r} in {engine.store.path} (list them with `thoth-nb holds`)") from None
        except HoldConflict as exc:
            raise RuntimeError(f"hold {hold} is already {exc.record['status']}; nothing changed") from None
    body: dict[str, Any] = {"decision": "approve" if approve else "deny", "reviewer": who, "scope": scope}
    if note:
        body["note"] = note
    if modified_args is not None:
        body["modified_args"] = dict(modified_args)
    url = f"{server}/v1/approvals/{urllib.parse.quote(hold, safe='')}/resolve"
    response = _call("POST", server, url, content=_json.dumps_bytes(body), headers=_headers(api_key))
    if response.status_code == 404:
        raise LookupError(f"no hold {hold!r} on {server}")
    if response.status_code == 409:
        raise RuntimeError(f"hold {hold} is already resolved or expired: {error_message(response)}")
    if response.status_code in (401, 403):
        raise ThothConfigError(f"the server refused the resolution (status={response.status_code}): "
                               f"{error_message(response)}; use a reviewer or admin API key")
    if response.status_code >= 400:
        raise RuntimeError(f"resolving {hold} failed (status={response.status_code}): {error_message(response)}")
    data: dict[str, Any] = _json_reply(response, server)
    return data


def _hold_ids(holds: Any) -> list[str] | None:
    """The ids in a bulk argument (a DataFrame from `thoth_nb.approvals()`, a Series, records or
    ids), or None for a single id."""
    if isinstance(holds, str):
        return None
    columns = getattr(holds, "columns", None)
    if columns is not None:  # a DataFrame: its approval_id (or hold_token) column
        for name in ("approval_id", "hold_token"):
            if name in columns:
                return [str(v) for v in holds[name].tolist() if v]
        raise ValueError("the DataFrame needs an approval_id or hold_token column")
    if hasattr(holds, "tolist") and not isinstance(holds, Mapping):  # a Series or an array of ids
        holds = holds.tolist()
    if isinstance(holds, Mapping):
        holds = [holds]
    ids = []
    for item in holds:
        if isinstance(item, Mapping):
            item = item.get("approval_id") or item.get("hold_token")
        if item:
            ids.append(str(item))
    return ids


def _bulk(holds: Any, approve: bool, options: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
    ids = _hold_ids(holds)
    if ids is None:
        return resolve(holds, approve=approve, **options)
    options = {**options, "reviewer": _reviewer(options.get("reviewer"))}
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    for key in dict.fromkeys(ids):  # each once, in order
        try:
            done.append(resolve(key, approve=approve, **options))
        except (LookupError, RuntimeError) as exc:
            failed.append(f"{key}: {exc}")
    if failed:
        raise RuntimeError(f"{len(done)} resolved, {len(failed)} not: " + "; ".join(failed))
    return done


def approve(hold: Any, **options: Any) -> Any:
    """Approve a held call (see `resolve`). Given a DataFrame (`thoth_nb.approvals("pending")`), a
    list of ids or of records, approve each and return the list of resolved records."""
    return _bulk(hold, True, options)


def deny(hold: Any, **options: Any) -> Any:
    """Deny a held call (see `resolve`); the waiting tool raises ThothPolicyViolation. Accepts the
    same bulk arguments as `approve`."""
    return _bulk(hold, False, options)


def holds(status: str = "pending", *, api_url: str | None = None, api_key: str | None = None,
          tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Held calls as records (status pending, approved, denied, expired or all)."""
    if status not in ("pending", "approved", "denied", "expired", "all"):
        raise ValueError("status must be pending, approved, denied, expired or all")
    server = _server(api_url)
    if server is None:
        return _runtime.local_store().holds(tenant_id, status=status)
    response = _call("GET", server, f"{server}/v1/approvals", params={"status": status, "limit": 500},
                     headers=_headers(api_key))
    if response.status_code >= 400:
        raise RuntimeError(f"listing holds failed (status={response.status_code}): {error_message(response)}")
    reply = _json_reply(response, server)
    items: list[dict[str, Any]] = reply.get("items", []) if isinstance(reply, dict) else []
    return items
