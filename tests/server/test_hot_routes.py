"""ThothApp answers /v1/enforce, /v1/events/batch and hold polls straight from `__call__`; with any
middleware added they take FastAPI's way. Both ways must answer the same, and the OpenAPI document
must describe the routes as they are called."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from thoth_nb.engine.policy import parse_policy
from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server.app import ServerSettings, ThothApp, create_app

POLICY = {"version": 1, "default": "allow",
          "rules": [{"id": "no-drop", "tool": "drop_table", "decision": "block", "reason": "no"}]}


def _enforce(tool: str = "lookup") -> dict[str, Any]:
    return {"agent_id": "a", "tenant_id": "acme", "tool_name": tool, "session_id": "s1",
            "approved_scope": ["lookup", "drop_table"], "enforcement_mode": "block", "tool_args": {"q": 1}}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ThothApp]:
    store = SQLiteStore(tmp_path / "server.db")
    found = create_app(store, parse_policy(POLICY), ServerSettings(ingest_child=False))
    yield found
    store.close()


def _answers(client: TestClient, key: str) -> list[tuple[int, Any]]:
    auth = {"Authorization": f"Bearer {key}"}
    out = []
    for method, path, body in (
        ("POST", "/v1/enforce", _enforce()),
        ("POST", "/v1/enforce", _enforce("drop_table")),
        ("POST", "/v1/enforce", {"agent_id": "a"}),
        ("POST", "/v1/events/batch", [{"event_id": "e1", "session_id": "s1", "event_type": "TOOL_CALL_PRE"}]),
        ("POST", "/v1/events/batch", {"events": "nope"}),
        ("GET", "/v1/enforce/hold/no-such-hold", None),
    ):
        answer = client.request(method, path, json=body, headers=auth)
        data = answer.json()
        if isinstance(data, dict):
            data.pop("violation_id", None)
            data.pop("enforcement_trace_id", None)
        out.append((answer.status_code, data))
    unauthorised = client.post("/v1/enforce", json=_enforce())
    out.append((unauthorised.status_code, unauthorised.json()))
    return out


def test_the_direct_way_and_the_middleware_way_answer_the_same(tmp_path: Path, app: ThothApp) -> None:
    seen: list[str] = []

    class Tag(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Response:
            seen.append(request.url.path)
            response: Response = await call_next(request)
            return response

    _, key = app.state.thoth.store.create_api_key("acme", "admin", "k")
    with TestClient(app) as client:
        direct = _answers(client, key)
    assert seen == []
    store2 = SQLiteStore(tmp_path / "other.db")
    other = create_app(store2, parse_policy(POLICY), ServerSettings(ingest_child=False))
    other.add_middleware(Tag)
    _, key2 = store2.create_api_key("acme", "admin", "k")
    with TestClient(other) as client:
        through = _answers(client, key2)
    store2.close()
    assert "/v1/enforce" in seen and "/v1/events/batch" in seen and "/v1/enforce/hold/no-such-hold" in seen
    assert [status for status, _ in direct] == [200, 200, 422, 202, 422, 404, 401]
    # the second batch is a replay in neither store (each server has its own), so the bodies match too
    assert direct == through


def test_openapi_describes_the_ingest_route_by_its_body_and_header(app: ThothApp) -> None:
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    route = doc["paths"]["/v1/events/batch"]["post"]
    assert [p["name"] for p in route.get("parameters", [])] == ["X-Thoth-Event-Ingest-Token"]
    assert "requestBody" in route
    enforce = doc["paths"]["/v1/enforce"]["post"]
    assert enforce.get("parameters", []) == [] and "requestBody" in enforce


def test_an_unexpected_error_is_a_500_with_a_protocol_body(app: ThothApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = app.state.thoth.store.create_api_key("acme", "admin", "k")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.thoth.engine, "decide", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v1/enforce", json=_enforce(), headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal", "message": "internal error: RuntimeError"}
