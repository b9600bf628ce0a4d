"""`GET /v1/analytics/summary|timeseries|drift` (PROTOCOL §11): a tenant's activity, aggregated in the
store (one grouped query each), and tool-usage drift from `thoth_nb.analytics.drift`.

Every query is scoped by the caller's tenant. The SQL is the same on SQLite and PostgreSQL except
where time is bucketed: events.occurred_at is text on SQLite and a timestamp on PostgreSQL.
"""

from __future__ import annotations

import math
import re
from typing import Any

from thoth_nb.engine.store import SQLiteStore, format_ts, normalize_ts, parse_ts
from thoth_nb.server._http import ApiError, invalid

__all__ = ["drift", "parse_duration", "summary", "timeseries"]

#: a timeseries answers at most this many buckets (422 beyond: choose a larger bucket or a shorter span)
MAX_BUCKETS = 10_000
#: drift reads at most this many calls (422 beyond: narrow since/until or agent_id)
MAX_DRIFT_CALLS = 2_000_000
TOP_TOOLS = 10

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?")


def parse_duration(name: str, raw: str | None, default: int) -> int:
    """Whole seconds from `90`, `30s`, `5m`/`5min`, `1h`, `1d`, `1.5h`; 422 naming the parameter otherwise."""
    if raw is None or raw == "":
        return default
    found = _DURATION.fullmatch(raw.strip().lower())
    value = float(found.group(1)) * _UNITS[found.group(2) or "s"] if found else 0.0
    if not found or not math.isfinite(value) or value < 1 or value != int(value) or value > 366 * 86400:
        raise invalid(name, "must be a whole number of seconds from 1 s to 366 d, such as 30s, 5m, 1h or 1d; "
                      f"got {raw!r}")
    return int(value)


def _window(store: Any, since: str | None, until: str | None, column: str,
            params: list[Any], *, timestamp: bool) -> list[str]:
    """WHERE terms for since (inclusive) / until (exclusive) on `column`."""
    where = []
    for value, op in ((since, ">="), (until, "<")):
        if value:
            canonical = normalize_ts(value)
            where.append(f"{column} {op} ?")
            params.append(parse_ts(canonical) if timestamp and not isinstance(store, SQLiteStore) else canonical)
    return where


def _scope(store: Any, tenant_id: str, agent_id: str | None, since: str | None, until: str | None,
           time_column: str, *, timestamp: bool) -> tuple[str, list[Any]]:
    params: list[Any] = [tenant_id]
    where = ["tenant_id = ?"]
    if agent_id:
        where.append("agent_id = ?")
        params.append(agent_id)
    where += _window(store, since, until, time_column, params, timestamp=timestamp)
    return " AND ".join(where), params


_EVENT_COUNTS = (
    "COUNT(*) AS events, "
    "SUM(CASE WHEN event_type = 'TOOL_CALL_PRE' THEN 1 ELSE 0 END) AS tool_calls, "
    "SUM(CASE WHEN event_type = 'TOOL_CALL_POST' THEN 1 ELSE 0 END) AS completed, "
    "SUM(CASE WHEN event_type = 'TOOL_CALL_BLOCK' THEN 1 ELSE 0 END) AS blocked, "
    "SUM(CASE WHEN event_type = 'LLM_INVOCATION' THEN 1 ELSE 0 END) AS llm_calls"
)
_COUNT_NAMES = ("events", "tool_calls", "completed", "blocked", "llm_calls")


def summary(store: Any, tenant_id: str, *, agent_id: str | None, since: str | None,
            until: str | None) -> dict[str, Any]:
    """Totals over the window: events by kind, sessions, agents, violations by decision, approvals by
    status, and the most called tools with how often each was blocked."""
    where, params = _scope(store, tenant_id, agent_id, since, until, "occurred_at", timestamp=True)
    row = store.query(f"SELECT {_EVENT_COUNTS}, COUNT(DISTINCT session_id) AS sessions, "
                      f"COUNT(DISTINCT agent_id) AS agents FROM events WHERE {where}", params)[0]
    out: dict[str, Any] = {"tenant_id": tenant_id, "agent_id": agent_id, "since": since, "until": until}
    for name in (*_COUNT_NAMES, "sessions", "agents"):
        out[name] = int(row[name] or 0)
    tools = store.query(
        "SELECT tool_name, SUM(CASE WHEN event_type = 'TOOL_CALL_PRE' THEN 1 ELSE 0 END) AS calls, "
        "SUM(CASE WHEN event_type = 'TOOL_CALL_BLOCK' THEN 1 ELSE 0 END) AS blocked "
        f"FROM events WHERE {where} AND event_type IN ('TOOL_CALL_PRE', 'TOOL_CALL_BLOCK') "
        f"GROUP BY tool_name ORDER BY calls DESC, tool_name LIMIT {TOP_TOOLS}",
        params,
    )
    out["top_tools"] = [{"tool_name": t["tool_name"], "calls": int(t["calls"] or 0),
                         "blocked": int(t["blocked"] or 0)} for t in tools]
    where, params = _scope(store, tenant_id, agent_id, since, until, "created_at", timestamp=False)
    by_decision = {r["decision"]: int(r["n"]) for r in store.query(
        f"SELECT decision, COUNT(*) AS n FROM violations WHERE {where} GROUP BY decision ORDER BY decision", params)}
    out["violations"] = {"total": sum(by_decision.values()), "by_decision": by_decision}
    if hasattr(store, "expire_holds"):
        store.expire_holds()  # a pending hold past its expiry counts as expired, as /v1/approvals shows it
    by_status = {r["status"]: int(r["n"]) for r in store.query(
        f"SELECT status, COUNT(*) AS n FROM holds WHERE {where} GROUP BY status", params)}
    out["approvals"] = {s: by_status.get(s, 0) for s in ("pending", "approved", "denied", "expired")}
    return out


def _bucket_expr(store: Any, column: str, timestamp: bool) -> str:
    """Bucket number of a row: floor(epoch seconds / bucket), exact (whole seconds, integer division).
    Text columns hold format_ts() strings."""
    if isinstance(store, SQLiteStore):
        return f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) / ?"
    if timestamp:
        return f"CAST(floor(extract(epoch FROM {column}) / ?) AS BIGINT)"
    return f"CAST(floor(extract(epoch FROM CAST({column} AS TIMESTAMPTZ)) / ?) AS BIGINT)"


def timeseries(store: Any, tenant_id: str, *, agent_id: str | None, since: str | None, until: str | None,
               bucket: int) -> dict[str, Any]:
    """Counts per time bucket (aligned to the Unix epoch, UTC): events by kind and violations. Buckets
    run from the first to the last one with activity (or since/until when given), empty ones as zeros."""
    where, params = _scope(store, tenant_id, agent_id, since, until, "occurred_at", timestamp=True)
    expr = _bucket_expr(store, "occurred_at", True)
    rows = store.query(f"SELECT {expr} AS b, {_EVENT_COUNTS} FROM events WHERE {where} GROUP BY 1",
                       [bucket, *params])
    vwhere, vparams = _scope(store, tenant_id, agent_id, since, until, "created_at", timestamp=False)
    vrows = store.query(f"SELECT {_bucket_expr(store, 'created_at', False)} AS b, COUNT(*) AS violations "
                        f"FROM violations WHERE {vwhere} GROUP BY 1", [bucket, *vparams])
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        counts[int(row["b"])] = {name: int(row[name] or 0) for name in _COUNT_NAMES}
    violations = {int(r["b"]): int(r["violations"]) for r in vrows}
    keys = set(counts) | set(violations)
    if since:
        keys.add(math.floor(parse_ts(since).timestamp() / bucket))
    if until:  # `until` is exclusive: its bucket is included only if it starts before `until`
        end = parse_ts(until).timestamp()
        keys.add(math.ceil(end / bucket) - 1)
    items: list[dict[str, Any]] = []
    if keys:
        first, last = min(keys), max(keys)
        if last - first + 1 > MAX_BUCKETS:
            raise ApiError(422, "invalid_request",
                           f"bucket: {last - first + 1} buckets of {bucket} s; at most {MAX_BUCKETS} are "
                           "answered, so choose a larger bucket or a shorter since/until span", field="bucket")
        zero = dict.fromkeys(_COUNT_NAMES, 0)
        for b in range(first, last + 1):
            items.append({"start": format_ts(b * bucket), "end": format_ts((b + 1) * bucket),
                          **counts.get(b, zero), "violations": violations.get(b, 0)})
    return {"tenant_id": tenant_id, "agent_id": agent_id, "since": since, "until": until,
            "bucket_seconds": bucket, "items": items}


def drift(store: Any, tenant_id: str, *, agent_id: str | None, since: str | None, until: str | None,
          window: int, step: int | None, threshold: float, min_calls: int, train: float) -> dict[str, Any]:
    """Jensen-Shannon drift of each window's tool usage from the agent's baseline
    (`thoth_nb.analytics.drift.drift`), the baseline learnt from the earliest `train` share of the span."""
    try:
        import pandas as pd

        from thoth_nb.analytics.drift import drift as compute_drift
    except ImportError as exc:
        raise ApiError(501, "not_available", f"drift needs the pandas extra on the server: "
                       f"pip install 'thoth-nb[pandas]' ({exc})") from None
    if step is not None and step > window:
        raise invalid("step", "must not be longer than window")
    where, params = _scope(store, tenant_id, agent_id, since, until, "occurred_at", timestamp=True)
    rows = store.query(
        f"SELECT seq, occurred_at, session_id, agent_id, tool_name, event_type FROM events "
        f"WHERE {where} AND event_type = 'TOOL_CALL_PRE' ORDER BY seq LIMIT {MAX_DRIFT_CALLS + 1}", params)
    if len(rows) > MAX_DRIFT_CALLS:
        raise ApiError(422, "invalid_request", f"more than {MAX_DRIFT_CALLS:,} calls in the window: narrow "
                       "since/until or pass agent_id", field="since")
    frame = pd.DataFrame(rows, columns=["seq", "occurred_at", "session_id", "agent_id", "tool_name", "event_type"])
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True, format="ISO8601")
    result = compute_drift(frame, window=window, step=step, threshold=threshold, min_calls=min_calls, train=train)
    items = []
    for record in result.to_dict("records"):
        js = float(record["js_divergence"])
        items.append({
            "agent_id": str(record["agent_id"]),
            "window_start": format_ts(record["window_start"].to_pydatetime()),
            "window_end": format_ts(record["window_end"].to_pydatetime()),
            "calls": int(record["calls"]),
            "js_divergence": None if math.isnan(js) else js,
            "drifted": bool(record["drifted"]),
            "top_tool": str(record["top_tool"]),
            "top_tool_share": float(record["top_tool_share"]),
            "top_tool_baseline": float(record["top_tool_baseline"]),
        })
    return {"tenant_id": tenant_id, "agent_id": agent_id, "since": since, "until": until,
            "window_seconds": window, "step_seconds": step if step is not None else window,
            "threshold": threshold, "min_calls": min_calls, "train": train, "calls": len(rows), "items": items}
