"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis) on loopback: no 5xx for anything it
generates, and a rejected request (4xx) changes no stored data. Bounded: a few examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _faults import POLICY

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from thoth_nb.server import BackgroundServer  # noqa: E402

pytestmark = pytest.mark.timeout(180)

EXAMPLES_PER_OPERATION = 12
TABLES = ("events", "violations", "holds", "grants", "api_keys", "policies", "tool_inventory")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    srv = BackgroundServer(tmp_path / "server.db", policy=tmp_path / "policy.yaml").start()
    try:
        yield srv
    finally:
        srv.stop()


def _fingerprint(srv: BackgroundServer) -> dict[str, Any]:
    """Row counts and a digest of the mutable columns: what a rejected request must leave alone."""
    assert srv.store is not None
    out: dict[str, Any] = {}
    for table in TABLES:
        out[table] = srv.store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
    out["holds"] = [tuple(r.values()) for r in srv.store.query("SELECT hold_token, status FROM holds ORDER BY 1")]
    out["keys"] = [tuple(r.values()) for r in srv.store.query("SELECT key_id, revoked_at FROM api_keys ORDER BY 1")]
    return out


def test_no_generated_request_gets_a_server_error(server: BackgroundServer) -> None:
    assert server.store is not None
    _, admin = server.store.create_api_key("acme", "admin")
    _, agent = server.store.create_api_key("acme", "agent")
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    calls = 0
    statuses: dict[int, int] = {}

    for operation in operations:
        strategy = operation.as_strategy()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            nonlocal calls
            headers = {k: v for k, v in (case.headers or {}).items()
                       if k.lower() not in ("authorization", "x-api-key")}
            case.headers = headers
            key = agent if case.operation.path.startswith(("/v1/enforce", "/v1/events/batch")) else admin
            before = _fingerprint(server)
            response = case.call(base_url=server.url, headers={"x-api-key": key}, timeout=10)
            calls += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            label = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{label}: {response.text[:200]}")
            elif 400 <= response.status_code < 500 and _fingerprint(server) != before:
                failures.append(f"{label}: a rejected request changed stored data")

        run()
    assert calls >= len(operations)
    assert sum(n for status, n in statuses.items() if status < 300) >= len(operations), statuses  # not all refused
    assert not failures, "\n".join(failures[:20])
