"""Issue 5's figures in the runner: what the live decision feed adds per governed call, and 1,000,000
stored events → DataFrame with `thoth_nb.events()` beside a bare `pd.read_sql` of the same rows.

Each runs in a child process (`bench_notebook`: it sets THOTH_HOME, stubs the display hook, holds the
store open the way a notebook does); the baseline is measured in the same child, interleaved.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._core import Result, Sizes

HERE = Path(__file__).resolve().parent
#: the million-event store is made once (about a minute) and reused by later runs
FRAMES_DB = Path(tempfile.gettempdir()) / "thoth-bench-1m.db"


def _in_child(call: str) -> Any:
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_notebook as b; "
            f"print(json.dumps({call}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200,
                          cwd=HERE.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{call} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_feed(sizes: Sizes) -> list[Result]:
    calls = 300 if sizes.smoke else 3000
    data = _in_child(f"b.feed_cost({calls})")
    bare = data["bare_ms"]
    out = []
    for mode in ("widget", "text"):
        added = data[f"{mode}_feed_ms"] - bare
        out.append(Result(
            "notebook", f"live feed ({mode}) added per governed call", added, "ms",
            baseline=bare, baseline_label="governed call without a feed", ratio=data[f"{mode}_feed_ms"] / bare,
            target="≤ 2 ms added", ok=added <= 2.0, note=f"{calls} calls, best of 3",
        ))
    return out


def bench_frames(sizes: Sizes) -> list[Result]:
    n = sizes.frame_events
    figure = "1M events → DataFrame (thoth_nb.events)" if n == 1_000_000 else f"{n:,} events → DataFrame"
    if importlib.util.find_spec("pandas") is None:
        return [Result.na("notebook", figure, "pandas is not installed", "≤ 2 s per 1M rows")]
    with tempfile.TemporaryDirectory(prefix="thoth-bench-frames-") as tmp:
        db = FRAMES_DB if n == 1_000_000 else Path(tmp) / "frames.db"
        data = _in_child(f"b.frames(__import__('pathlib').Path({str(db)!r}), {n}, rounds={1 if sizes.smoke else 3})")
    limit = 2.0 * n / 1_000_000
    from thoth_nb.analytics.frames import _PARALLEL_FROM

    big = n >= _PARALLEL_FROM and importlib.util.find_spec("adbc_driver_sqlite") is not None
    reader = "ADBC in the warm reader child" if big else "sqlite3 in-process"
    return [
        Result("notebook", figure, data["events_s"], "s", baseline=data["read_sql_s"],
               baseline_label="pd.read_sql of the same rows and columns", target="≤ 2 s per 1M rows",
               ok=data["events_s"] <= limit,
               note=(f"median of later calls; {reader}; categoricals, tz-aware time, args lazy; "
                     f"CPU incl. reader child {data['events_cpu_s']:.2f} s vs {data['read_sql_cpu_s']:.2f} s")),
        Result("notebook", f"{figure}, first call" + (" (starts the reader)" if big else ""), data["first_s"], "s",
               baseline=data["read_sql_s"], baseline_label="pd.read_sql of the same rows and columns",
               note=f"CPU incl. reader child {data['first_cpu_s']:.2f} s"),
        Result("notebook", "tool args of 10,000 of those rows (df.thoth.with_args)", data["with_args_10k_rows_s"],
               "s", note="lazy argument loading: one json_extract per row in SQLite"),
    ]


BENCHES = [bench_feed, bench_frames]
