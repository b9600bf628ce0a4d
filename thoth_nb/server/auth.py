"""API keys, roles and tenants (D9).

A key belongs to one tenant and has one role; the tenant of every request comes from its key, never
from the body. Keys are looked up by their SHA-256 (the store keeps only that) and compared in
constant time; a short in-memory cache keeps the lookup off the hot path, so a revoked key stops
working within `cache_seconds`.

Without keys (`--no-auth`, loopback only) the address is the only guard, so a request must also be
addressed to a loopback host and, when a browser sends it, come from a loopback page: otherwise any web
page the user opens could write to the server (a cross-site POST needs no CORS answer to land), or read
it after pointing its own DNS name at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import threading
import time
from urllib.parse import urlsplit

from starlette.requests import Request

from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server._http import ApiError

__all__ = ["PERMISSIONS", "Authenticator", "Principal", "check_ingest_token", "is_loopback"]

def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 with or without brackets) is this machine's loopback."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_authority(authority: str) -> bool:
    """`Host`-style `name[:port]` (IPv6 in brackets) names a loopback host."""
    try:
        host = urlsplit(f"//{authority}").hostname
    except ValueError:
        return False
    return host is not None and is_loopback(host)


#: which roles may do what; admin may do everything
PERMISSIONS: dict[str, frozenset[str]] = {
    "enforce": frozenset({"agent", "admin"}),
    "hold": frozenset({"agent", "reviewer", "admin"}),
    "ingest": frozenset({"agent", "admin"}),
    "explain": frozenset({"agent", "reviewer", "admin"}),
    "inventory": frozenset({"agent", "admin"}),
    "read": frozenset({"reviewer", "admin"}),
    "resolve": frozenset({"reviewer", "admin"}),
    "admin": frozenset({"admin"}),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    role: str
    key_id: str
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.key_id

    def check_tenant(self, tenant_id: object, field: str = "tenant_id") -> None:
        """403 when a request names another tenant than its key's (absent is fine: the key decides)."""
        if tenant_id is None or tenant_id == "":
            return
        if tenant_id != self.tenant_id:
            raise ApiError(
                403, "forbidden", f"{field} {tenant_id!r} is not the tenant of this API key", field=field
            )


class Authenticator:
    def __init__(
        self,
        store: SQLiteStore,
        *,
        no_auth: bool = False,
        local_tenant: str = "local",
        cache_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.no_auth = no_auth
        self.local = Principal(local_tenant, "admin", "local", "local (no auth)")
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def presented_key(request: Request) -> str:
        """The key from `Authorization: Bearer` or `x-api-key`; 401 when missing or contradictory (the two
        headers, or a header sent twice, naming different keys: a proxy may read another copy than we do)."""
        headers = request.headers
        bearers: set[str] = set()
        for authorization in headers.getlist("authorization"):
            if not authorization:
                continue
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(
                    401,
                    "unauthorized",
                    "Authorization must be 'Bearer <api key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            bearers.add(value.strip())
        header_keys = {value.strip() for value in headers.getlist("x-api-key") if value.strip()}
        keys = bearers | header_keys
        if len(keys) > 1:
            raise ApiError(
                401,
                "unauthorized",
                "Authorization and x-api-key (or a repeated header) carry different keys; send one key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not keys:
            raise ApiError(
                401,
                "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return keys.pop()

    def principal(self, request: Request, action: str) -> Principal:
        """Who is calling, checked against `action`: 401 for no or a bad key, 403 for the wrong role
        or for a `?tenant_id=` that is not the key's (every list accepts the parameter, none widens by it)."""
        principal = self._authenticate(request, action)
        asked = request.query_params.get("tenant_id") if request.scope.get("query_string") else None
        if asked:
            principal.check_tenant(asked)
        return principal

    def _authenticate(self, request: Request, action: str) -> Principal:
        if self.no_auth:
            self._check_local(request)
            return self.local
        key = self.presented_key(request)
        principal = self._lookup(key)
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "API key not recognised (unknown or revoked)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role not in PERMISSIONS[action]:
            allowed = " or ".join(sorted(PERMISSIONS[action]))
            raise ApiError(
                403, "forbidden", f"a {principal.role} key cannot {action}; this needs an {allowed} key"
            )
        return principal

    @staticmethod
    def _check_local(request: Request) -> None:
        """Without keys: 403 unless addressed to a loopback host from no page or a loopback page."""
        host = request.headers.get("host", "")
        if not _loopback_authority(host):
            raise ApiError(
                403, "forbidden",
                f"this server runs without keys (--no-auth) and answers only requests addressed to a "
                f"loopback host such as 127.0.0.1 or localhost; got Host {host!r}. Use that address, or run "
                f"the server with API keys",
            )
        origin = request.headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not _loopback_authority(parts.netloc):
                raise ApiError(
                    403, "forbidden",
                    f"this server runs without keys (--no-auth) and refuses requests from web pages of "
                    f"other origins; got Origin {origin!r}. Open the page from the server itself, or run "
                    f"the server with API keys",
                )

    def _lookup(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        record = self.store.api_key_for(key)
        if record is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(record["tenant_id"], record["role"], record["key_id"], record.get("name") or "")
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from the cache at once (this process); others expire within cache_seconds."""
        with self._lock:
            for digest, (_, principal) in list(self._cache.items()):
                if principal.key_id == key_id:
                    del self._cache[digest]


INGEST_TOKEN_HEADER = "x-thoth-event-ingest-token"


def check_ingest_token(request: Request, expected: str) -> None:
    """401 unless the request carries the server's event ingest token (compared in constant time).
    It is a second secret for the ingest route only; the API key still decides tenant and role."""
    presented = (request.headers.get(INGEST_TOKEN_HEADER) or "").strip()
    if not presented:
        raise ApiError(
            401,
            "unauthorized",
            "this server requires its event ingest token: send 'X-Thoth-Event-Ingest-Token: <token>' "
            "(THOTH_EVENT_INGEST_TOKEN or event_ingest_token= on the client)",
            field="X-Thoth-Event-Ingest-Token",
        )
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ApiError(
            401, "unauthorized", "X-Thoth-Event-Ingest-Token does not match this server's event ingest token",
            field="X-Thoth-Event-Ingest-Token",
        )
