from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _analytics_data import frame

from thoth_nb.analytics.baseline import baseline
from thoth_nb.analytics.drift import DRIFT_THRESHOLD, drift, js_divergence
from thoth_nb.analytics.synthetic import synthetic_events


def test_js_divergence_known_values() -> None:
    assert js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)  # disjoint support, base 2
    # P = (1, 0), Q = (½, ½): M = (¾, ¼); ½·log2(4/3) + ½·(½·log2(2/3) + ½·log2 2)
    expected = 0.5 * np.log2(4 / 3) + 0.5 * (0.5 * np.log2(2 / 3) + 0.5)
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(expected)
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(js_divergence([0.5, 0.5], [1, 0]))  # symmetric
    assert js_divergence([10, 0], [1, 1]) == pytest.approx(expected)  # counts are normalised
    assert js_divergence([1, 0], [0, 1], base=np.e) == pytest.approx(np.log(2))
    rows = js_divergence([[1, 0], [0.5, 0.5], [0, 0]], [0.5, 0.5])
    assert rows[0] == pytest.approx(expected) and rows[1] == pytest.approx(0) and np.isnan(rows[2])


def test_drift_on_hand_made_windows() -> None:
    rows = [("s", "a", "x", i * 60, None) for i in range(10)] + [("s", "a", "y", 3600 + i * 60, None)
                                                                  for i in range(10)]
    df = frame(rows)
    b = baseline(df.iloc[:10])
    d = drift(df, b, window="1h", min_calls=5)
    assert list(d["calls"]) == [10, 10]
    assert d["js_divergence"].tolist() == pytest.approx([0.0, 1.0])
    assert d["drifted"].tolist() == [False, True]
    assert d["top_tool"].astype(str).tolist()[1] in ("x", "y")
    assert d["window_end"].iloc[0] == pd.Timestamp("2026-03-01T01:00:00Z")


def test_stationary_stream_stays_below_threshold() -> None:
    events = synthetic_events(20_000, seed=3)
    d = drift(events, window="2h", step="30min")
    scored = d.dropna(subset=["js_divergence"])
    assert len(scored) > 100
    assert scored["js_divergence"].max() < DRIFT_THRESHOLD
    assert not scored["drifted"].any()


def test_known_shift_is_detected_within_a_window() -> None:
    events = synthetic_events(20_000, seed=4, drift_at=0.5, span_hours=48)
    d = drift(events, window="2h", step="30min")
    shift = events["occurred_at"].min() + pd.Timedelta(hours=24)
    research = d[d["agent_id"] == "research"]
    before = research[research["window_end"] <= shift]
    assert not before["drifted"].any()
    flagged = research[research["drifted"]]
    assert flagged["window_end"].min() <= shift + pd.Timedelta(hours=2)  # within one window of the shift
    assert flagged["window_end"].min() > shift - pd.Timedelta(hours=1)
    after = research[research["window_start"] >= shift + pd.Timedelta(minutes=30)]
    assert after["drifted"].all()
    assert set(after["top_tool"].astype(str)) <= {"run_code", "web_search", "write_file"}
    assert not d[d["agent_id"] == "support"]["drifted"].any()


def test_rolling_windows_and_bad_arguments() -> None:
    rows = [("s", "a", "x", i * 600, None) for i in range(12)]  # one call every 10 minutes for 2 hours
    d = drift(frame(rows), window="1h", step="10min", min_calls=1)
    assert d["calls"].max() == 6 and len(d) == 12 - 5
    with pytest.raises(ValueError):
        drift(frame(rows), window="10min", step="1h")
    assert drift(frame(rows).iloc[:0]).empty
