"""PROTOCOL §2: a request naming two different keys is a 401, also when one key header is sent twice
(a proxy in front may read the other copy than the server does)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
def test_a_key_header_repeated_with_different_keys_is_a_401(live: Any, header: str) -> None:
    acme, globex = live.key("acme", "admin"), live.key("globex", "admin")
    prefix = "Bearer " if header == "Authorization" else ""
    with httpx.Client(base_url=live.url, trust_env=False, timeout=10.0) as c:
        for first, second in ((acme, globex), (globex, acme)):
            reply = c.get("/v1/events", headers=[(header, prefix + first), (header, prefix + second)])
            assert reply.status_code == 401, reply.text
            assert reply.json()["error"] == "unauthorized" and "different keys" in reply.json()["message"]
        # the same key twice is one key, and still works
        same = c.get("/v1/events", headers=[(header, prefix + acme), (header, prefix + acme)])
        assert same.status_code == 200, same.text
