"""Shared pieces: the result row, sizes for full and smoke runs, interleaved timing and statistics.

The machine is shared and noisy (2 cores), so every figure is measured beside its baseline in the
same run, in interleaved repetitions, and reported as medians (plus p99 where a target names it).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Result", "Sizes", "batch_timer", "interleaved", "load_average", "percentile", "process_cpu", "rss_bytes",
           "timed_each"]


@dataclasses.dataclass(slots=True)
class Sizes:
    """How much work each benchmark does; `smoke()` is small enough for the test suite."""

    smoke: bool = False
    call_batch: int = 1000  # calls per timed batch (timer resolution is too coarse for one call)
    call_rounds: int = 60  # interleaved batches per contender
    single_calls: int = 20_000  # individually timed calls per contender, for p99
    emitter_seconds: float = 3.0
    memory_calls: int = 100_000
    policy_decisions: int = 20_000
    ingest_events: int = 40_000
    frame_events: int = 1_000_000
    stepup_rounds: int = 20
    server_calls: int = 2_000
    load_seconds: float = 3.0
    server_ingest_batches: int = 80

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(
            smoke=True, call_batch=200, call_rounds=10, single_calls=1000, emitter_seconds=0.3, memory_calls=2_000,
            policy_decisions=500, ingest_events=2_000, frame_events=2_000, stepup_rounds=2, server_calls=50,
            load_seconds=0.3, server_ingest_batches=4,
        )


@dataclasses.dataclass(slots=True)
class Result:
    """One row of the table. `ok` is None when there is no target to judge (info) or no value (n/a)."""

    group: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""
    status: str = ""  # pass | FAIL | info | n/a | error

    def __post_init__(self) -> None:
        if not self.status:
            if self.value is None:
                self.status = "n/a"
            elif self.ok is None:
                self.status = "info"
            else:
                self.status = "pass" if self.ok else "FAIL"
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline

    @classmethod
    def na(cls, group: str, figure: str, why: str, target: str = "") -> Result:
        return cls(group, figure, None, "", target=target, note=why, status="n/a")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int,
                between: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Run each contender once per round, rotating the order each round; each returns one sample.

    Interleaving spreads the machine's noise evenly over the contenders; `between` runs untimed after
    every sample (e.g. flushing the emitter so queues never grow across samples).
    """
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(contenders[name]())
            if between is not None:
                between()
    return samples


def batch_timer(fn: Callable[..., Any], args: tuple[Any, ...], calls: int,
                after: Callable[[], None] | None = None,
                clock: Callable[[], int] = time.perf_counter_ns) -> Callable[[], float]:
    """A sample: mean ns per call over a batch of `calls` calls of `fn(*args)`; `after` runs untimed.

    `clock=time.thread_time_ns` measures the CPU time of the calling thread: what the call costs,
    without the time this process spent descheduled on a loaded machine (or waiting for the GIL).
    """
    rng = range(calls)

    def sample() -> float:
        t0 = clock()
        for _ in rng:
            fn(*args)
        elapsed = clock() - t0
        if after is not None:
            after()
        return elapsed / calls

    return sample


def timed_each(fn: Callable[..., Any], args: tuple[Any, ...], calls: int) -> list[float]:
    """Each call timed on its own (ns, including ~60 ns of timer overhead, which the bare call shares)."""
    clock = time.perf_counter_ns
    out = [0.0] * calls
    for i in range(calls):
        t0 = clock()
        fn(*args)
        out[i] = clock() - t0
    return out


def load_average() -> float:
    """1-minute load average: how busy the shared machine was (figures are noisier above the CPU count)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; not the peak)."""
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process so far, from Linux /proc (0 when None, gone or unreadable)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
