"""A forged cursor is a 422 naming `cursor` on every list, however large the position it claims."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest


def _cursor(kind: str, position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, position]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", [2**63 - 1, 2**63, 2**62 + 1, True])
@pytest.mark.parametrize("kind", ["events", "sessions", "violations", "approvals"])
def test_a_cursor_past_any_issued_position_is_a_422(live: Any, kind: str, position: Any) -> None:
    c = live.client("acme", "reviewer")
    reply = c.get(f"/v1/{kind}", params={"cursor": _cursor(kind, position)})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == "cursor" and "cursor" in reply.json()["message"]
