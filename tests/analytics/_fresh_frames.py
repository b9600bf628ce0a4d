"""Shared by the disk cache and frame keeper tests: governed calls of two tenants ("acme" and "other"),
and `events(tenant_id="acme")` in a fresh Python process (what a new kernel does)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

FRESH = """
import json, pickle, sys
import thoth_nb
from thoth_nb.analytics import frames
frames._PARALLEL_FROM = 2
df = thoth_nb.events(tenant_id="acme", tool_args=False)
pickle.dump(df, open(sys.argv[1], "wb"))
print(json.dumps({"child": frames._READER.pid is not None}))
thoth_nb.shutdown()
"""


def record(calls: int = 10, *, start: int = 0) -> None:
    """`calls` governed calls for each tenant (a PRE and a POST event each), flushed to the store."""
    import thoth_nb

    @thoth_nb.governed(agent_id="research", tenant_id="acme", user_id="alice", approved_scope=["search"])
    def search(q: str) -> str:
        return q

    @thoth_nb.governed(agent_id="ops", tenant_id="other", approved_scope=["lookup"])
    def lookup(q: str) -> str:
        return q

    for i in range(start, start + calls):
        search(f"q{i}")
        lookup(f"other-tenant-{i}")
    assert thoth_nb.flush()


def fresh_read(out: Path, **env: str) -> tuple[Any, bool]:
    """The frame, and whether the reader child had to run (False: a cache file was mapped)."""
    done = subprocess.run([sys.executable, "-c", FRESH, str(out)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out, "rb") as file:
        frame = pickle.load(file)  # written by the test's own child process
    return frame, json.loads(done.stdout.strip().splitlines()[-1])["child"]
