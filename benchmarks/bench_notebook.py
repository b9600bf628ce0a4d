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


def _child_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process of ours so far, from /proc (0 without it)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_store(db: Path, n: int) -> None:
    """The synthetic store of `n` events at `db`, made (about a minute per million) unless it is there."""
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            count = conn.execute("SELECT COUNT(*) FROM events WHERE tenant_id = 'local'").fetchone()[0]
        conn.close()
        if count == n:
            return
        db.unlink()
    from notebook_data import make_store

    started = time.perf_counter()
    make_store(db, n).close()
    print(f"made {n} events in {time.perf_counter() - started:.0f}s", file=sys.stderr)


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
        return time.process_time() + _child_cpu(fr._READER.pid)

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
    out["first_cpu_s"] = time.process_time() - cpu0 + _child_cpu(fr._READER.pid)
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
