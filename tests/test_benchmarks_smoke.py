"""The benchmark runner in smoke mode (tiny sizes): every figure must still be computable.

The numbers of a smoke run are noise and are not judged here; what is checked is that each figure
the issues name produced a finite value (or is n/a only because its optional module is missing),
and that no benchmark raised. Runs in a subprocess: the benchmarks start servers and threads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (group, words in the figure) of every figure the issues ask for
EXPECTED = [
    ("embedded", "hot path", "median added"),
    ("embedded", "hot path", "p99 added"),
    ("embedded", "sustained", "median added"),
    ("embedded", "sustained", "p99 added"),
    ("embedded", "RSS growth"),
    ("embedded", "step-up", "embedded"),
    ("emitter", "delivered"),
    ("policy", "20 rules"),
    ("store", "ingest into SQLite"),
    ("store", "DataFrame"),
    ("store", "analytics"),
    ("store", "replay"),
    ("server", "through the server", "median"),
    ("server", "through the server", "p99"),
    ("server", "throughput, 1 connection"),
    ("server", "throughput, 8 connections"),
    ("server", "events/batch"),
    ("server", "long-poll"),
    ("postgres", "PostgresStore"),
    ("postgres", "2 replicas vs 1"),
    ("postgres", "long-polling on replica 2"),
]
OPTIONAL = {  # a figure may be n/a only when this module is missing
    "policy": "cedarpy",
    "server": "fastapi",
    "DataFrame": "pandas",
    "analytics": "pandas",
    "replay": "thoth_nb.analytics.replay",
    "postgres": "<database>",
}


def _missing(name: str) -> bool:
    if name == "<database>":  # the PostgreSQL figures need a server: .ci/start-postgres exports its URL
        from benchmarks.pg_scale import available

        return available() is not None
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.timeout(600)
def test_smoke_run_computes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    md = tmp_path / "smoke.md"
    t0 = time.monotonic()
    cpu0 = _cpu_seconds()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--quiet", "--json", str(out), "--markdown", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )
    elapsed = time.monotonic() - t0
    cpu = _cpu_seconds() - cpu0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    rows = data["results"]
    assert not [r for r in rows if r["status"] == "error"], proc.stdout
    for expected in EXPECTED:
        group, *words = expected
        found = [r for r in rows if r["group"] == group and all(w in r["figure"] for w in words)]
        assert found, f"figure {expected} missing in:\n{proc.stdout}"
        for row in found:
            if row["status"] == "n/a":
                module = next((m for key, m in OPTIONAL.items() if key == group or key in row["figure"]), None)
                assert module is not None and _missing(module), (
                    f"{row['figure']} is n/a but {module} is available: {row['note']}")
                continue
            assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]), row
            assert row["status"] in ("pass", "FAIL", "info"), row
            if row["target"]:
                assert row["status"] in ("pass", "FAIL"), row
    table = proc.stdout
    assert "baseline (same run)" in table and "ratio" in table
    assert md.read_text().count("\n|") >= len(EXPECTED)
    # "fast" in CPU seconds (the runner and the servers it starts), which a busy shared machine does not
    # inflate the way it inflates wall time (this took ~10 s of CPU and 20-70 s of wall time at load 2-14)
    assert cpu < 30, f"smoke run used {cpu:.0f} s of CPU ({elapsed:.0f} s wall); keep it fast"
