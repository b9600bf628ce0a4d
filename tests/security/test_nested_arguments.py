"""A `"*"` condition sees a value however deep it is hidden in the arguments, up to MAX_DECIDE_DEPTH; deeper
arguments cannot be checked and are blocked (D3), embedded and through a real server. Before this, a value
seven levels down slipped past a block rule (the walk stopped at depth 6, the HTTP body was cut at 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation
from thoth_nb._models import MAX_DECIDE_DEPTH

POLICY = """
version: 1
rules:
  - {id: no-etc, tool: read, when: {"*": {regex: "^/etc/"}}, decision: block, reason: system files stay closed}
"""

ran: list[dict[str, Any]] = []


def read(**kwargs: Any) -> str:
    ran.append(kwargs)
    return "ok"


def write(**kwargs: Any) -> str:
    ran.append(kwargs)
    return "ok"


def nest(value: Any, levels: int) -> Any:
    for index in range(levels):
        value = {f"k{index}": value} if index % 2 else [value]
    return value


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def _governed(tmp_path: Path, **extra: Any) -> tuple[Any, Any]:
    options = {"agent_id": "a", "tenant_id": "t", "approved_scope": ["read", "write"], **extra}
    if "api_url" not in extra:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        options["policy"] = str(policy)
    return thoth_nb.governed(**options)(read), thoth_nb.governed(**options)(write)


def _check(governed_read: Any, governed_write: Any) -> None:
    for levels in (1, 7, 12, MAX_DECIDE_DEPTH - 1):  # found at any depth the policy inspects
        with pytest.raises(ThothPolicyViolation, match="system files stay closed"):
            governed_read(a=nest("/etc/passwd", levels))
        assert governed_read(a=nest("/home/me/notes", levels)) == "ok"
    with pytest.raises(ThothPolicyViolation, match="nest deeper than"):  # too deep to inspect: blocked
        governed_read(a=nest("/etc/passwd", MAX_DECIDE_DEPTH + 8))
    with pytest.raises(ThothPolicyViolation, match="nest deeper than"):  # even an innocent value
        governed_read(a=nest("/home/me/notes", MAX_DECIDE_DEPTH + 8))
    # a tool with no "*" rule is not inspected, so its deep arguments are nobody's business
    assert governed_write(a=nest("/home/me/notes", MAX_DECIDE_DEPTH + 8)) == "ok"
    assert not any("/etc/passwd" in repr(kwargs) for kwargs in ran)


def test_embedded_engine_sees_deep_values_and_blocks_deeper(tmp_path: Path) -> None:
    _check(*_governed(tmp_path))


def test_server_sees_what_the_sdk_sends_at_any_depth(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server import BackgroundServer

    policy = tmp_path / "server-policy.yaml"
    policy.write_text(POLICY)
    store = SQLiteStore(tmp_path / "server.db")
    try:
        key = store.create_api_key("t", "agent", "agent")[1]
    finally:
        store.close()
    server = BackgroundServer(tmp_path / "server.db", policy=policy).start()
    try:
        _check(*_governed(tmp_path, api_url=server.url, api_key=key))
        thoth_nb.flush(timeout=5.0)
    finally:
        server.stop()


def test_the_explanation_says_why_deep_arguments_were_blocked(tmp_path: Path) -> None:
    governed_read, _ = _governed(tmp_path)
    with pytest.raises(ThothPolicyViolation) as caught:
        governed_read(a=nest("/home/me/notes", MAX_DECIDE_DEPTH + 8))
    explained = caught.value.explain()
    assert explained is not None
    assert explained["decided_by"]["kind"] == "arguments_depth"
    assert f"nested at most {MAX_DECIDE_DEPTH} levels" in explained["would_pass"][0]["alternatives"][0]


def test_a_container_that_contains_itself_is_checked_not_blocked(tmp_path: Path) -> None:
    governed_read, _ = _governed(tmp_path)
    loop: dict[str, Any] = {"note": "fine"}
    loop["self"] = loop
    assert governed_read(a=loop) == "ok"
    loop["path"] = [loop, "/etc/passwd"]  # the secret beside the cycle is still found
    with pytest.raises(ThothPolicyViolation, match="system files stay closed"):
        governed_read(a=loop)
