"""Figure 2: the emitter's delivery rate into SQLite while the producing thread runs flat out.

The producer is the busiest loop there is: governed calls back to back on the main thread (each
queues a PRE and a POST event), so the emitter thread gets the GIL only when the interpreter
switches. Delivered events/s is what reached the store during the window; drops are counted.
"""

from __future__ import annotations

import time

from benchmarks import reference as ref
from benchmarks._core import Result, Sizes
from benchmarks.embedded import governed_tool, thoth_home

GROUP = "emitter"


def bench_emitter_throughput(sizes: Sizes) -> list[Result]:
    with thoth_home() as home:
        tool = governed_tool(home)
        tool(*ref.ARGS)
        governor = tool.__thoth_binding__.governor  # type: ignore[attr-defined]
        emitter = governor.emitter
        emitter.flush()
        store = governor.transport.engine.store
        stored0 = store.count_events(ref.AGENT["tenant_id"])
        sent0, dropped0 = emitter.sent, emitter.dropped
        path, mode = ref.ARGS
        produced = 0
        t0 = time.perf_counter()
        deadline = t0 + sizes.emitter_seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                tool(path, mode)
            produced += 200
        window = time.perf_counter() - t0
        sent = emitter.sent - sent0
        backlog = emitter.queue_depth
        t1 = time.perf_counter()
        if not emitter.flush(timeout=120):
            raise RuntimeError("the emitter did not drain its backlog within 120 s")
        drain = time.perf_counter() - t1
        dropped = emitter.dropped - dropped0
        stored = store.count_events(ref.AGENT["tenant_id"]) - stored0
    if stored + dropped != produced:
        raise RuntimeError(f"{produced} events produced but {stored} stored and {dropped} dropped")
    rate = sent / window
    produced_rate = produced / window
    return [Result(GROUP, "emitter → SQLite delivered beside a busy producer thread", rate, "events/s",
                   produced_rate, "events/s produced", None, "≥ 5,000 events/s", rate >= 5000,
                   f"{window:.1f} s window; backlog {backlog:,} drained in {drain:.1f} s after it; "
                   f"dropped {dropped:,} (counted in status()); all {stored:,} others stored")]


BENCHES = [bench_emitter_throughput]
