"""The engine's cheap, online risk score for progressive mode (PROTOCOL §8, thoth_nb addition).

Progressive mode combines the policy's verdict with a risk score in 0-100:

    risk = 100 · (1 - Π_i (1 - c_i / 100))        (noisy-OR of the components c_i)

with the components
    rule       the severity of the rule that matched (low 25, medium 50, high 75, critical 95;
               scope violations use `scope_violation.severity`), 0 when no rule matched;
    rare_tool  60 · rarity(share), share = this tool's fraction of the agent's earlier calls seen by
               this engine, once the agent has made `WARMUP_CALLS` calls (0 before);
               rarity(s) = 1 if s = 0 else clip((-log10 s - 1) / 3, 0, 1), as in thoth_nb.analytics;
    rate_burst 60 · clip((r / BURST_CALLS - 1) / 2, 0, 1), r = the session's calls in the last
               BURST_SECONDS seconds (this one included).

The risk decision is ALLOW below `risk_thresholds.step_up`, STEP_UP below `risk_thresholds.block`,
BLOCK from there. The final progressive decision is the stricter of the risk decision and §8's rule
mapping (a rule violation steps up the first time in a session, then blocks; a `hard` rule blocks),
so the score can only raise a decision, never soften a rule: with no rule and low risk the call is
allowed; an anomalous call with no rule steps up or blocks; a `critical` rule (95 ≥ 80) blocks at once.
Everything here is a few dict and deque operations per call, and it runs in progressive mode only.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

__all__ = ["BURST_CALLS", "BURST_SECONDS", "WARMUP_CALLS", "RiskModel", "combine", "rarity"]

WARMUP_CALLS = 50
BURST_CALLS = 20
BURST_SECONDS = 10.0
RARE_WEIGHT = 60.0
BURST_WEIGHT = 60.0


def rarity(share: float) -> float:
    """1 for a never-seen share, else clip((-log10 share - 1) / 3, 0, 1) (≥ 10 % → 0, 0.01 % → 1)."""
    if share <= 0.0:
        return 1.0
    return min(1.0, max(0.0, (-math.log10(share) - 1.0) / 3.0))


def combine(components: dict[str, float]) -> float:
    """Noisy-OR of 0-100 components: 100 · (1 - Π (1 - c/100))."""
    keep = 1.0
    for value in components.values():
        keep *= 1.0 - min(100.0, max(0.0, value)) / 100.0
    return round(100.0 * (1.0 - keep), 3)


class _AgentCounts:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0


class RiskModel:
    """Per-agent tool counts and per-session call times, kept in memory by one Engine."""

    def __init__(self, clock: Callable[[], float], *, warmup: int = WARMUP_CALLS, burst_calls: int = BURST_CALLS,
                 burst_seconds: float = BURST_SECONDS) -> None:
        self._clock = clock
        self.warmup = warmup
        self.burst_calls = burst_calls
        self.burst_seconds = burst_seconds
        self._agents: dict[tuple[str, str], _AgentCounts] = {}

    def assess(self, tenant: str, agent: str, tool: str, times: collections.deque[float]) -> dict[str, float]:
        """Anomaly components (0-100) for this call, then record it. `times` is the session's deque.
        The common case (a usual tool at a usual pace) allocates nothing but the empty result."""
        key = (tenant, agent)
        counts = self._agents.get(key)
        if counts is None:
            counts = self._agents[key] = _AgentCounts()
            if len(self._agents) > 10_000:
                self._agents.pop(next(iter(self._agents)))
        seen = counts.counts
        total = counts.total
        n = seen.get(tool, 0)
        seen[tool] = n + 1
        counts.total = total + 1
        components: dict[str, float] = {}
        if total >= self.warmup and n < 0.1 * total:  # rarity is 0 from a 10 % share up
            rare = rarity(n / total)
            if rare > 0.0:
                components["rare_tool"] = round(RARE_WEIGHT * rare, 3)
        now = self._clock()
        cutoff = now - self.burst_seconds
        while times and times[0] <= cutoff:
            times.popleft()
        times.append(now)
        if len(times) > self.burst_calls:
            burst = (len(times) / self.burst_calls - 1.0) / 2.0
            components["rate_burst"] = round(BURST_WEIGHT * min(1.0, burst), 3)
        return components

    def seed(self, tenant: str, agent: str, tool_counts: dict[str, int]) -> None:
        """Start an agent's counts from a baseline (e.g. thoth_nb.analytics.baseline's tool rows)."""
        counts = self._agents.setdefault((tenant, agent), _AgentCounts())
        for tool, n in tool_counts.items():
            counts.counts[tool] = counts.counts.get(tool, 0) + int(n)
            counts.total += int(n)

    def snapshot(self) -> dict[str, Any]:
        return {f"{t}/{a}": dict(c.counts) for (t, a), c in self._agents.items()}
