"""DataFrames and `%thoth explain` against a real `thoth-nb serve` on 127.0.0.1 (PROTOCOL §11), the same
calls read back from the server as from the embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import thoth_nb  # noqa: E402
from thoth_nb.engine.store import SQLiteStore  # noqa: E402
from thoth_nb.server import BackgroundServer  # noqa: E402

POLICY = """version: 1
default: allow
rules:
  - {id: no-etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, reason: system file}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = tmp_path / "server.db"
    store = SQLiteStore(db)
    try:
        key = store.create_api_key("acme", "admin", "notebook")[1]
    finally:
        store.close()
    running = BackgroundServer(db, policy=policy).start()
    try:
        yield running.url, key
    finally:
        from thoth_nb import _runtime

        _runtime.flush(timeout=5.0)
        running.stop()


def test_frames_and_explain_from_a_live_server(server: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, key = server

    def read_file(path: str) -> str:
        return f"<{path}>"

    def delete_file(path: str) -> str:
        return "deleted"

    tools = thoth_nb.wrap_openai_tools({"read_file": read_file, "delete_file": delete_file}, agent_id="remote",
                                       tenant_id="acme", user_id="alice", approved_scope=["read_file"],
                                       api_url=url, api_key=key, session_id="s-remote")
    tools["read_file"](path="/srv/a")
    blocked = []
    for name, path in (("read_file", "/etc/passwd"), ("delete_file", "/x")):
        with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
            tools[name](path=path)
        blocked.append(info.value.violation_id)
    assert thoth_nb.flush(timeout=10)

    events = thoth_nb.events(api_url=url, api_key=key, tenant_id="acme")
    assert events["event_type"].tolist() == ["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK",
                                             "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]
    assert str(events["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert events["tool_args"].iloc[3] == {"path": "/etc/passwd"}
    assert events.thoth.decision_counts().to_dict() == {"ALLOW": 1, "BLOCK": 2}
    assert len(thoth_nb.events(api_url=url, api_key=key, tenant_id="acme", tool_name="delete_file")) == 2

    violations = thoth_nb.violations(api_url=url, api_key=key, tenant_id="acme")
    assert sorted(violations["violation_id"]) == sorted(blocked)
    sessions = thoth_nb.sessions(api_url=url, api_key=key, tenant_id="acme")
    assert sessions["session_id"].tolist() == ["s-remote"] and sessions["blocked"].tolist() == [2]
    assert thoth_nb.approvals(api_url=url, api_key=key, tenant_id="acme").empty

    from thoth_nb.notebook.magics import _explain_remote

    monkeypatch.setenv("THOTH_API_KEY", key)
    answer: dict[str, Any] = _explain_remote(url, "acme", blocked[0])
    assert "system file" in answer["why_it_was_blocked"]
