"""Numbers for issue 5: what the live feed costs per governed call, and 1,000,000 stored events →
DataFrame with `thoth_nb.events()` beside a bare `pd.read_sql` of the same rows.

    python benchmarks/bench_notebook.py [--db /tmp/thoth-bench-1m.db] [--events 1000000] [--calls 3000]

The store is made once (about a minute) by benchmarks/notebook_data.py and reused.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


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


def frames(db: Path, n: int) -> dict[str, float]:
    import pandas as pd

    from thoth_nb.analytics import frames as fr
    from thoth_nb.engine.store import SQLiteStore

    if not db.exists():
        from notebook_data import make_store

        started = time.perf_counter()
        make_store(db, n).close()
        print(f"made {n} events in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    store = SQLiteStore(db)
    out: dict[str, float] = {"rows": float(store.count_events("local"))}

    def best(fn: Any, repeat: int = 2) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    def cpu(fn: Any) -> float:  # all threads' CPU time: comparable on a busy machine, unlike wall time
        started = time.process_time()
        fn()
        return time.process_time() - started

    out["events_s"] = best(lambda: fr.events(store=store, tenant_id="local", tool_args=False))
    out["events_cpu_s"] = cpu(lambda: fr.events(store=store, tenant_id="local", tool_args=False))
    columns = "seq, event_id, occurred_at, session_id, agent_id, user_id, tool_name, event_type, decision, violation_id"

    def read_sql(sql: str) -> Any:
        conn = sqlite3.connect(db)
        try:
            return pd.read_sql(sql, conn)
        finally:
            conn.close()

    out["read_sql_same_columns_s"] = best(
        lambda: read_sql(f"SELECT {columns} FROM events WHERE tenant_id = 'local' ORDER BY seq"), repeat=1)
    out["read_sql_same_columns_cpu_s"] = cpu(
        lambda: read_sql(f"SELECT {columns} FROM events WHERE tenant_id = 'local' ORDER BY seq"))
    out["read_sql_all_columns_s"] = best(
        lambda: read_sql("SELECT * FROM events WHERE tenant_id = 'local' ORDER BY seq"), repeat=1)
    lean = fr.events(store=store, tenant_id="local", tool_args=False)
    out["with_args_10k_rows_s"] = best(lambda: lean.iloc[500_000:510_000].thoth.with_args())
    out["accessor_decision_counts_s"] = best(lambda: lean.thoth.decision_counts(by="agent_id"))
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
