from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _analytics_data import frame

from thoth_nb.analytics.anomaly import FACTORS, WEIGHTS, anomaly_scores, rarity, session_scores
from thoth_nb.analytics.baseline import baseline
from thoth_nb.analytics.synthetic import EXFIL_SESSION, synthetic_events


def test_rarity() -> None:
    assert rarity([0.0, 0.5, 0.1, 0.01, 0.001, 1e-4, 1e-6]).tolist() == pytest.approx(
        [1.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    assert np.isnan(rarity([np.nan])[0])


def normal_rows(n: int = 200) -> list:
    rows = []
    for i in range(n):
        session = f"n{i // 4}"
        tool = ["search", "read", "search", "summarize"][i % 4]
        args = {"q": "x"} if tool == "search" else {"path": "docs/a.md"} if tool == "read" else {"text": "t"}
        rows.append((session, "a", tool, i * 30.0, args))
    return rows


def test_each_factor_on_known_calls() -> None:
    b = baseline(frame(normal_rows()))
    probe = frame([
        ("p1", "a", "search", 0, {"q": "x"}),            # normal
        ("p1", "a", "deploy", 30, {"env": "prod"}),      # never-seen tool, shape and search→deploy
        ("p2", "a", "search", 0, {"q": 1}),              # known tool, unseen argument shape
        ("p3", "a", "read", 0, {"path": "docs/a.md"}),   # a session's first call: no sequence
        ("p3", "a", "read", 30, {"path": "docs/a.md"}),  # read is always followed by search: read → read is unusual
        ("p4", "a", "summarize", 0, {"text": "t"}),
        ("p4", "a", "search", 30, {"q": "x"}),           # summarize is never a predecessor: no evidence, 0
    ])
    s = anomaly_scores(probe, b)

    def row(session: str, tool: str) -> Any:
        return s[(s["session_id"] == session) & (s["tool_name"] == tool)].iloc[0]

    normal = row("p1", "search")
    assert normal["score"] == 0.0 and normal["top_factor"] == ""
    deploy = row("p1", "deploy")
    assert (deploy["rare_tool"], deploy["unseen_shape"], deploy["unusual_sequence"]) == (1.0, 1.0, 1.0)
    keep = (1 - WEIGHTS["rare_tool"]) * (1 - WEIGHTS["unseen_shape"]) * (1 - WEIGHTS["unusual_sequence"])
    assert deploy["score"] == pytest.approx(100 * (1 - keep))  # noisy-OR: 84.4
    assert deploy["top_factor"] == "rare_tool"
    shape = row("p2", "search")
    assert (shape["rare_tool"], shape["unseen_shape"]) == (0.0, 1.0)
    assert shape["score"] == pytest.approx(100 * WEIGHTS["unseen_shape"])
    seq = s[s["session_id"] == "p3"]
    assert seq["unusual_sequence"].tolist() == [0.0, 1.0]
    assert s[s["session_id"] == "p4"]["unusual_sequence"].tolist() == [0.0, 0.0]
    for factor in FACTORS:
        assert s[factor].between(0, 1).all()


def test_rate_burst_factor() -> None:
    b = baseline(frame(normal_rows()))  # one call every 30 s: burst p99 = 1
    burst = frame([("b", "a", "search", i * 0.1, {"q": "x"}) for i in range(5)])
    s = anomaly_scores(burst, b)
    assert s["burst"].tolist() == [1, 2, 3, 4, 5]
    assert s["rate_burst"].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])  # clip((r/1 - 1)/2, 0, 1)


def test_planted_exfiltration_ranks_first() -> None:
    events = synthetic_events(20_000, seed=7, exfiltration=True)
    sessions = session_scores(events)
    top = sessions.iloc[0]
    assert top["session_id"] == EXFIL_SESSION and top["top_factor"] == "exfiltration"
    assert top["exfiltration"] == 1.0 and top["score"] >= 90
    assert sessions.iloc[1]["score"] < top["score"]
    calls = anomaly_scores(events)
    worst = calls.sort_values("score", ascending=False).iloc[0]
    assert (worst["session_id"], worst["tool_name"]) == (EXFIL_SESSION, "send_email")
    # sending mail is normal for the support agent; only the earlier secrets read makes it anomalous
    assert calls[(calls["tool_name"] == "send_email") & (calls["session_id"] != EXFIL_SESSION)][
        "exfiltration"].max() == 0.0


def test_scores_against_an_observe_baseline_and_empty() -> None:
    history = synthetic_events(5_000, seed=1)
    b = baseline(history, mode="observe")
    assert session_scores(history.iloc[:0], b).empty
    scored = anomaly_scores(synthetic_events(2_000, seed=2, drift_at=0.0), b)
    by_tool = scored.groupby("tool_name", observed=True)["score"].mean()
    assert by_tool["run_code"] > 50 > by_tool["web_search"]
