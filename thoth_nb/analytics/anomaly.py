"""Anomaly scores, 0-100, per call and per session, explained by their contributing factors.

Each factor is a number in [0, 1] computed from the agent's baseline (see `baseline.baseline`):

- rare_tool:        rarity(share of this tool among the agent's baseline calls)
- unseen_shape:     rarity(share of this argument shape among the agent's baseline calls of the tool)
- rate_burst:       clip((burst / burst_p99 - 1) / 2, 0, 1): calls of the session in the last
                    BURST_WINDOW_S seconds against the agent's baseline 99th percentile (3x p99 → 1)
- unusual_sequence: rarity(P(tool | previous tool)) from the baseline bigrams, when the previous
                    tool is a known predecessor for the agent (≥ `min_support` baseline bigrams)
- exfiltration:     1 when the tool sends data out (EGRESS_TOOLS) and an earlier call of the same
                    session touched secrets (SENSITIVE_ARGS), e.g. read secrets/ then send_email

with rarity(s) = 1 if s = 0 (never seen) else clip((-log10 s - 1) / 3, 0, 1): a share ≥ 10 % scores
0, 1 % scores 0.33, 0.1 % 0.67, ≤ 0.01 % 1. The call score is a noisy-OR of the weighted factors,

    score = 100 · (1 - Π_i (1 - w_i · f_i)),

so one strong factor is enough for a high score and several weak ones add up; the weights
(`WEIGHTS`) are the score a factor alone gives at full strength.

unseen_shape and exfiltration need the tool arguments: `thoth_nb.events()` loads them for up to
50,000 rows; for bigger frames call `df.thoth.with_args()` first, or those two factors stay 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from thoth_nb.analytics.baseline import EGRESS_TOOLS, _pd, calls
from thoth_nb.analytics.baseline import baseline as learn_baseline

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FACTORS", "WEIGHTS", "anomaly_scores", "rarity", "session_scores"]

FACTORS = ("rare_tool", "unseen_shape", "rate_burst", "unusual_sequence", "exfiltration")
WEIGHTS: dict[str, float] = {"rare_tool": 0.6, "unseen_shape": 0.35, "rate_burst": 0.6, "unusual_sequence": 0.4,
                             "exfiltration": 0.95}
_DEFAULT_BURST_P99 = 10.0


def rarity(share: Any) -> np.ndarray:
    """1 for a share of 0 (never seen), else clip((-log10 share - 1) / 3, 0, 1); NaN stays NaN."""
    s = np.asarray(share, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip((-np.log10(np.where(s > 0, s, 1.0)) - 1.0) / 3.0, 0.0, 1.0)
    return np.asarray(np.where(s > 0, r, np.where(np.isnan(s), np.nan, 1.0)))


def _lookup(keys: Sequence[Any], table: Sequence[Any], values: Any) -> np.ndarray:
    """values[i] for the table row whose key columns equal row j's keys; NaN where none does.

    `keys` are categorical columns of the calls frame; `table` the matching string columns of the
    baseline. Matching is on integer codes (one `get_indexer` over int64), not on strings per row."""
    pd = _pd()
    call_key = np.zeros(len(keys[0]), dtype=np.int64)
    table_key = np.zeros(len(table[0]), dtype=np.int64)
    ok = np.ones(len(table[0]), dtype=bool)
    for column, tcol in zip(keys, table, strict=True):
        categories = pd.Index(column.cat.categories.astype(str))
        size = len(categories) + 1
        codes = column.cat.codes.to_numpy().astype(np.int64)
        tcodes = categories.get_indexer(pd.Index(np.asarray(tcol, dtype=object).astype(str)))
        ok &= tcodes >= 0
        call_key = call_key * size + codes
        table_key = table_key * size + tcodes
    vals = np.asarray(values, dtype=np.float64)[ok]
    index = pd.Index(table_key[ok])
    if not index.is_unique:
        keep = ~index.duplicated()
        index, vals = index[keep], vals[keep]
    pos = index.get_indexer(call_key)
    return np.where(pos >= 0, vals[pos] if len(vals) else np.nan, np.nan)


def anomaly_scores(
    events: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    min_support: int = 5,
    mode: str | None = None,
) -> pd.DataFrame:
    """One row per call with its anomaly `score` (0-100, formula in the module docstring), the five
    factor columns (each in [0, 1]) and `top_factor` (the factor contributing most, "" for score 0).

    `baseline=None` scores the events against a baseline learnt from the same events (rare things
    still stand out; pass an observe-mode baseline to score new traffic against known-good traffic).
    """
    pd = _pd()
    c = calls(events, mode=mode)
    if baseline is None:
        baseline = learn_baseline(c)
    w = {**WEIGHTS, **(weights or {})}
    out = c[[col for col in ("seq", "event_id", "occurred_at", "session_id", "agent_id", "tool_name", "prev_tool",
                             "arg_shape", "burst") if col in c.columns]].copy()
    n = len(c)
    kind = baseline["kind"].to_numpy()
    tool_rows = baseline[kind == "tool"]
    share = _lookup([c["agent_id"], c["tool_name"]], [tool_rows["agent_id"], tool_rows["tool_name"]],
                    tool_rows["share"]) if n else np.zeros(0)
    known_agent = _lookup([c["agent_id"]], [tool_rows["agent_id"]], np.ones(len(tool_rows))) if n else np.zeros(0)
    out["rare_tool"] = np.where(np.isnan(known_agent), 1.0, rarity(np.nan_to_num(share, nan=0.0)))
    shape_rows = baseline[kind == "shape"]
    if len(shape_rows) and n and c["arg_shape"].notna().any():
        s_share = _lookup([c["agent_id"], c["tool_name"], c["arg_shape"]],
                          [shape_rows["agent_id"], shape_rows["tool_name"], shape_rows["key"]], shape_rows["share"])
        out["unseen_shape"] = np.where(c["arg_shape"].isna().to_numpy(), 0.0, rarity(np.nan_to_num(s_share, nan=0.0)))
    else:
        out["unseen_shape"] = 0.0
    rate_rows = baseline[(kind == "rate") & (baseline["key"] == "burst_p99").to_numpy()]
    fallback = float(rate_rows["count"].max()) if len(rate_rows) else _DEFAULT_BURST_P99
    p99 = _lookup([c["agent_id"]], [rate_rows["agent_id"]], rate_rows["count"]) if n else np.zeros(0)
    p99 = np.maximum(np.nan_to_num(p99, nan=fallback), 1.0)
    out["rate_burst"] = np.clip((c["burst"].to_numpy() / p99 - 1.0) / 2.0, 0.0, 1.0)
    bigrams = baseline[kind == "bigram"]
    if len(bigrams) and n:
        cond = _lookup([c["agent_id"], c["prev_tool"], c["tool_name"]],
                       [bigrams["agent_id"], bigrams["prev_tool"], bigrams["tool_name"]], bigrams["share"])
        support = bigrams.groupby(["agent_id", "prev_tool"], observed=True)["count"].sum().reset_index()
        known = _lookup([c["agent_id"], c["prev_tool"]], [support["agent_id"], support["prev_tool"]],
                        support["count"])
        known_prev = np.nan_to_num(known, nan=0.0) >= min_support
        out["unusual_sequence"] = np.where(known_prev, rarity(np.nan_to_num(cond, nan=0.0)), 0.0)
    else:
        out["unusual_sequence"] = 0.0
    out["exfiltration"] = _exfiltration(pd, c)
    factors = np.column_stack([out[f].to_numpy(dtype=np.float64) for f in FACTORS]) if n else np.zeros((0, 5))
    weighted = factors * np.array([w[f] for f in FACTORS])
    out["score"] = 100.0 * (1.0 - np.prod(1.0 - np.clip(weighted, 0.0, 1.0), axis=1))
    top = weighted.argmax(axis=1) if n else np.zeros(0, dtype=int)
    names = np.array(FACTORS, dtype=object)
    out["top_factor"] = pd.Categorical(np.where(out["score"].to_numpy() > 0, names[top] if n else names[:0], ""))
    out.attrs["thoth_anomaly"] = {"weights": w}
    return out


def _exfiltration(pd: Any, c: Any) -> np.ndarray:
    n = len(c)
    if n == 0:
        return np.zeros(0)
    tools = c["tool_name"].cat.categories.astype(str)
    egress_tool = np.array([bool(EGRESS_TOOLS.search(t)) for t in tools], dtype=bool)
    egress = egress_tool[c["tool_name"].cat.codes.to_numpy()]
    sensitive = c["sensitive"].to_numpy(dtype=bool)
    sessions = c["session_id"].cat.codes.to_numpy()
    running = pd.Series(sensitive.astype(np.int64)).groupby(sessions).cumsum().to_numpy()
    earlier = (running - sensitive) > 0
    return (egress & earlier).astype(np.float64)  # type: ignore[no-any-return]


def session_scores(
    events: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    *,
    flag_at: float = 50.0,
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per session, most anomalous first: score = the highest call score in the session,
    mean_score, calls, flagged (calls scoring ≥ `flag_at`), each factor's maximum over the session,
    and top_factor / top_tool of the highest-scoring call. Accepts events or `anomaly_scores()` output."""
    pd = _pd()
    scored = events if "score" in events.columns and "exfiltration" in events.columns else anomaly_scores(
        events, baseline, weights=weights)
    columns = ["session_id", "agent_id", "first_seen", "last_seen", "calls", "score", "mean_score", "flagged",
               *FACTORS, "top_factor", "top_tool"]
    if len(scored) == 0:
        return pd.DataFrame(columns=columns)  # type: ignore[no-any-return]
    # positions, not the caller's labels: concatenated scored frames repeat them (`idxmax` below)
    frame = scored.assign(_flag=scored["score"].to_numpy() >= flag_at).reset_index(drop=True)
    grouped = frame.groupby("session_id", observed=True, sort=False)
    agg: dict[str, Any] = {"agent_id": ("agent_id", "first"), "first_seen": ("occurred_at", "min"),
                           "last_seen": ("occurred_at", "max"), "calls": ("score", "size"),
                           "score": ("score", "max"), "mean_score": ("score", "mean"), "flagged": ("_flag", "sum")}
    agg.update({f: (f, "max") for f in FACTORS})
    out = grouped.agg(**agg)
    best = frame.loc[grouped["score"].idxmax().to_numpy(), ["session_id", "top_factor", "tool_name"]]
    best = best.set_index("session_id")
    out["top_factor"] = best["top_factor"].astype(str).reindex(out.index).to_numpy()
    out["top_tool"] = best["tool_name"].astype(str).reindex(out.index).to_numpy()
    out = out.reset_index().sort_values(["score", "flagged"], ascending=False, kind="stable").reset_index(drop=True)
    out["flagged"] = out["flagged"].astype(np.int64)
    return out[columns]  # type: ignore[no-any-return]
