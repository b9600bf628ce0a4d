"""Issue 5's feed figure in the runner: what the live decision feed adds per governed call.

Runs `bench_notebook.feed_cost` in a child process (it sets THOTH_HOME and stubs the display hook),
the bare governed call measured in the same child as the baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks._core import Result, Sizes

HERE = Path(__file__).resolve().parent


def bench_feed(sizes: Sizes) -> list[Result]:
    calls = 300 if sizes.smoke else 3000
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from bench_notebook import feed_cost; "
            f"print(json.dumps(feed_cost({calls})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=HERE.parent)
    if done.returncode != 0:
        raise RuntimeError(f"feed benchmark failed: {done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
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


BENCHES = [bench_feed]
