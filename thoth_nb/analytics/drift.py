"""Drift: how far a time window's tool usage has moved from an agent's baseline (Jensen-Shannon).

Counts are binned once per (agent, step, tool) with one `np.bincount`, rolling windows are
differences of a cumulative sum, and the divergence is computed for every window at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from thoth_nb.analytics.baseline import baseline as learn_baseline
from thoth_nb.analytics.baseline import calls

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DRIFT_THRESHOLD", "drift", "js_divergence"]

#: A window whose divergence from the baseline reaches this is flagged `drifted`. For k tools and n
#: calls, sampling noise alone gives E[JS] ≈ (k-1) / (8 n ln 2) (0.004 for 5 tools and 200 calls).
DRIFT_THRESHOLD = 0.05
_MAX_CELLS = 60_000_000


def js_divergence(p: Any, q: Any, *, base: float = 2.0) -> np.ndarray:
    """Jensen-Shannon divergence between distributions along the last axis (rows are normalised).

        M = (P + Q) / 2,   JS(P, Q) = ½ Σ p·log_b(p/m) + ½ Σ q·log_b(q/m),   0·log 0 = 0

    Symmetric, 0 for identical distributions, and at most log_b(2): with the default base 2 it lies
    in [0, 1] and is 1 exactly for distributions with disjoint support. A row with no mass is NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = np.broadcast_arrays(p, q)
    ps = p.sum(axis=-1, keepdims=True)
    qs = q.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / ps
        q = q / qs
        m = (p + q) / 2.0
        kl_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) / np.where(m > 0, m, 1.0)), 0.0).sum(axis=-1)
    js = (0.5 * kl_p + 0.5 * kl_q) / np.log(base)
    empty = (ps[..., 0] <= 0) | (qs[..., 0] <= 0)
    js = np.where(empty, np.nan, np.clip(js, 0.0, None))
    return np.asarray(js)


def _duration_ns(value: Any) -> int:
    from thoth_nb.analytics.baseline import _pd

    pd = _pd()
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    return int(pd.Timedelta(value).value)


def drift(
    events: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    *,
    window: Any = "1h",
    step: Any = None,
    threshold: float = DRIFT_THRESHOLD,
    min_calls: int = 20,
    train: float = 0.25,
    mode: str | None = None,
) -> pd.DataFrame:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of each window's tool-usage distribution from
    the agent's baseline, over time.

    For agent a and the window W ending at each `step` (rolling when step < window):
        P_W(tool) = n_W(a, tool) / n_W(a),   Q(tool) = baseline share of the tool for a,
        js_divergence = JS(P_W, Q)  (see `js_divergence`), drifted = js ≥ threshold and n_W ≥ min_calls.
    Columns: agent_id, window_start, window_end, calls, js_divergence, drifted, top_tool (the tool
    whose share moved most), top_tool_share, top_tool_baseline. Windows with no calls are left out;
    windows with fewer than `min_calls` calls get NaN.
    `baseline=None` learns one from the earliest `train` fraction of the time span of `events`.
    `window`/`step` take pandas offsets ("30min", "1h") or seconds.
    """
    from thoth_nb.analytics.baseline import _pd

    pd = _pd()
    c = calls(events, mode=mode)
    columns = ["agent_id", "window_start", "window_end", "calls", "js_divergence", "drifted", "top_tool",
               "top_tool_share", "top_tool_baseline"]
    if len(c) == 0:
        return pd.DataFrame(columns=columns)  # type: ignore[no-any-return]
    t = c["t_ns"].to_numpy()
    t0 = int(t.min())
    if baseline is None:
        cut = t0 + (int(t.max()) - t0) * train
        baseline = learn_baseline(c[(t <= cut)].reset_index(drop=True).pipe(_as_calls))
    window_ns = _duration_ns(window)
    step_ns = _duration_ns(step) if step is not None else window_ns
    if step_ns <= 0 or window_ns < step_ns:
        raise ValueError("need 0 < step ≤ window")
    w = -(-window_ns // step_ns)
    bins = (t - t0) // step_ns
    n_bins = int(bins.max()) + 1
    agents = c["agent_id"].cat.categories.astype(str)
    tools = list(c["tool_name"].cat.categories.astype(str))
    base_tools = baseline[baseline["kind"] == "tool"]
    tools += sorted(set(base_tools["tool_name"].astype(str)) - set(tools))
    n_agents, n_tools = len(agents), len(tools)
    if n_agents * n_bins * n_tools > _MAX_CELLS:
        raise ValueError(f"{n_bins} steps x {n_tools} tools x {n_agents} agents is too fine: use a larger step")
    flat = (c["agent_id"].cat.codes.to_numpy().astype(np.int64) * n_bins + bins) * n_tools + \
        c["tool_name"].cat.codes.to_numpy().astype(np.int64)
    counts = np.bincount(flat, minlength=n_agents * n_bins * n_tools).reshape(n_agents, n_bins, n_tools)
    cum = np.cumsum(counts, axis=1)
    ends = np.arange(min(w, n_bins) - 1, n_bins)
    windowed = cum[:, ends, :].astype(np.float64)
    starts = ends - w
    valid = starts >= 0
    windowed[:, valid, :] -= cum[:, starts[valid], :]
    q = np.zeros((n_agents, n_tools))
    agent_index = {a: i for i, a in enumerate(agents)}
    tool_index = {name: i for i, name in enumerate(tools)}
    for agent, tool, share in zip(base_tools["agent_id"].astype(str), base_tools["tool_name"].astype(str),
                                  base_tools["share"], strict=True):
        if agent in agent_index:
            q[agent_index[agent], tool_index[tool]] = share
    n = windowed.sum(axis=2)
    js = js_divergence(windowed, q[:, None, :])
    js = np.where(n >= min_calls, js, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = windowed / n[..., None]
    moved = np.abs(np.nan_to_num(p) - q[:, None, :])
    top = moved.argmax(axis=2)
    top_share = np.take_along_axis(np.nan_to_num(p), top[..., None], axis=2)[..., 0]
    top_base = q[np.arange(n_agents)[:, None], top]
    a_idx, e_idx = np.nonzero(n > 0)
    end_bins = ends[e_idx]
    out = pd.DataFrame({
        "agent_id": pd.Categorical(agents[a_idx]),
        "window_start": _utc(t0 + np.maximum(end_bins - w + 1, 0) * step_ns),
        "window_end": _utc(t0 + (end_bins + 1) * step_ns),
        "calls": n[a_idx, e_idx].astype(np.int64),
        "js_divergence": js[a_idx, e_idx],
        "top_tool": pd.Categorical(np.asarray(tools, dtype=object)[top[a_idx, e_idx]]),
        "top_tool_share": top_share[a_idx, e_idx],
        "top_tool_baseline": top_base[a_idx, e_idx],
    })
    out.insert(5, "drifted", (out["js_divergence"] >= threshold).to_numpy())
    out = out.sort_values(["agent_id", "window_end"], kind="stable").reset_index(drop=True)
    out.attrs["thoth_drift"] = {"window_ns": window_ns, "step_ns": step_ns, "threshold": threshold}
    return out  # type: ignore[no-any-return]


def _utc(ns: np.ndarray) -> Any:
    from thoth_nb.analytics.baseline import _pd

    return _pd().to_datetime(ns.astype(np.int64).view("datetime64[ns]"), utc=True)


def _as_calls(frame: pd.DataFrame) -> pd.DataFrame:
    frame.attrs["thoth_calls"] = True
    return frame
