"""DataFrames from the embedded store and from a server (§11, httpx.MockTransport): dtypes, filters,
lazy tool arguments, and the `df.thoth` accessor on known data."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pd = pytest.importorskip("pandas")

import thoth_nb  # noqa: E402
from thoth_nb.analytics import frames  # noqa: E402

POLICY = """version: 1
default: allow
rules:
  - {id: no-etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, reason: system file}
"""


def _tool(name: str) -> Any:
    def tool(**kwargs: Any) -> str:
        return f"{name} ok"

    tool.__name__ = name
    return tool


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, Any]:
    """alice/research: 3 searches, 1 read, 2 blocked deletes (scope), 1 blocked read (rule);
    bob/support: 2 reads allowed, 1 blocked delete."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    common = {"tenant_id": "acme", "policy": str(policy), "enforcement": "block"}
    names = ["web_search", "read_file", "delete_file"]
    alice = thoth_nb.wrap_openai_tools({n: _tool(n) for n in names}, agent_id="research", user_id="alice",
                                       approved_scope=["web_search", "read_file"], session_id="s-alice", **common)
    bob = thoth_nb.wrap_openai_tools({n: _tool(n) for n in names}, agent_id="support", user_id="bob",
                                     approved_scope=["read_file"], session_id="s-bob", **common)
    for query in ("a", "b", "c"):
        alice["web_search"](query=query)
    alice["read_file"](path="/home/a.txt")
    blocked: list[str] = []
    for fn, kwargs in ((alice["delete_file"], {"path": "/x"}), (alice["delete_file"], {"path": "/y"}),
                       (alice["read_file"], {"path": "/etc/passwd"}), (bob["delete_file"], {"path": "/z"})):
        with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
            fn(**kwargs)
        blocked.append(str(info.value.violation_id))
    bob["read_file"](path="/srv/1")
    bob["read_file"](path="/srv/2")
    thoth_nb.flush()
    return {"violations": blocked}


def test_events_dtypes_and_values(recorded: dict[str, Any]) -> None:
    df = thoth_nb.events(tenant_id="acme")
    assert len(df) == 2 * 10
    assert str(df["occurred_at"].dtype) == "datetime64[us, UTC]"
    for column in ("agent_id", "user_id", "session_id", "tool_name", "event_type", "decision", "outcome"):
        assert isinstance(df[column].dtype, pd.CategoricalDtype), column
    assert df["seq"].dtype == "int64"
    assert df["risk_score"].dtype == "float64" and df["duration_ms"].dtype == "float64"
    assert df["occurred_at"].is_monotonic_increasing
    first = df.iloc[0]
    assert first["tool_args"] == {"query": "a"} and first["event_type"] == "TOOL_CALL_PRE"
    assert pd.isna(first["decision"])
    blocks = df[df["event_type"] == "TOOL_CALL_BLOCK"]
    assert sorted(blocks["violation_id"]) == sorted(recorded["violations"])
    assert set(blocks["decision"]) == {"BLOCK"}
    assert df.attrs["thoth"]["tool_args"] is True


def test_event_filters(recorded: dict[str, Any]) -> None:
    assert set(thoth_nb.events(tenant_id="acme", agent_id="support")["user_id"]) == {"bob"}
    assert len(thoth_nb.events(tenant_id="acme", tool_name="web_search")) == 6
    assert len(thoth_nb.events(tenant_id="acme", session_id="s-bob", event_type="TOOL_CALL_POST")) == 2
    assert len(thoth_nb.events(tenant_id="acme", limit=5)) == 5
    assert len(thoth_nb.events(tenant_id="acme", since="1h")) == 20
    assert len(thoth_nb.events(tenant_id="acme", until="2000-01-01T00:00:00Z")) == 0
    assert len(thoth_nb.events(tenant_id="other")) == 0  # tenants never mix
    with pytest.raises(ValueError, match="cannot read the time"):
        thoth_nb.events(tenant_id="acme", since="yesterday-ish")


def test_lazy_tool_args(recorded: dict[str, Any]) -> None:
    lean = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert "tool_args" not in lean.columns and lean.attrs["thoth"]["tool_args"] is False
    subset = lean[lean["tool_name"] == "read_file"]
    full = subset.thoth.with_args()
    assert full["tool_args"].tolist()[:2] == [{"path": "/home/a.txt"}, {"path": "/home/a.txt"}]
    assert full.index.equals(subset.index)
    blocked = full[full["event_type"] == "TOOL_CALL_BLOCK"]
    assert blocked["reason"].tolist() == ["system file"]
    assert full.thoth.with_args() is full  # already loaded


def _adbc_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Opt in to ADBC for a store this process has closed; record each ADBC read."""
    pytest.importorskip("adbc_driver_sqlite")
    from thoth_nb import _runtime

    thoth_nb.flush()
    path = _runtime.local_store().path
    _runtime.reset()  # ADBC is only used for a store file no sqlite3 connection here holds open
    monkeypatch.setenv("THOTH_ADBC", "1")
    from thoth_nb.analytics import _arrow_reader

    used: list[str] = []
    real = _arrow_reader._query

    def spy(conn: Any, sql: str, params: Any) -> Any:
        used.append(sql)
        return real(conn, sql, params)

    monkeypatch.setattr(_arrow_reader, "_query", spy)
    monkeypatch.setattr(frames, "_STORE_FILE", path, raising=False)
    return used


def test_sqlite3_fallback_matches_adbc(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    used = _adbc_only(monkeypatch)
    fast = frames.events(tenant_id="acme", store=frames._STORE_FILE)  # a file path: an analysis process
    assert used, "the ADBC path did not run"
    monkeypatch.setenv("THOTH_ADBC", "0")
    slow = frames.events(tenant_id="acme", store=frames._STORE_FILE)
    assert len(used) == 1
    pd.testing.assert_frame_equal(fast, slow, check_categorical=False)


def test_parallel_read_path_keeps_order(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    used = _adbc_only(monkeypatch)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)  # split even this small store across workers
    df = frames.events(tenant_id="acme", store=frames._STORE_FILE)
    assert len(used) >= 2 and df["seq"].is_monotonic_increasing and len(df) == 20


def test_reading_while_governing_never_breaks_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a second SQLite library (ADBC) closing its connection dropped this process's locks."""
    monkeypatch.setenv("THOTH_ADBC", "1")

    @thoth_nb.governed(agent_id="a", tenant_id="t", approved_scope=["search"])
    def search(q: str) -> str:
        return q

    for round_ in range(3):
        for i in range(20):
            search(f"{round_}-{i}")
        assert thoth_nb.flush()
        assert len(thoth_nb.events(tenant_id="t")) == 40 * (round_ + 1)


def test_accessor_on_known_data(recorded: dict[str, Any]) -> None:
    df = thoth_nb.events(tenant_id="acme")
    counts = df.thoth.decision_counts()
    assert counts.to_dict() == {"ALLOW": 6, "BLOCK": 4}
    by_agent = df.thoth.decision_counts(by="agent_id")
    assert by_agent.loc["research", "BLOCK"] == 3 and by_agent.loc["support", "ALLOW"] == 2
    top = df.thoth.top_blocked_tools(2)
    assert top.to_dict() == {"delete_file": 3, "read_file": 1}
    users = df.thoth.calls_by_user()
    assert users.loc["alice"].to_dict() == {"calls": 7, "allowed": 4, "blocked": 3, "sessions": 1, "tools": 3}
    assert users.loc["bob"].to_dict() == {"calls": 3, "allowed": 2, "blocked": 1, "sessions": 1, "tools": 2}
    timeline = df.thoth.timeline("s-bob")
    assert timeline["tool_name"].tolist() == ["delete_file"] * 2 + ["read_file"] * 4
    assert timeline["elapsed"].iloc[0] == pd.Timedelta(0) and timeline["elapsed"].is_monotonic_increasing
    with pytest.raises(ValueError, match="2 sessions"):
        df.thoth.timeline()
    with pytest.raises(AttributeError, match="needs the column"):
        pd.DataFrame({"x": [1]}).thoth.decision_counts()


def test_sessions_violations_approvals(recorded: dict[str, Any]) -> None:
    sessions = thoth_nb.sessions(tenant_id="acme")
    assert set(sessions["session_id"]) == {"s-alice", "s-bob"}
    alice = sessions.set_index("session_id").loc["s-alice"]
    assert alice["tool_calls"] == 7 and alice["blocked"] == 3 and alice["violations"] == 3
    assert str(sessions["first_seen"].dtype) == "datetime64[us, UTC]"
    assert sessions["duration"].dtype.kind == "m"
    violations = thoth_nb.violations(tenant_id="acme")
    assert len(violations) == 4 and isinstance(violations["tool_name"].dtype, pd.CategoricalDtype)
    assert str(violations["created_at"].dtype) == "datetime64[us, UTC]"
    assert {"path": "/etc/passwd"} in violations["tool_args"].tolist()
    assert violations.thoth.top_blocked_tools().to_dict() == {"delete_file": 3, "read_file": 1}
    assert len(thoth_nb.violations(tenant_id="acme", tool_name="read_file")) == 1
    approvals = thoth_nb.approvals(tenant_id="acme")
    assert len(approvals) == 0 and str(approvals["created_at"].dtype) == "datetime64[us, UTC]"


def test_pandas_is_imported_lazily() -> None:
    import subprocess
    import sys

    code = "import sys, thoth_nb; assert 'pandas' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


# --- from a server (PROTOCOL §11) ---------------------------------------------------------------


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"acme:{i}", "seq": i, "tenant_id": "acme", "session_id": "s1", "agent_id": "research",
            "user_id": "alice", "tool_name": "web_search", "event_type": "TOOL_CALL_POST",
            "occurred_at": f"2026-03-01T10:00:0{i}.000000Z",
            "metadata": {"authorization_decision": "ALLOW", "tool_args": {"query": f"q{i}"}, "duration_ms": 1.5,
                         "risk_score": 0.0, "reason": "ok", "outcome": "ok"}, **extra}


def test_events_from_a_server_follow_cursors() -> None:
    seen: list[httpx.Request] = []
    pages = {None: ([_event(1), _event(2)], "c2"), "c2": ([_event(3)], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.url.path == "/v1/events"
        items, cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": items, "next_cursor": cursor})

    df = thoth_nb.events(api_url="http://enforcer.test", api_key="k1", tenant_id="acme", agent_id="research",
                         transport=httpx.MockTransport(handler))
    assert df["tool_args"].tolist() == [{"query": "q1"}, {"query": "q2"}, {"query": "q3"}]
    assert str(df["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert isinstance(df["decision"].dtype, pd.CategoricalDtype)
    assert seen[0].headers["authorization"] == "Bearer k1"
    assert seen[0].url.params["agent_id"] == "research" and seen[0].url.params["tenant_id"] == "acme"
    assert seen[1].url.params["cursor"] == "c2"
    assert df.thoth.decision_counts().to_dict() == {"ALLOW": 3}


def test_server_limit_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/violations":
            return httpx.Response(403, json={"error": "forbidden", "message": "reviewer role needed"})
        limit = int(request.url.params["limit"])
        return httpx.Response(200, json={"items": [_event(i) for i in range(limit)], "next_cursor": "more"})

    transport = httpx.MockTransport(handler)
    assert len(thoth_nb.events(api_url="http://s.test", tenant_id="acme", limit=3, transport=transport)) == 3
    with pytest.raises(thoth_nb.ThothConfigError, match="reviewer role needed"):
        thoth_nb.violations(api_url="http://s.test", tenant_id="acme", transport=transport)


def test_sessions_and_approvals_from_a_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sessions":
            return httpx.Response(200, json={"items": [{
                "session_id": "s1", "agent_id": "research", "user_id": "alice", "first_seen": "2026-03-01T10:00:00Z",
                "last_seen": "2026-03-01T10:05:00Z", "tool_calls": 4, "blocked": 1, "stepped_up": 1,
                "violations": 2}], "next_cursor": None})
        assert request.url.params["status"] == "pending"
        return httpx.Response(200, content=json.dumps({"items": [{
            "approval_id": "apr_1", "hold_token": "h1", "status": "pending", "created_at": "2026-03-01T10:01:00Z",
            "expires_at": "2026-03-01T10:16:00Z", "session_id": "s1", "tool_name": "send_email",
            "tool_args": {"to": "x@y"}, "reason": "needs a human", "reviewer": None, "note": None,
            "resolved_at": None}]}))

    transport = httpx.MockTransport(handler)
    sessions = thoth_nb.sessions(api_url="http://s.test", tenant_id="acme", transport=transport)
    assert sessions["duration"].iloc[0] == pd.Timedelta(minutes=5)
    approvals = thoth_nb.approvals("pending", api_url="http://s.test", tenant_id="acme", transport=transport)
    assert approvals["tool_args"].tolist() == [{"to": "x@y"}]
    assert str(approvals["expires_at"].dtype) == "datetime64[us, UTC]"
    assert approvals["resolved_at"].isna().all()


def test_cards_for_violations_and_sessions(recorded: dict[str, Any]) -> None:
    violation = thoth_nb.violations(tenant_id="acme", tool_name="read_file").thoth.card()
    html = violation._repr_html_()
    assert "system file" in html and "#cf222e" in html and "%thoth explain vio_" in html
    assert repr(violation).startswith("BLOCK read_file (vio_")
    sessions = thoth_nb.sessions(tenant_id="acme")
    card = sessions[sessions["session_id"] == "s-alice"].thoth.card()
    assert "7 calls" in card._repr_html_() and "3 blocked" in card._repr_html_()
    assert "session s-alice agent research user alice: 7 calls, 3 blocked" in repr(card)
    with pytest.raises(ValueError, match="card"):
        thoth_nb.events(tenant_id="acme").thoth.card()


def _no_adbc_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ADBC reads anything in this process."""
    from thoth_nb.analytics import _arrow_reader

    def refuse(*_: Any) -> Any:
        raise AssertionError("ADBC read a store in the process that holds it open")

    monkeypatch.setattr(_arrow_reader, "_connect", refuse)  # even opening (and so closing) is the hazard


def test_big_reads_use_a_warm_child_process_and_match(recorded: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A big read of a store this process has open goes through ADBC in a reader child (never here),
    typed like the sqlite3 path, and the child stays up for the next read."""
    pytest.importorskip("adbc_driver_sqlite")
    monkeypatch.setenv("THOTH_FRAME_CACHE", "0")  # the child's reads, not the disk cache's
    slow = thoth_nb.events(tenant_id="acme", tool_args=False)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_ADBC", "1")  # even when asked for, never in-process for an open store
    _no_adbc_here(monkeypatch)
    reads: list[int | None] = []
    real = frames._READER.read

    def spy(*args: Any, **kwargs: Any) -> Any:
        table = real(*args, **kwargs)
        reads.append(frames._READER.pid)
        return table

    monkeypatch.setattr(frames._READER, "read", spy)
    fast = thoth_nb.events(tenant_id="acme", tool_args=False)
    again = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert len(reads) == 2 and reads[0] == reads[1] and reads[0] not in (None, os.getpid())
    pd.testing.assert_frame_equal(fast, slow, check_categorical=False)
    pd.testing.assert_frame_equal(again, slow, check_categorical=False)
    assert str(fast["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert all(isinstance(fast[c].dtype, pd.CategoricalDtype) for c in frames.EVENT_CATEGORIES)
    assert "tool_args" not in fast.columns and fast.thoth.with_args()["tool_args"].iloc[0] == {"query": "a"}
    assert thoth_nb.flush()
    assert len(thoth_nb.events(tenant_id="acme")) == 20  # and the store is still fine afterwards


def test_governing_while_the_child_reads_keeps_the_store_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression guard: big reads between rounds of governed calls (the store open and written here)
    never run ADBC in this process, and every write still lands."""
    pytest.importorskip("adbc_driver_sqlite")
    monkeypatch.setenv("THOTH_ADBC", "1")
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    _no_adbc_here(monkeypatch)

    @thoth_nb.governed(agent_id="a", tenant_id="t", approved_scope=["search"])
    def search(q: str) -> str:
        return q

    for round_ in range(3):
        for i in range(20):
            search(f"{round_}-{i}")
        assert thoth_nb.flush()
        assert len(thoth_nb.events(tenant_id="t", tool_args=False)) == 40 * (round_ + 1)
    assert frames._READER.pid is not None
    from thoth_nb import _runtime

    path = _runtime.local_store().path
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_open_here_sees_any_connection_to_the_file(tmp_path: Path) -> None:
    """A store opened by hand (not through the runtime) still counts as open: no in-process ADBC then."""
    path = tmp_path / "by-hand.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    assert frames._open_here(path)
    db.close()
    assert not frames._open_here(path)


def test_a_failing_reader_child_falls_back_to_sqlite3(recorded: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("adbc_driver_sqlite")
    expected = thoth_nb.events(tenant_id="acme", tool_args=False)
    broken = tmp_path / "broken_reader.py"
    broken.write_text("import sys\nsys.stderr.write('reader cannot start')\nsys.exit(3)\n")
    reader = frames._ReaderProcess(script=broken)
    monkeypatch.setattr(frames, "_READER", reader)
    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    with caplog.at_level("WARNING", logger="thoth_nb"):
        df = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert "fast read failed" in caplog.text and "reader cannot start" in caplog.text
    pd.testing.assert_frame_equal(df, expected, check_categorical=False)
    assert reader.pid is None


def test_reader_connections_are_reused_until_the_file_is_replaced(tmp_path: Path) -> None:
    """The reader child keeps its connections between reads, but a store file replaced at the same path
    (a new inode) is read afresh, not through a connection to the old file."""
    pytest.importorskip("adbc_driver_sqlite")
    from thoth_nb.analytics import _arrow_reader

    def make(path: Path, labels: list[str]) -> None:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, at TEXT, label TEXT)")
            db.executemany("INSERT INTO t (at, label) VALUES ('2026-01-02T03:04:05.000006Z', ?)",
                           [(x,) for x in labels])
        db.close()

    path = tmp_path / "r.db"
    make(path, ["a", "b", "a"])
    connections = _arrow_reader.Connections()
    query = [("SELECT seq, at, label FROM t WHERE seq >= ? ORDER BY seq", [1])]
    try:
        first = _arrow_reader.read(str(path), query, times=["at"], categories=["label"], connections=connections)
        conn = connections.get(str(path), 0)
        again = _arrow_reader.read(str(path), query, times=["at"], categories=["label"], connections=connections)
        assert connections.get(str(path), 0) is conn and again.equals(first)
        assert str(first.schema.field("at").type) == "timestamp[us, tz=UTC]"
        assert first.schema.field("label").type.value_type == "string" and first["label"].to_pylist() == ["a", "b", "a"]
        make(tmp_path / "new.db", ["z"])
        os.replace(tmp_path / "new.db", path)
        replaced = _arrow_reader.read(str(path), query, times=["at"], categories=["label"], connections=connections)
        assert replaced["label"].to_pylist() == ["z"] and connections.get(str(path), 0) is not conn
    finally:
        connections.close()


def test_a_killed_reader_child_is_started_again(recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("adbc_driver_sqlite")
    import signal

    monkeypatch.setattr(frames, "_PARALLEL_FROM", 2)
    monkeypatch.setenv("THOTH_FRAME_CACHE", "0")  # the child's reads, not the disk cache's
    first = thoth_nb.events(tenant_id="acme", tool_args=False)
    pid = frames._READER.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    again = thoth_nb.events(tenant_id="acme", tool_args=False)
    assert frames._READER.pid not in (None, pid)
    pd.testing.assert_frame_equal(again, first)


def test_importing_frames_leaves_pandas_for_the_first_frame(tmp_path: Path) -> None:
    """`thoth_nb.analytics.frames` imports without pandas (a fresh kernel's first `events()` imports
    pandas on a thread while it reads); the frame still has the `.thoth` accessor and the same rows."""
    code = (
        "import sys, thoth_nb\n"
        "from thoth_nb.analytics import frames\n"
        "assert 'pandas' not in sys.modules, 'imported with frames'\n"
        "@thoth_nb.governed(agent_id='a', tenant_id='local', approved_scope=['s'])\n"
        "def s(q):\n    return q\n"
        "s('x'); thoth_nb.flush()\n"
        "df = thoth_nb.events()\n"
        "print(len(df), df.thoth.decision_counts().to_dict())\n"
        "thoth_nb.shutdown()\n"
    )
    env = {**os.environ, "THOTH_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("THOTH_DB", None)
    env.pop("THOTH_API_URL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "2" and "ALLOW" in done.stdout
