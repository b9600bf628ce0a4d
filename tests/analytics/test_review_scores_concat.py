"""`session_scores` accepts `anomaly_scores()` output, also several scored frames concatenated (their
row labels repeat): it groups by session, so row labels must not matter."""

from __future__ import annotations

import pytest

pd = pytest.importorskip("pandas")

from _analytics_data import frame  # noqa: E402

from thoth_nb.analytics.anomaly import anomaly_scores, session_scores  # noqa: E402
from thoth_nb.analytics.baseline import baseline  # noqa: E402


def test_session_scores_of_concatenated_scored_frames() -> None:
    day1 = frame([("s1", "a", "search", i, {"q": "x"}) for i in range(20)])
    day2 = frame([("s2", "a", "search", i, {"q": "x"}) for i in range(5)] + [("s2", "a", "delete", 6, None)])
    base = baseline(day1)
    scored = pd.concat([anomaly_scores(day1, base), anomaly_scores(day2, base)])
    assert not scored.index.is_unique
    out = session_scores(scored).set_index("session_id")
    assert out.loc["s2", "top_tool"] == "delete" and out.loc["s2", "calls"] == 6
    assert out.loc["s1", "calls"] == 20 and out.loc["s2", "score"] > out.loc["s1", "score"]
