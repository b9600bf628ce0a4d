"""A real `thoth-nb serve` (uvicorn, uvloop, httptools) on a free 127.0.0.1 port; keys for two tenants."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx

from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server import BackgroundServer, ServerSettings

POLICY = """\
version: 1
default: allow
rules:
  - id: big-transfer
    tool: transfer
    when: {amount: {gt: 100}}
    decision: step_up
    reason: transfers over 100 need a human
    severity: high
  - id: no-drop
    tool: drop_table
    decision: block
    reason: dropping tables is forbidden
    severity: critical
    hard: true
"""

TENANTS = ("acme", "globex")
ROLES = ("agent", "reviewer", "admin")


@dataclasses.dataclass
class Live:
    server: BackgroundServer
    keys: dict[str, str]
    policy_path: Path
    clients: list[httpx.Client] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def key(self, tenant: str, role: str) -> str:
        return self.keys[f"{tenant}:{role}"]

    def client(self, tenant: str | None = "acme", role: str = "admin", **headers: str) -> httpx.Client:
        """An httpx client for one tenant's key of one role (tenant None: no key at all)."""
        hdrs = dict(headers)
        if tenant is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.key(tenant, role)}")
        client = httpx.Client(base_url=self.url, headers=hdrs, timeout=10.0, trust_env=False)
        self.clients.append(client)
        return client


def verified(db: Path) -> None:
    """The store's hash chains verify end to end."""
    from thoth_nb.engine.audit import verify_store

    store = SQLiteStore(db)
    try:
        report = verify_store(store)
        assert report.ok, report.to_dict()
    finally:
        store.close()


def enforce_body(tenant: str = "acme", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": "agent-1",
        "tenant_id": tenant,
        "user_id": "u1",
        "tool_name": "lookup",
        "session_id": "sess-1",
        "session_tool_calls": [],
        "approved_scope": ["lookup", "transfer", "drop_table"],
        "enforcement_mode": "step_up",
        "environment": "test",
        "enforcement_trace_id": "sess-1",
    }
    body.update(over)
    return body


def start_live(tmp_path: Path, settings: ServerSettings | None = None) -> Live:
    db = tmp_path / "server.db"
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(POLICY)
    keys: dict[str, str] = {}
    store = SQLiteStore(db)
    try:
        for tenant in TENANTS:
            for role in ROLES:
                keys[f"{tenant}:{role}"] = store.create_api_key(tenant, role, f"{tenant}-{role}")[1]
    finally:
        store.close()
    server = BackgroundServer(db, policy=policy_path, settings=settings).start()
    return Live(server, keys, policy_path)


@pytest.fixture
def live_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers (each with its own store folder and settings); all are stopped after the test."""
    started: list[Live] = []

    def make(settings: ServerSettings | None = None, name: str = "srv") -> Live:
        folder = tmp_path / f"{name}-{len(started)}"
        folder.mkdir()
        found = start_live(folder, settings)
        started.append(found)
        return found

    yield make
    from thoth_nb import _runtime

    _runtime.flush(timeout=5.0)  # deliver what the SDK queued while the servers are still up
    for found in started:
        for client in found.clients:
            client.close()
        found.server.stop()


@pytest.fixture
def live(live_factory: Any) -> Live:
    found: Live = live_factory()
    return found


@pytest.fixture
def verify() -> Any:
    """`verify(db)`: assert that the store's hash chains verify end to end."""
    return verified


@pytest.fixture
def body() -> Any:
    """`body(tenant="acme", **fields)`: a valid PROTOCOL §3.1 enforce request."""
    return enforce_body


@pytest.fixture
def policy_yaml() -> str:
    """The servers' test policy: transfers over 100 step up, drop_table is a hard block."""
    return POLICY
