"""`--no-auth` is safe only if nothing but this machine can reach it: a web page the user opens must not
write to it across sites (a text/plain POST needs no CORS answer) nor read it by DNS rebinding."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from thoth_nb.server import ServerSettings

EVENT = b'[{"event_id": "x", "session_id": "s", "event_type": "TOOL_CALL_PRE"}]'


@pytest.fixture
def local(live_factory: Any) -> Any:
    return live_factory(ServerSettings(no_auth=True, local_tenant="local"))


def test_a_cross_site_page_cannot_write(local: Any) -> None:
    with httpx.Client(base_url=local.url, trust_env=False, timeout=10.0) as c:
        for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example"):
            reply = c.post("/v1/events/batch", content=EVENT,
                           headers={"Content-Type": "text/plain", "Origin": origin})
            assert reply.status_code == 403, (origin, reply.text)
            assert reply.json()["error"] == "forbidden" and "Origin" in reply.json()["message"]
        assert c.get("/v1/events").json()["items"] == []
        # the reviewer page served by the server itself (and tools sending no Origin) still work
        port = local.url.rsplit(":", 1)[1]
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            event = [{"event_id": str(uuid.uuid4()), "session_id": "s", "event_type": "TOOL_CALL_PRE"}]
            assert c.post("/v1/events/batch", json=event, headers={"Origin": origin}).status_code == 202


def test_a_rebound_dns_name_cannot_read(local: Any) -> None:
    port = local.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=local.url, trust_env=False, timeout=10.0) as c:
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
            reply = c.get("/v1/approvals", headers={"Host": host})
            assert reply.status_code == 403, (host, reply.text)
            assert "loopback" in reply.json()["message"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "[::1]:80"):
            assert c.get("/v1/approvals", headers={"Host": host}).status_code == 200, host


def test_with_keys_the_host_and_origin_are_not_the_guard(live: Any) -> None:
    c = live.client("acme", "reviewer")
    headers = {"Host": "thoth.example.com", "Origin": "https://x.example"}
    assert c.get("/v1/approvals", headers=headers).status_code == 200
