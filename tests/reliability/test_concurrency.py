"""Many threads and asyncio tasks governing calls at once through a real server, and a process fork
after import whose child governs calls through the embedded engine."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _faults import POLICY, SCOPE

import thoth_nb
from thoth_nb import ThothPolicyViolation

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Any, str, str]]:
    pytest.importorskip("fastapi")
    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server import BackgroundServer

    db = tmp_path / "server.db"
    (tmp_path / "policy.yaml").write_text(POLICY)
    store = SQLiteStore(db)
    agent_key = store.create_api_key("acme", "agent")[1]
    reviewer_key = store.create_api_key("acme", "reviewer")[1]
    store.close()
    srv = BackgroundServer(db, policy=tmp_path / "policy.yaml").start()
    try:
        yield srv, agent_key, reviewer_key
    finally:
        thoth_nb.flush(timeout=10)
        srv.stop()


def _stored(srv: Any, reviewer_key: str, session: str) -> list[dict[str, Any]]:
    import httpx

    out: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=srv.url, headers={"x-api-key": reviewer_key}, trust_env=False) as client:
        while True:
            params: dict[str, Any] = {"session_id": session, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/events", params=params).json()
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def test_threads_and_tasks_through_the_server(server: tuple[Any, str, str]) -> None:
    srv, agent_key, reviewer_key = server
    session = str(uuid.uuid4())
    cfg: dict[str, Any] = {"api_url": srv.url, "api_key": agent_key, "agent_id": "agent-1", "tenant_id": "acme",
                           "approved_scope": [*SCOPE, "alookup"], "session_id": session, "tool_inventory": False}
    ran: Counter[str] = Counter()
    lock = threading.Lock()

    def lookup(q: str) -> str:
        with lock:
            ran["lookup"] += 1
        return q

    def drop_table(name: str) -> str:
        with lock:
            ran["drop_table"] += 1
        return name

    async def alookup(q: str) -> str:
        await asyncio.sleep(0)
        with lock:
            ran["alookup"] += 1
        return q

    tools = thoth_nb.instrument([lookup, drop_table, alookup], **cfg)
    errors: list[BaseException] = []
    wrong: list[str] = []
    blocked = Counter[str]()
    threads_n, calls_n, loops_n, tasks_n = 8, 40, 3, 60

    def worker(n: int) -> None:
        try:
            for i in range(calls_n):
                if i % 8 == 0:
                    try:
                        tools[1](f"t{n}-{i}")
                        wrong.append(f"drop_table ran in thread {n}")
                    except ThothPolicyViolation:
                        with lock:
                            blocked["sync"] += 1
                elif tools[0](f"q{n}-{i}") != f"q{n}-{i}":
                    wrong.append(f"lookup {n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    def loop_worker(n: int) -> None:
        """Each thread runs its own event loop: tasks of several loops share one transport."""
        async def many() -> list[Any]:
            return await asyncio.gather(*(tools[2](f"a{n}-{i}") for i in range(tasks_n)), return_exceptions=True)

        try:
            results = asyncio.run(many())
            bad = [r for r in results if isinstance(r, BaseException)]
            errors.extend(bad)
            if [r for r in results if not isinstance(r, BaseException)] != [f"a{n}-{i}" for i in range(tasks_n)]:
                wrong.append(f"async results of loop {n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    threads += [threading.Thread(target=loop_worker, args=(n,)) for n in range(loops_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    gc.collect()  # a loop that ended with its connections still open shows up here as an unclosed socket
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]
    blocks = threads_n * (calls_n // 8)
    assert blocked["sync"] == blocks and ran["drop_table"] == 0
    assert ran["lookup"] == threads_n * calls_n - blocks and ran["alookup"] == loops_n * tasks_n

    assert thoth_nb.flush(timeout=60)
    events = _stored(srv, reviewer_key, session)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    counts = Counter(e["event_type"] for e in events)
    total = threads_n * calls_n + loops_n * tasks_n
    assert counts == {"TOOL_CALL_PRE": total, "TOOL_CALL_POST": total - blocks, "TOOL_CALL_BLOCK": blocks}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_after_import_child_governs_through_the_embedded_engine(tmp_path: Path) -> None:
    """The parent has the store open and its emitter thread busy when it forks; the child's governed calls
    are decided by the embedded engine and its events land in the same store; the parent carries on."""
    from thoth_nb._runtime import local_store

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    cfg: dict[str, Any] = {"agent_id": "agent-1", "tenant_id": "local", "approved_scope": SCOPE,
                           "policy": str(policy)}

    def lookup(q: str) -> str:
        return q

    def drop_table(name: str) -> str:
        return name

    tools = thoth_nb.instrument([lookup, drop_table], **cfg)
    for i in range(300):  # the emitter thread is writing while we fork
        tools[0](f"parent-{i}")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child; reported through the exit code
        code = 1
        try:
            child_tools = thoth_nb.instrument([lookup, drop_table], **cfg, session_id="child-session")
            ok = all(child_tools[0](f"c{i}") == f"c{i}" for i in range(50))
            try:
                child_tools[1]("users")
                ok = False
            except ThothPolicyViolation:
                pass
            ok = ok and all(tools[0](f"old-{i}") == f"old-{i}" for i in range(10))  # tools wrapped pre-fork
            ok = ok and thoth_nb.flush(timeout=20)
            code = 0 if ok else 3
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 2
        finally:
            os._exit(code)
    done = threading.Event()
    status: list[int] = []

    def wait() -> None:
        status.append(os.waitpid(pid, 0)[1])
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    for i in range(100):  # the parent keeps governing while the child runs
        tools[0](f"parent-late-{i}")
    if not done.wait(60):
        os.kill(pid, 9)
        pytest.fail("the forked child hung (a lock or connection inherited across fork?)")
    assert os.waitstatus_to_exitcode(status[0]) == 0
    assert thoth_nb.flush(timeout=20)
    store = local_store()
    child = store.events("local", session_id="child-session")
    counts = Counter(e["event_type"] for e in child)
    assert counts == {"TOOL_CALL_PRE": 51, "TOOL_CALL_POST": 50, "TOOL_CALL_BLOCK": 1}
    everything = store.events("local")
    assert len({e["event_id"] for e in everything}) == len(everything) == 2 * (300 + 100 + 10) + 102


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_another_thread_is_inside_the_store(tmp_path: Path) -> None:
    """multiprocessing's default start method on Linux forks: a fork that lands while another thread is inside
    a store transaction must not leave the child waiting forever on a lock no thread will release. SQLite's
    own per-process lock state is copied mid-transaction too, so that child cannot write this store: its
    decisions that must be recorded fail closed after the busy timeout (documented degradation), never hang,
    and the parent is unaffected."""
    from thoth_nb._runtime import local_store

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    cfg: dict[str, Any] = {"agent_id": "agent-1", "tenant_id": "local", "approved_scope": SCOPE,
                           "policy": str(policy)}

    def drop_table(name: str) -> str:
        return name

    def lookup(q: str) -> str:
        return q

    tools = thoth_nb.instrument([drop_table, lookup], **cfg)
    with pytest.raises(ThothPolicyViolation):
        tools[0]("warm-up")  # the store is open and has written
    store = local_store()
    inside, release = threading.Event(), threading.Event()

    def busy() -> None:
        with store.transaction():
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=busy)
    holder.start()
    assert inside.wait(5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = 0 if tools[1]("q") == "q" else 5  # ALLOW records nothing: unaffected
            try:
                tools[0]("users")  # a BLOCK writes its violation
                code = 3
            except ThothPolicyViolation:
                pass
        finally:
            os._exit(code)
    release.set()
    holder.join(5)
    for _ in range(300):  # up to 30 s; the child needs one busy timeout (5 s)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on a store lock it inherited from the fork")
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(ThothPolicyViolation, match="forbidden"):
        tools[0]("parent-after")  # the parent still decides and records
    assert thoth_nb.flush(timeout=10)
    assert len([e for e in store.events("local") if e["event_type"] == "TOOL_CALL_BLOCK"]) == 2
