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
    """Shape codes (a Categorical, see `arg_shape`) and the sensitive flag of every call's arguments.

    One tight pass in Python (list appends, one dict lookup per row keyed by the argument names and
    value types, `arg_shape` once per distinct key) gathers each call's string values; Arrow's regex
    kernel then flags SENSITIVE_ARGS over all of them in one vectorised call."""
    pd = _pd()
    seen: dict[tuple[Any, ...], tuple[int, bool]] = {}
    get = seen.get
    names: list[str] = []
    codes: list[int] = []
    texts: list[str] = []
    code_of, text_of = codes.append, texts.append
    container = (dict, list, tuple)
    for args in values:
        if type(args) is dict:
            items = args.values()
            key = (*args, *map(type, items))
            found = get(key)
            if found is None:
                nested = any(isinstance(v, container) for v in items)
                found = seen[key] = (len(names), nested)
                names.append(arg_shape(args))
            code_of(found[0])
            text_of("\x00".join(_strings(args)) if found[1] else "\x00".join([v for v in items if type(v) is str]))
            continue
        shape = "" if args is None or (isinstance(args, float) and args != args) else arg_shape(args)
        found = get((shape,))
        if found is None:
            found = seen[(shape,)] = (len(names), False)
            names.append(shape)
        code_of(found[0])
        text_of(args if isinstance(args, str) else "\x00".join(_strings(args)) if isinstance(args, container)
                else "")
    unique = sorted(set(names))
    remap = np.array([unique.index(name) for name in names], dtype=np.int64) if names else np.zeros(0, np.int64)
    array = np.asarray(codes, dtype=np.int64)
    shapes = pd.Categorical.from_codes(remap[array] if len(array) else array, unique or [""])
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
    agents = c["agent_id"].cat.categories.astype(str)
    agent = c["agent_id"].cat.codes.to_numpy().astype(np.int64)
    session = c["session_id"].cat.codes.to_numpy().astype(np.int64)
    n_agents, n_sessions = len(agents), len(c["session_id"].cat.categories)
    minute = c["t_ns"].to_numpy() // 60_000_000_000
    minute = minute - minute.min()
    pair = np.unique(agent * n_sessions + session)
    bucket = np.unique((agent * n_sessions + session) * (int(minute.max()) + 1) + minute)
    calls_n = np.bincount(agent, minlength=n_agents)
    sessions_n = np.bincount(pair // n_sessions, minlength=n_agents)
    minutes_n = np.bincount(bucket // ((int(minute.max()) + 1) * n_sessions), minlength=n_agents)
    burst = c["burst"].to_numpy()
    order = np.argsort(agent, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(calls_n)])
    quantiles = np.full((n_agents, 3), np.nan)
    for a in range(n_agents):
        if calls_n[a]:
            quantiles[a] = np.quantile(burst[order[bounds[a]:bounds[a + 1]]], [0.5, 0.95, 0.99])
    out = pd.DataFrame({"agent_id": agents, "calls": calls_n, "sessions": sessions_n, "active_minutes": minutes_n,
                        "calls_per_minute": calls_n / np.maximum(minutes_n, 1), "burst_p50": quantiles[:, 0],
                        "burst_p95": quantiles[:, 1], "burst_p99": quantiles[:, 2]})
    return out[calls_n > 0].reset_index(drop=True)  # type: ignore[no-any-return]


def _counted(pd: Any, keys: list[tuple[str, Any]], sizes: list[int]) -> Any:
    """Counts of each combination of categorical codes (one bincount), as a frame of the non-zero ones."""
    flat = np.zeros(len(keys[0][1]), dtype=np.int64)
    for (_, codes), size in zip(keys, sizes, strict=True):
        flat = flat * size + codes
    counts = np.bincount(flat, minlength=int(np.prod(sizes)))
    present = np.nonzero(counts)[0]
    out = {}
    rest = present
    for (name, _), size in reversed(list(zip(keys, sizes, strict=True))):
        out[name] = rest % size
        rest = rest // size
    frame = pd.DataFrame({name: out[name] for name, _ in keys})
    frame["count"] = counts[present]
    return frame


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
    enforcing). Counting is one `np.bincount` per kind over the categorical codes.
    """
    pd = _pd()
    c = calls(events, mode=mode)
    columns = ["agent_id", "kind", "tool_name", "prev_tool", "key", "count", "share"]
    parts = []
    if len(c):
        agents = np.asarray(c["agent_id"].cat.categories.astype(str), dtype=object)
        tools = np.asarray(c["tool_name"].cat.categories.astype(str), dtype=object)
        prevs = np.asarray(c["prev_tool"].cat.categories.astype(str), dtype=object)
        a = ("agent", c["agent_id"].cat.codes.to_numpy().astype(np.int64))
        t = ("tool", c["tool_name"].cat.codes.to_numpy().astype(np.int64))
        sizes = [len(agents), len(tools)]
        tool = _counted(pd, [a, t], sizes)
        tool["share"] = tool["count"] / tool.groupby("agent")["count"].transform("sum")
        tool = tool.assign(agent_id=agents[tool["agent"]], tool_name=tools[tool["tool"]], kind="tool", prev_tool="")
        tool["key"] = tool["tool_name"]
        parts.append(tool)
        shape_codes = c["arg_shape"].cat.codes.to_numpy().astype(np.int64)
        if (shape_codes >= 0).any():
            shapes = np.asarray(c["arg_shape"].cat.categories.astype(str), dtype=object)
            keep = shape_codes >= 0
            sub = [(n, v[keep]) for n, v in (a, t, ("shape", shape_codes))]
            shape = _counted(pd, sub, [*sizes, len(shapes)])
            shape["share"] = shape["count"] / shape.groupby(["agent", "tool"])["count"].transform("sum")
            shape = shape.assign(agent_id=agents[shape["agent"]], tool_name=tools[shape["tool"]],
                                 key=shapes[shape["shape"]], kind="shape", prev_tool="")
            parts.append(shape)
        prev_codes = c["prev_tool"].cat.codes.to_numpy().astype(np.int64)
        has_prev = prevs[prev_codes] != ""
        if has_prev.any():
            sub = [(n, v[has_prev]) for n, v in (a, ("prev", prev_codes), t)]
            bigram = _counted(pd, sub, [len(agents), len(prevs), len(tools)])
            bigram["share"] = bigram["count"] / bigram.groupby(["agent", "prev"])["count"].transform("sum")
            bigram = bigram.assign(agent_id=agents[bigram["agent"]], tool_name=tools[bigram["tool"]],
                                   prev_tool=prevs[bigram["prev"]], kind="bigram")
            bigram["key"] = bigram["prev_tool"] + "→" + bigram["tool_name"]
            parts.append(bigram)
        rates = rate_profile(c).melt(id_vars="agent_id", var_name="key", value_name="count")
        rates["kind"], rates["tool_name"], rates["prev_tool"], rates["share"] = "rate", "", "", np.nan
        parts.append(rates)
    if not parts:
        out = pd.DataFrame(columns=columns)
    else:
        out = pd.concat([p[columns].astype({"agent_id": str, "tool_name": str, "prev_tool": str, "key": str})
                         for p in parts], ignore_index=True)
    out["count"] = out["count"].astype("float64")
    out["share"] = out["share"].astype("float64")
    out.attrs["thoth_baseline"] = {"burst_window_s": BURST_WINDOW_S, "mode": mode, "calls": len(c)}
    return out  # type: ignore[no-any-return]
