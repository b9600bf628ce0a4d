"""Behavioral analytics, replay and dashboard timings (issue 8's targets).

    python -m benchmarks.analytics            # 1,000,000 events, replay of 100,000, dashboard on 100,000
    python -m benchmarks.analytics --smoke    # small sizes, for a quick check

Targets: analytics over 1,000,000 events ≤ 10 s; replay ≥ 20,000 decisions/s; dashboard opens ≤ 1 s on
100,000 events. The machine is shared: each figure is the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

REPLAY_POLICY = r"""
rules:
  - {id: etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: refunds, tool: refund, when: {amount: {gt: 50}}, decision: step_up}
  - id: exfil
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after: [{tool: read_file, when: {path: {regex: "(^|/)secrets/"}}}]
    decision: block
rate_limits:
  - {id: burst, tool: "*", max_calls: 100, per_seconds: 60, decision: step_up}
"""


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def analytics(n: int, repeat: int) -> dict[str, float]:
    from thoth_nb.analytics.anomaly import anomaly_scores, session_scores
    from thoth_nb.analytics.baseline import baseline, calls
    from thoth_nb.analytics.drift import drift
    from thoth_nb.analytics.synthetic import synthetic_events

    events = synthetic_events(n, seed=1, drift_at=0.5, exfiltration=True, span_hours=24 * 14)
    out: dict[str, float] = {}
    out["calls"], c = best(lambda: calls(events), repeat)
    out["baseline"], b = best(lambda: baseline(c), repeat)
    out["drift"], _ = best(lambda: drift(c, b, window="2h", step="30min"), repeat)
    out["anomaly_scores"], scores = best(lambda: anomaly_scores(c, b), repeat)
    out["session_scores"], _ = best(lambda: session_scores(scores), repeat)
    def pipeline(frame: Any) -> Any:
        c = calls(frame)
        b = baseline(c)
        drift(c, b, window="2h", step="30min")
        return session_scores(anomaly_scores(c, b))

    out["total"], _ = best(lambda: pipeline(events), 1)
    # thoth_nb.events() leaves tool_args out above 50,000 rows: no shape or secrets factors then
    bare = events.drop(columns=["tool_args"])
    out["total_without_tool_args"], _ = best(lambda: pipeline(bare), 1)
    return out


def replay_rate(n: int, repeat: int) -> dict[str, float]:
    from thoth_nb.analytics.replay import replay
    from thoth_nb.analytics.synthetic import synthetic_events

    events = synthetic_events(n, seed=2, exfiltration=True)
    scope = ["web_search", "read_file", "summarize", "send_email", "lookup_order", "refund"]
    seconds, result = best(lambda: replay(events, REPLAY_POLICY, mode="block", approved_scope=scope,
                                          changes_only=False), repeat)
    stats = result.attrs["thoth_replay"]
    return {"calls": float(stats["calls"]), "seconds": seconds, "decisions_per_second": stats["calls"] / seconds,
            "engine_decisions_per_second": stats["decisions_per_second"],
            "non_allow": float((result["after"].astype(str) != "ALLOW").sum())}


def dashboard_open(n: int, repeat: int) -> dict[str, float]:
    from benchmarks.notebook_data import make_store
    from thoth_nb.notebook.dashboard import dashboard

    with tempfile.TemporaryDirectory() as folder:
        store = make_store(Path(folder) / "big.db", n)
        seconds, _ = best(lambda: dashboard(store=store, tenant_id="local", analytics="auto"), repeat)
        store.close()
    return {"events": float(n), "open_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scale = 100 if args.smoke else 1
    print("analytics", 1_000_000 // scale, "events:", analytics(1_000_000 // scale, args.repeat))
    print("replay", 100_000 // scale, "events:", replay_rate(100_000 // scale, args.repeat))
    print("dashboard", 100_000 // scale, "events:", dashboard_open(100_000 // scale, args.repeat))


if __name__ == "__main__":
    main()
