"""The first `thoth_nb.events()` of a fresh process, the way a notebook user meets it (issue 5).

    python benchmarks/bench_first_frame.py DB DELAY [load_ext|plain]

One run is one fresh process: `import thoth_nb`, then (load_ext) `%load_ext thoth_nb` in an IPython
InteractiveShell, `DELAY` seconds of the user doing something else (sleeping: the CPUs stay free for
whatever the extension started), then `thoth_nb.events()` of the store at DB (THOTH_DB) with nothing
imported beforehand: pandas, the store, the reader child and the read all count. Prints one JSON line:
the call's wall time, the CPU this process and the reader child spent during the call, the CPU the
child spent before it (the warm-up, in the background), and the rows.
THOTH_WARM_READER=0 in the environment gives the same run without the warm-up (the baseline). The disk
cache of big reads (`_frame_cache`, under THOTH_HOME) is used when THOTH_HOME holds a file an earlier
process wrote; "reader_started" says whether the reader child had to run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._core import process_cpu  # stdlib only: nothing measured is imported early


def _reader_pid() -> int | None:
    frames = sys.modules.get("thoth_nb.analytics.frames")
    reader = getattr(frames, "_READER", None)  # None while %load_ext's warm-up thread is still importing it
    return reader.pid if reader is not None else None


def main() -> None:
    db, delay = Path(sys.argv[1]), float(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "load_ext"
    os.environ["THOTH_DB"] = str(db)
    import thoth_nb

    if mode == "load_ext":
        from IPython.core.interactiveshell import InteractiveShell

        InteractiveShell.instance().run_line_magic("load_ext", "thoth_nb")
    time.sleep(delay)
    pid = _reader_pid()
    child0, cpu0, started = process_cpu(pid), time.process_time(), time.perf_counter()
    frame = thoth_nb.events()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    pid_after = _reader_pid()
    child = process_cpu(pid_after) - (child0 if pid_after == pid else 0.0)
    print(json.dumps({"first_s": wall, "cpu_s": cpu, "child_cpu_s": child, "rows": len(frame),
                      "warm_up_cpu_s": child0 if pid_after == pid else 0.0,
                      "warm": os.environ.get("THOTH_WARM_READER", "1") != "0", "reader_started": pid_after is not None,
                      "time_dtype": str(frame["occurred_at"].dtype), "args_lazy": "tool_args" not in frame}))
    thoth_nb.shutdown()


if __name__ == "__main__":
    main()
