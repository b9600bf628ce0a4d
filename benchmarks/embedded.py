"""Figures 1, 6 (embedded) and 7: the embedded governed call, step-up resume latency, memory per call.

The governed tool is `reference.read_file` under `reference.POLICY_YAML` (the reference wrapper's
scope and regexes as a thoth_nb policy), wrapped with `thoth_nb.governed(..., policy=<file>)`.

Two regimes, because the emitter thread competes for the GIL:
- hot path: the governor's emitter is swapped for one that only wakes on flush (long interval, huge
  batch), and it is flushed between samples, outside the timed region: the cost on the calling thread.
- sustained: the emitter as shipped (embedded: wakes every 1000 events / 0.1 s; under load it hands the
  batches to the writer child, which stores them in another process) runs during the timed calls; then
  the same with `offload="never"` (the store written on the emitter thread) as the same-run baseline.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import reference as ref
from benchmarks._core import Result, Sizes, batch_timer, interleaved, median, percentile, rss_bytes

GROUP = "embedded"


@contextlib.contextmanager
def thoth_home() -> Iterator[Path]:
    from thoth_nb.testing import isolated_home

    with isolated_home() as home:
        yield home


def governed_tool(home: Path, policy_yaml: str = ref.POLICY_YAML, fn: Callable[..., Any] = ref.read_file,
                  **extra: Any) -> Callable[..., Any]:
    import thoth_nb

    options = {"session_id": "bench-session", "enforcement": ref.AGENT["enforcement_mode"], **extra}
    if not options.get("api_url"):  # a server decides with its own policy
        policy = home / "bench-policy.yaml"
        policy.write_text(policy_yaml)
        options["policy"] = str(policy)
    return thoth_nb.governed(agent_id=ref.AGENT["agent_id"], tenant_id=ref.AGENT["tenant_id"],
                             approved_scope=ref.AGENT["approved_scope"], **options)(fn)


def paused_emitter(tool: Callable[..., Any]) -> Any:
    """Point the tool's governor at an emitter that only works when flushed (the hot-path regime)."""
    from thoth_nb._emitter import Emitter
    from thoth_nb._flow import build_event

    governor = tool.__thoth_binding__.governor  # type: ignore[attr-defined]
    shipped = governor.emitter
    shipped.flush()
    paused = Emitter(shipped.transport, build=build_event, interval=3600.0, batch_size=10**9)
    governor.emitter = paused
    return paused


def _call_overhead(sizes: Sizes, label: str, tool: Callable[..., Any], emitter: Any,
                   clock: Callable[[], int]) -> list[Result]:
    """Median added µs (batches) and p99 added µs (single calls) for tool vs bare vs reference."""
    flush = emitter.flush

    def clear_ref() -> None:
        ref.EVENTS.clear()

    contenders = {
        "bare": batch_timer(ref.bare_call, ref.ARGS, sizes.call_batch, clock=clock),
        "reference": batch_timer(ref.reference_call, ref.ARGS, sizes.call_batch, clear_ref, clock=clock),
        "governed": batch_timer(tool, ref.ARGS, sizes.call_batch, clock=clock),
    }
    # warm-up: caches, the emitter thread, SQLite pages
    interleaved(contenders, 3, between=flush)
    dropped0 = emitter.dropped
    batches = interleaved(contenders, sizes.call_rounds, between=flush)
    # single calls for the tail: chunks of call_batch, interleaved, flushed between chunks (untimed). Both
    # sides are timed and corrected the same way (the bare call's median, timer overhead included, is
    # subtracted from each). On this VM the tail is mostly the kernel's 1000 Hz tick, which charges 15-80 µs
    # of *thread CPU time* to whatever runs when it fires (a bare busy loop shows a gap every ~1 ms), so a
    # call's chance of a slow sample grows with its own length; the rest is garbage collection.
    singles: dict[str, list[float]] = {"bare": [], "reference": [], "governed": []}
    fns = {"bare": ref.bare_call, "reference": ref.reference_call, "governed": tool}
    path, mode = ref.ARGS
    chunks = max(1, sizes.single_calls // sizes.call_batch)
    for c in range(chunks):
        order = list(fns)
        order = order[c % 3:] + order[:c % 3]
        for name in order:
            fn = fns[name]
            out = singles[name]
            for _ in range(sizes.call_batch):
                t0 = clock()
                fn(path, mode)
                out.append(clock() - t0)
            ref.EVENTS.clear()
            flush()
    dropped = emitter.dropped - dropped0
    bare_med = median(batches["bare"])
    ref_added = (median(batches["reference"]) - bare_med) / 1000
    gov_added = (median(batches["governed"]) - bare_med) / 1000
    bare_single = median(singles["bare"])
    ref_p99 = (percentile(singles["reference"], 99) - bare_single) / 1000
    gov_p99 = (percentile(singles["governed"], 99) - bare_single) / 1000
    note = (f"bare call {bare_med / 1000:.2f} µs; governed total {median(batches['governed']) / 1000:.2f} µs; "
            f"{len(batches['bare'])}x{sizes.call_batch} batches + {len(singles['governed'])} single calls each; "
            f"events dropped {dropped}")
    ratio = gov_added / ref_added if ref_added > 0 else None
    return [
        Result(GROUP, f"governed call ALLOW, events on, {label}: median added", gov_added, "µs",
               ref_added, "reference wrapper added", ratio, "ratio ≤ 2.0",
               ratio is not None and ratio <= 2.0, note),
        Result(GROUP, f"governed call ALLOW, events on, {label}: p99 added", gov_p99, "µs",
               ref_p99, "reference wrapper p99 added", gov_p99 / ref_p99 if ref_p99 > 0 else None,
               "≤ 40 µs", gov_p99 <= 40.0, "single calls timed one by one, minus the bare call's median"),
    ]


def bench_call_overhead(sizes: Sizes) -> list[Result]:
    import thoth_nb

    with thoth_home() as home:
        tool = governed_tool(home)
        assert tool(*ref.ARGS) == 1
        governor = tool.__thoth_binding__.governor  # type: ignore[attr-defined]
        shipped = governor.emitter
        paused = paused_emitter(tool)
        # hot path: CPU time of the calling thread (the machine is shared: wall time there is mostly queueing)
        rows = _call_overhead(sizes, "hot path (emitter paused; thread CPU time)", tool, paused, time.thread_time_ns)
        rows[0].note += f"; wall clock: {_wall_median(tool, paused, sizes):.2f} µs added"
        paused.shutdown()
        governor.emitter = shipped
        # sustained: wall time, because waiting for the GIL while the emitter thread works is the point.
        # As shipped (batches stored by the writer child once it has started), then the same-run baseline
        # with the store written on the emitter thread (before the writer child).
        rows += _call_overhead(sizes, "sustained (emitter thread running; wall time)", tool, shipped,
                               time.perf_counter_ns)
        rows[-2].note += f"; writer child batches {shipped.offloaded:,}, writer failures {shipped.writer_failures}"
        from thoth_nb._emitter import Emitter
        from thoth_nb._flow import build_event

        in_process = Emitter(shipped.transport, build=build_event, batch_size=shipped.batch_size, offload="never")
        governor.emitter = in_process
        baseline = _call_overhead(sizes, "sustained, store written in-process (no writer child; baseline)", tool,
                                  in_process, time.perf_counter_ns)
        for row in baseline:
            row.target, row.ok, row.status = "", None, "info"  # information: what the writer child is compared with
        rows += baseline
        in_process.shutdown()
        governor.emitter = shipped
        thoth_nb.flush()
        stored = governor.transport.engine.store.count_events(ref.AGENT["tenant_id"])
        if stored == 0:
            raise RuntimeError("no events reached the store: the figures would be meaningless")
    return rows


def _wall_median(tool: Callable[..., Any], emitter: Any, sizes: Sizes) -> float:
    contenders = {"bare": batch_timer(ref.bare_call, ref.ARGS, sizes.call_batch),
                  "governed": batch_timer(tool, ref.ARGS, sizes.call_batch)}
    samples = interleaved(contenders, max(3, sizes.call_rounds // 4), between=emitter.flush)
    return (median(samples["governed"]) - median(samples["bare"])) / 1000


# --- figure 7: memory ---------------------------------------------------------------------------


def bench_memory(sizes: Sizes) -> list[Result]:
    """RSS growth per 100,000 governed calls after a warm-up, events on, flushing between chunks."""
    import thoth_nb

    with thoth_home() as home:
        tool = governed_tool(home)
        chunk = min(10_000, sizes.memory_calls // 2)
        path, mode = ref.ARGS

        def run(n: int) -> None:
            for _ in range(n // chunk):
                for _ in range(chunk):
                    tool(path, mode)
                if not thoth_nb.flush(timeout=600):
                    raise RuntimeError("the emitter did not drain within 600 s")

        def run_ref(n: int) -> None:
            for _ in range(n // chunk):
                for _ in range(chunk):
                    ref.reference_call(path, mode)
                ref.EVENTS.clear()

        run(max(chunk, sizes.memory_calls // 5))  # warm-up: SQLite page cache, interned strings, session buffers
        run_ref(max(chunk, sizes.memory_calls // 5))
        growth: dict[str, list[float]] = {}
        for name, fn in (("governed", run), ("reference", run_ref)):
            halves = []
            for _ in range(2):  # two halves: a leak shows as growth in both, a one-off cost only in the first
                gc.collect()
                before = rss_bytes()
                fn(sizes.memory_calls // 2)
                gc.collect()
                halves.append((rss_bytes() - before) / 1024)
            growth[name] = halves
    per = 100_000 / sizes.memory_calls
    first, second = (h * per for h in growth["governed"])
    value = first + second
    return [Result(GROUP, "RSS growth per 100,000 governed calls (after warm-up, events on)", value, "KiB",
                   sum(growth["reference"]) * per, "reference wrapper, same calls", None, "≤ 1024 KiB (flat)",
                   value <= 1024,
                   f"{sizes.memory_calls:,} calls measured in two halves: +{first:.0f} KiB then +{second:.0f} KiB "
                   "(scaled per 100k); flushed every chunk")]


# --- figure 6 (embedded): step-up click to resume -------------------------------------------------

STEPUP_POLICY = ref.POLICY_YAML


def bench_stepup_embedded(sizes: Sizes) -> list[Result]:
    """Approve a held call from another thread; time from the approve() call to the tool body starting."""
    import thoth_nb
    from thoth_nb import _context

    started: list[float] = []

    def body(path: str, mode: str = "r") -> int:
        started.append(time.perf_counter())
        return 1

    body.__name__ = "read_file"
    latencies: list[float] = []
    with thoth_home() as home:
        tool = governed_tool(home, fn=body, step_up_poll_interval_ms=5000)
        held: list[str] = []
        ready = threading.Event()

        def listener(phase: str, call: Any) -> None:
            if phase == "held" and call.decision is not None and call.decision.hold_token:
                held.append(call.decision.hold_token)
                ready.set()

        _context.add_listener(listener)
        try:
            for _ in range(sizes.stepup_rounds):
                ready.clear()
                clicked: list[float] = []

                def approver(clicked: list[float] = clicked) -> None:
                    ready.wait(10)
                    time.sleep(0.05)  # the caller is waiting by now
                    clicked.append(time.perf_counter())
                    thoth_nb.approve(held[-1])

                thread = threading.Thread(target=approver, daemon=True)
                thread.start()
                tool("/etc/hosts", "r")
                thread.join(10)
                latencies.append((started[-1] - clicked[-1]) * 1000)
        finally:
            _context.remove_listener(listener)
    med = median(latencies)
    worst = max(latencies)
    return [Result(GROUP, "step-up click→resume, embedded (approve() from another thread)", med, "ms",
                   5000.0, "seed's default poll interval", None, "≤ 100 ms", worst <= 100.0,
                   f"median of {len(latencies)}; max {worst:.1f} ms")]


BENCHES = [bench_call_overhead, bench_memory, bench_stepup_embedded]
