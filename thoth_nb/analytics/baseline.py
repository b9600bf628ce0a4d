"""Per-agent behavioral baselines: which tools an agent uses, with which argument shapes, how fast, in
which order. Learnt from recorded calls (typically observe-mode traffic) and used by drift and anomaly.

Everything is vectorised over the calls frame (`calls()`): one Python pass over the tool arguments
(argument shape + sensitive flag), the rest is numpy/pandas on categorical codes, so a baseline of
a million calls takes about a second.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BURST_WINDOW_S",
    "EGRESS_TOOLS",
    "SENSITIVE_ARGS",
    "arg_shape",
    "baseline",
    "calls",
    "rate_profile",
]

#: Trailing window (seconds) in which a session's calls are counted for the rate-burst measure.
BURST_WINDOW_S = 10.0
#: Argument text that marks a call as touching secrets or credentials.
SENSITIVE_ARGS = re.compile(
    r"(?i)(secret|credential|password|passwd|\.env\b|private[_-]?key|api[_-]?key|\.ssh|token|\.pem\b)")
#: Tool names that send data out of the agent's environment.
EGRESS_TOOLS = re.compile(r"(?i)(send|e?mail|post|upload|webhook|http|publish|slack|share|transfer|exfil)")

_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", type(None): "null", list: "list",
               dict: "dict", tuple: "list"}
_CALL_COLUMNS = ("seq", "event_id", "occurred_at", "session_id", "agent_id", "tool_name", "arg_shape",
                 "sensitive", "prev_tool", "t_ns", "burst")


def _pd() -> Any:
    from thoth_nb.analytics.frames import _pd as load

    return load()


def arg_shape(args: Any) -> str:
    """The shape of one call's arguments: sorted `key:type` pairs, e.g. `path:str,recursive:bool`.

    Values are reduced to their JSON type (str, int, float, bool, null, list, dict), so two calls
    with the same keys and value types share a shape whatever the values are. No arguments → "".
    """
    if args is None:
        return ""
    if not isinstance(args, Mapping):
        return _TYPE_NAMES.get(type(args), type(args).__name__)
    names = _TYPE_NAMES
    return ",".join(f"{k}:{names.get(type(args[k]), 'other')}" for k in sorted(args, key=str))


def _strings(value: Any, depth: int = 0) -> list[str]:
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    if depth < 4 and isinstance(value, Mapping):
        for v in value.values():
            out += _strings(v, depth + 1)
    elif depth < 4 and isinstance(value, (list, tuple)):
        for v in value:
            out += _strings(v, depth + 1)
    return out


def _shapes_and_flags(values: Any) -> tuple[Any, np.ndarray]:
    """One pass over the tool arguments: shape codes (a Categorical, see `arg_shape`) and the
    sensitive flag (SENSITIVE_ARGS over the string values, matched by Arrow in one vectorised call)."""
    pd = _pd()
    n = len(values)
    codes = np.empty(n, dtype=np.int64)
    texts: list[str] = [""] * n
    seen: dict[tuple[Any, ...], int] = {}
    names: list[str] = []
    nested = (dict, list, tuple)
    for i, args in enumerate(values):
        if type(args) is dict:
            types = tuple(map(type, args.values()))
            key = (*args, *types)
            code = seen.get(key)
            if code is None:
                code = seen[key] = len(names)
                names.append(arg_shape(args))
            codes[i] = code
            if dict in types or list in types or tuple in types:
                texts[i] = "\x00".join(_strings(args))
            elif str in types:
                texts[i] = "\x00".join([v for v in args.values() if type(v) is str])
        else:
            shape = "" if args is None or (isinstance(args, float) and args != args) else arg_shape(args)
            code = seen.get((shape,))
            if code is None:
                code = seen[(shape,)] = len(names)
                names.append(shape)
            codes[i] = code
            if isinstance(args, str):
                texts[i] = args
            elif isinstance(args, nested):
                texts[i] = "\x00".join(_strings(args))
    unique = sorted(set(names))
    remap = np.array([unique.index(name) for name in names], dtype=np.int64) if names else np.zeros(0, np.int64)
    shapes = pd.Categorical.from_codes(remap[codes] if n else codes, unique or [""])
    return shapes, _matches(texts, SENSITIVE_ARGS)


def _matches(texts: list[str], pattern: re.Pattern[str]) -> np.ndarray:
    """`pattern.search` over many strings: Arrow's regex kernel when pyarrow is there, else Python."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:  # pragma: no cover - pyarrow ships with the pandas extra
        search = pattern.search
        return np.fromiter((bool(t) and search(t) is not None for t in texts), dtype=bool, count=len(texts))
    source = pattern.pattern
    ignore_case = source.startswith("(?i)")
    result = pc.match_substring_regex(pa.array(texts, type=pa.string()), source[4:] if ignore_case else source,
                                      ignore_case=ignore_case)
    return np.asarray(result.to_numpy(zero_copy_only=False), dtype=bool)


def calls(events: pd.DataFrame, *, mode: str | None = None, burst_window_s: float = BURST_WINDOW_S) -> pd.DataFrame:
    """One row per requested tool call (TOOL_CALL_PRE events), ordered by session then time.

    Adds `arg_shape` (see `arg_shape`), `sensitive` (an argument matches SENSITIVE_ARGS),
    `prev_tool` (the session's previous call, "" for the first), `t_ns` (epoch nanoseconds) and
    `burst` = the number of calls of the same session in the trailing window
    (t - burst_window_s, t], this call included. A frame that is already a calls frame is returned as is.
    `mode` keeps only calls made in that enforcement mode (needs an `enforcement_mode` column, which
    is loaded from the embedded store when the frame came from `thoth_nb.events()`).
    """
    pd = _pd()
    if events.attrs.get("thoth_calls") and mode is None:
        return events
    df = events
    if "event_type" in df.columns:
        df = df[(df["event_type"] == "TOOL_CALL_PRE").to_numpy()]
    if mode is not None:
        modes = _column(df, "enforcement_mode", events)
        df = df[(modes.astype(str).str.lower() == mode.lower()).to_numpy()]
    n = len(df)
    sessions = pd.Categorical(df["session_id"].astype(str) if n == 0 else df["session_id"])
    t_ns = _ns(df["occurred_at"]) if "occurred_at" in df.columns else np.arange(n, dtype=np.int64)
    seq = df["seq"].to_numpy(dtype=np.int64, na_value=0) if "seq" in df.columns else np.arange(n, dtype=np.int64)
    order = np.lexsort((seq, t_ns, sessions.codes))
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["seq"] = seq[order]
    if "event_id" in df.columns:
        out["event_id"] = df["event_id"].to_numpy()[order]
    out["occurred_at"] = pd.to_datetime(t_ns[order].view("datetime64[ns]"), utc=True)
    out["session_id"] = pd.Categorical.from_codes(sessions.codes[order], sessions.categories)
    out["agent_id"] = _cat(pd, df["agent_id"] if "agent_id" in df.columns else pd.Series([""] * n), order)
    tools = _cat(pd, df["tool_name"], order)
    out["tool_name"] = tools
    if "tool_args" in df.columns:
        shapes, flags = _shapes_and_flags(df["tool_args"].to_numpy(dtype=object)[order])
        out["arg_shape"] = shapes
        out["sensitive"] = flags
    elif "arg_shape" in df.columns:
        out["arg_shape"] = _cat(pd, df["arg_shape"], order)
        out["sensitive"] = df["sensitive"].to_numpy(dtype=bool)[order] if "sensitive" in df.columns else False
    else:
        out["arg_shape"] = pd.Categorical([None] * n, categories=[""])
        out["sensitive"] = False
    scodes = sessions.codes[order].astype(np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = scodes[1:] != scodes[:-1]
    tcodes = tools.codes.astype(np.int64)
    categories = [str(x) for x in tools.categories]
    if "" not in categories:
        categories.append("")
    prev = np.empty(n, dtype=np.int64)
    prev[1:] = tcodes[:-1]
    prev[first] = categories.index("")
    out["prev_tool"] = pd.Categorical.from_codes(prev, categories)
    ts = t_ns[order]
    out["t_ns"] = ts
    out["burst"] = _trailing_counts(scodes, ts, int(burst_window_s * 1e9))
    if "enforcement_mode" in df.columns:
        out["enforcement_mode"] = df["enforcement_mode"].to_numpy()[order]
    out.attrs["thoth_calls"] = True
    return out  # type: ignore[no-any-return]


def _trailing_counts(groups: np.ndarray, times: np.ndarray, window_ns: int) -> np.ndarray:
    """Calls of the same group in (t - window, t], for rows sorted by (group, time): one searchsorted."""
    if len(times) == 0:
        return np.zeros(0, dtype=np.int64)
    rel = times - times.min()
    span = int(rel.max()) + window_ns + 1
    key = groups * span + rel
    left = np.searchsorted(key, key - window_ns, side="right")
    return np.arange(len(key), dtype=np.int64) - left + 1  # type: ignore[no-any-return]


def _ns(times: Any) -> np.ndarray:
    pd = _pd()
    values = pd.to_datetime(times, utc=True)
    return np.asarray(values.astype("datetime64[ns, UTC]").astype("int64"), dtype=np.int64)


def _cat(pd: Any, values: Any, order: np.ndarray) -> Any:
    cat = values.astype(str).astype("category") if not isinstance(values.dtype, pd.CategoricalDtype) else values
    cat = cat.cat.remove_unused_categories()
    codes = cat.cat.codes.to_numpy()[order]
    return pd.Categorical.from_codes(codes, cat.cat.categories.astype(str))


def _column(df: Any, name: str, source: Any) -> Any:
    """A column of the frame, or loaded from the embedded store's event bodies (`$.<name>`)."""
    if name in df.columns:
        return df[name]
    info = source.attrs.get("thoth") or {}
    if info.get("source") != "store" or "seq" not in df.columns:
        raise ValueError(f"this frame has no {name!r} column; add one or use thoth_nb.events() on the embedded store")
    return load_fields(df, info["path"], info["tenant_id"], {name: f"$.{name}"})[name]


def load_fields(df: Any, path: str, tenant: str, fields: Mapping[str, str]) -> Any:
    """Columns read from the stored event bodies by JSON path (one SQL scan, no JSON parsing in Python)."""
    import sqlite3

    pd = _pd()
    seqs = df["seq"].to_numpy(dtype=np.int64)
    extracts = ", ".join(f"json_extract(body, '{p}')" for p in fields.values())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if len(seqs) == 0:
            rows: list[Any] = []
        else:
            rows = conn.execute(f"SELECT seq, {extracts} FROM events WHERE seq BETWEEN ? AND ? AND +tenant_id = ?",
                                (int(seqs.min()), int(seqs.max()), tenant)).fetchall()
    finally:
        conn.close()
    found = pd.DataFrame(rows, columns=["seq", *fields]).set_index("seq") if rows else pd.DataFrame(
        columns=list(fields))
    return found.reindex(seqs).set_axis(df.index)


# --- the baseline --------------------------------------------------------------------------------


def rate_profile(events: pd.DataFrame, *, mode: str | None = None) -> pd.DataFrame:
    """Per agent: calls, sessions, active minutes, calls per active minute, and the 50/95/99th
    percentiles of `burst` (calls of one session within BURST_WINDOW_S seconds, see `calls()`).

    calls_per_minute = calls / active_minutes, where active_minutes counts the distinct
    (session, minute) buckets with at least one call, so idle gaps between sessions do not dilute it.
    """
    pd = _pd()
    c = calls(events, mode=mode)
    columns = ["agent_id", "calls", "sessions", "active_minutes", "calls_per_minute", "burst_p50", "burst_p95",
               "burst_p99"]
    if len(c) == 0:
        return pd.DataFrame(columns=columns)  # type: ignore[no-any-return]
    minute = c["t_ns"].to_numpy() // 60_000_000_000
    frame = pd.DataFrame({"agent_id": c["agent_id"], "session": c["session_id"].cat.codes, "minute": minute,
                          "burst": c["burst"]})
    grouped = frame.groupby("agent_id", observed=True)
    out = grouped.agg(calls=("burst", "size"), sessions=("session", "nunique"))
    out["active_minutes"] = frame.drop_duplicates(["agent_id", "session", "minute"]).groupby(
        "agent_id", observed=True).size()
    out["calls_per_minute"] = out["calls"] / out["active_minutes"]
    quantiles = grouped["burst"].quantile([0.5, 0.95, 0.99]).unstack()
    out["burst_p50"], out["burst_p95"], out["burst_p99"] = quantiles[0.5], quantiles[0.95], quantiles[0.99]
    return out.reset_index()[columns]  # type: ignore[no-any-return]


def baseline(events: pd.DataFrame, *, mode: str | None = None) -> pd.DataFrame:
    """What is normal for each agent, as one tidy frame with columns
    agent_id, kind, tool_name, prev_tool, key, count, share:

    - kind="tool":   key = tool;  share = n(agent, tool) / n(agent)
    - kind="shape":  key = argument shape (`arg_shape`);  share = n(agent, tool, shape) / n(agent, tool)
    - kind="bigram": key = "prev→tool" for consecutive calls of a session;
                     share = n(agent, prev, tool) / n(agent, prev)  (P(tool | previous tool))
    - kind="rate":   key = calls | sessions | active_minutes | calls_per_minute | burst_p50 | burst_p95 |
                     burst_p99 (see `rate_profile`); count = the value, share = NaN

    `mode="observe"` learns only from observe-mode calls (the usual way to build a baseline before
    enforcing). The frame's attrs record the burst window.
    """
    pd = _pd()
    c = calls(events, mode=mode)
    columns = ["agent_id", "kind", "tool_name", "prev_tool", "key", "count", "share"]
    parts = []
    if len(c):
        tool = c.groupby(["agent_id", "tool_name"], observed=True).size().rename("count").reset_index()
        tool["share"] = tool["count"] / tool.groupby("agent_id", observed=True)["count"].transform("sum")
        tool["kind"], tool["key"], tool["prev_tool"] = "tool", tool["tool_name"].astype(str), ""
        parts.append(tool)
        if c["arg_shape"].notna().any():
            shape = c.groupby(["agent_id", "tool_name", "arg_shape"], observed=True).size().rename(
                "count").reset_index()
            shape["share"] = shape["count"] / shape.groupby(["agent_id", "tool_name"], observed=True)[
                "count"].transform("sum")
            shape["kind"], shape["key"], shape["prev_tool"] = "shape", shape["arg_shape"].astype(str), ""
            parts.append(shape.drop(columns="arg_shape"))
        pairs = c[(c["prev_tool"] != "").to_numpy()]
        if len(pairs):
            bigram = pairs.groupby(["agent_id", "prev_tool", "tool_name"], observed=True).size().rename(
                "count").reset_index()
            bigram["share"] = bigram["count"] / bigram.groupby(["agent_id", "prev_tool"], observed=True)[
                "count"].transform("sum")
            bigram["kind"] = "bigram"
            bigram["key"] = bigram["prev_tool"].astype(str) + "→" + bigram["tool_name"].astype(str)
            parts.append(bigram)
        rates = rate_profile(c).melt(id_vars="agent_id", var_name="key", value_name="count")
        rates["kind"], rates["tool_name"], rates["prev_tool"], rates["share"] = "rate", "", "", np.nan
        parts.append(rates)
    if not parts:
        out = pd.DataFrame(columns=columns)
    else:
        out = pd.concat([p.astype({"agent_id": str, "tool_name": str, "prev_tool": str})[columns] for p in parts],
                        ignore_index=True)
    out["count"] = out["count"].astype("float64")
    out["share"] = out["share"].astype("float64")
    out.attrs["thoth_baseline"] = {"burst_window_s": BURST_WINDOW_S, "mode": mode, "calls": len(c)}
    return out  # type: ignore[no-any-return]
