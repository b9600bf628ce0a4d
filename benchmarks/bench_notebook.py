"""Numbers for issue 5: what the live feed costs per governed call, and 1,000,000 stored events →
DataFrame with `thoth_nb.events()` beside a bare `pd.read_sql` of the same rows.

    python benchmarks/bench_notebook.py [--db /tmp/thoth-bench-1m.db] [--events 1000000] [--calls 3000]

The store is made once (about a minute) by benchmarks/notebook_data.py and reused.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._core import process_cpu


def feed_cost(calls: int) -> dict[str, float]:
    """ms per governed call without a feed, with the widget feed (throttled), with the text feed."""
    os.environ["THOTH_HOME"] = tempfile.mkdtemp(prefix="thoth-bench-")
    policy = Path(os.environ["THOTH_HOME"]) / "allow.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    import io
    from contextlib import redirect_stdout

    import thoth_nb
    from thoth_nb import _context
    from thoth_nb.notebook import feed as feed_module
    from thoth_nb.notebook.feed import Feed

    class Handle:
        def update(self, *_: Any, **__: Any) -> None:
            pass

    feed_module._ipython_display = lambda *_, **__: Handle()  # no frontend: widget state changes still happen

    def search(query: str) -> str:
        return query

    tool = thoth_nb.instrument(search, agent_id="bench", tenant_id="local", approved_scope=["search"],
                               policy=str(policy))

    def per_call() -> float:
        started = time.perf_counter()
        for i in range(calls):
            tool(f"q{i}")
        return (time.perf_counter() - started) / calls * 1000

    per_call()
    bare = min(per_call() for _ in range(3))
    out = {"bare_ms": bare}
    for mode in ("widget", "text"):
        feed = Feed(mode, enabled=lambda: True, max_rows=lambda: 50, throttle=0.1)
        _context.add_listener(feed)
        feed.pre_run_cell()
        with redirect_stdout(io.StringIO()):
            out[f"{mode}_feed_ms"] = min(per_call() for _ in range(3))
        feed.post_run_cell()
        _context.remove_listener(feed)
    thoth_nb.shutdown()
    return out


def _schema(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT name, coalesce(sql, '') FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return [(str(name), str(sql)) for name, sql in rows]


def ensure_store(db: Path, n: int) -> None:
    """The synthetic store of `n` events at `db`, made (about a minute per million) unless it is there with
    the current schema (a store an older version made, with other indexes, would measure another thing)."""
    if db.exists():
        from thoth_nb.engine.store import SQLiteStore

        with tempfile.TemporaryDirectory() as tmp:
            SQLiteStore(Path(tmp) / "empty.db").close()
            current = _schema(Path(tmp) / "empty.db")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            count = conn.execute("SELECT COUNT(*) FROM events WHERE tenant_id = 'local'").fetchone()[0]
        conn.close()
        if count == n and _schema(db) == current:
            return
        db.unlink()
    from notebook_data import make_store

    started = time.perf_counter()
    make_store(db, n).close()
    print(f"made {n} events in {time.perf_counter() - started:.0f}s", file=sys.stderr)


def ensure_sdk_store(home: Path, n: int) -> dict[str, Any]:
    """A store of `n` events written the way an agent in a notebook writes them, unless `home` holds one:
    governed calls through the SDK (embedded enforcer, emitter, writer child; 4 agents, 3 tools, one
    in six calls blocked), with the frame keeper on as it is by default. Waits for the keeper's last run.
    Returns the store's path, the events, and the seconds it took (0 when it was there already)."""
    import shutil

    os.environ["THOTH_HOME"] = str(home)
    os.environ["THOTH_FRAME_KEEPER"] = "1"
    os.environ.pop("THOTH_DB", None)
    import thoth_nb
    from thoth_nb import _runtime

    path = _runtime.store_path()
    if path.exists():
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            count = conn.execute("SELECT COUNT(*) FROM events WHERE tenant_id = 'local'").fetchone()[0]
        conn.close()
        if count == n:
            return {"path": str(path), "events": count, "made_s": 0.0}
        shutil.rmtree(home)
        home.mkdir(parents=True)
    started = time.perf_counter()
    policy = home / "allow.yaml"  # no rate limit: a million calls in a few minutes would trip it
    policy.write_text("version: 1\ndefault: allow\n")
    def run(number: int) -> list[Any]:  # an agent run: its own session
        tools = []
        for agent in ("research", "support", "billing", "ops"):
            for name in ("web_search", "read_file", "delete_file"):
                def tool(arg: str) -> str:
                    return arg

                tool.__name__ = name
                tools.append(thoth_nb.instrument(tool, agent_id=agent, tenant_id="local", user_id=f"user-{agent}",
                                                 session_id=f"run-{number:05d}-{agent}", policy=str(policy),
                                                 approved_scope=["web_search", "read_file"]))
        return tools

    calls = 0
    while calls * 2 < n:
        if calls % 1000 == 0:
            tools = run(calls // 1000)
        pick = calls % 60  # delete_file (out of scope: blocked) once in 30 calls
        tool = tools[(pick // 2) % 4 * 3 + 2] if pick % 30 == 29 else tools[(pick % 4) * 3 + pick // 4 % 2]
        try:
            tool(f"/data/{calls}")
        except thoth_nb.ThothPolicyViolation:
            pass
        calls += 1
        if calls % 5000 == 0:
            thoth_nb.flush(timeout=60)
    emitters = list(_runtime._emitters.values())
    thoth_nb.shutdown()
    for emitter in emitters:
        if emitter._keeper is not None:
            emitter._keeper.wait(timeout=600)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        count = conn.execute("SELECT COUNT(*) FROM events WHERE tenant_id = 'local'").fetchone()[0]
    conn.close()
    return {"path": str(path), "events": count, "made_s": time.perf_counter() - started}


def frames(db: Path, n: int, rounds: int = 2) -> dict[str, float]:
    """`thoth_nb.events()` of every row of a store this process holds open (the notebook's case: the
    reader child does the ADBC work) beside a bare `pd.read_sql` of the same rows and columns.

    first_s is the first call of the process (it starts the reader child); events_s the median of
    later calls; *_cpu_s count the CPU of this process plus the reader child, which a busy machine
    does not inflate the way it inflates wall time."""
    import pandas as pd

    from thoth_nb.analytics import frames as fr
    from thoth_nb.engine.store import SQLiteStore

    ensure_store(db, n)
    store = SQLiteStore(db)
    out: dict[str, float] = {"rows": float(store.count_events("local"))}
    columns = ", ".join(fr._EVENT_COLUMNS)

    def cpu_now() -> float:
        return time.process_time() + process_cpu(fr._READER.pid)

    def ours() -> Any:
        return fr.events(store=store, tenant_id="local", tool_args=False)

    def bare() -> Any:
        conn = sqlite3.connect(db)
        try:
            return pd.read_sql(f"SELECT {columns} FROM events WHERE tenant_id = 'local' ORDER BY seq", conn)
        finally:
            conn.close()

    fr._READER.close()
    started, cpu0 = time.perf_counter(), time.process_time()
    first = ours()
    out["first_s"] = time.perf_counter() - started
    out["first_cpu_s"] = time.process_time() - cpu0 + process_cpu(fr._READER.pid)
    if len(first) != n:
        raise RuntimeError(f"events() returned {len(first)} rows, expected {n}")
    samples: dict[str, list[float]] = {"events_s": [], "events_cpu_s": [], "read_sql_s": [], "read_sql_cpu_s": []}
    for round_ in range(rounds):
        for name, fn in ((("ours", ours), ("bare", bare)) if round_ % 2 == 0 else (("bare", bare), ("ours", ours))):
            key = "events" if name == "ours" else "read_sql"
            started, cpu0 = time.perf_counter(), cpu_now()
            frame = fn()
            samples[f"{key}_s"].append(time.perf_counter() - started)
            samples[f"{key}_cpu_s"].append(cpu_now() - cpu0)
            if len(frame) != n:
                raise RuntimeError(f"{name} returned {len(frame)} rows, expected {n}")
            del frame
    for key, values in samples.items():
        out[key] = statistics.median(values)
    lean = ours()
    middle = len(lean) // 2
    started = time.perf_counter()
    lean.iloc[middle:middle + 10_000].thoth.with_args()
    out["with_args_10k_rows_s"] = time.perf_counter() - started
    fr._READER.close()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "thoth-bench-1m.db")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--only", choices=("feed", "frames"))
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    if args.only != "frames":
        for key, value in feed_cost(args.calls).items():
            print(f"feed  {key:<28} {value:8.3f}")
    if args.only == "feed":
        return
    for key, value in frames(args.db, args.events).items():
        print(f"frame {key:<28} {value:8.3f}")


if __name__ == "__main__":
    main()
