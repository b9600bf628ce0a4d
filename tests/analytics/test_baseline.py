from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from _analytics_data import frame

import thoth_nb
from thoth_nb.analytics.baseline import arg_shape, baseline, calls, rate_profile

ROWS = [
    ("s1", "a", "search", 0, {"q": "x", "n": 3}),
    ("s1", "a", "read", 1, {"path": "docs/a.md"}),
    ("s1", "a", "search", 2, {"q": "y", "n": 5}),
    ("s1", "a", "read", 30, {"path": "secrets/key.pem"}),
    ("s2", "a", "search", 100, {"q": "z"}),
    ("s2", "a", "search", 101, {"q": "z", "n": 1}),
    ("s3", "b", "mail", 5, {"to": "t@x", "cc": ["a"]}),
]


def test_arg_shape() -> None:
    assert arg_shape({"q": "x", "n": 3}) == "n:int,q:str"
    assert arg_shape({"n": 3, "q": "x"}) == "n:int,q:str"  # key order does not matter
    assert arg_shape({"a": None, "b": [1], "c": {"d": 1}, "e": 1.5, "f": True}) == \
        "a:null,b:list,c:dict,e:float,f:bool"
    assert arg_shape(None) == "" and arg_shape({}) == ""


def test_calls_order_prev_tool_burst_and_sensitive() -> None:
    df = frame(ROWS).sample(frac=1.0, random_state=1)  # order must not depend on the input's
    c = calls(df)
    s1 = c[c["session_id"] == "s1"]
    assert list(s1["tool_name"].astype(str)) == ["search", "read", "search", "read"]
    assert list(s1["prev_tool"].astype(str)) == ["", "search", "read", "search"]
    assert list(s1["burst"]) == [1, 2, 3, 1]  # calls of the session in the trailing 10 s
    assert list(s1["sensitive"]) == [False, False, False, True]
    assert list(s1["arg_shape"].astype(str)) == ["n:int,q:str", "path:str", "n:int,q:str", "path:str"]
    assert c.loc[c["session_id"] == "s3", "arg_shape"].astype(str).tolist() == ["cc:list,to:str"]


def test_baseline_shares() -> None:
    b = baseline(frame(ROWS))
    tools = b[(b["kind"] == "tool") & (b["agent_id"] == "a")].set_index("key")["share"]
    assert tools.to_dict() == pytest.approx({"read": 2 / 6, "search": 4 / 6})
    assert b[b["kind"] == "tool"].groupby("agent_id")["share"].sum().tolist() == pytest.approx([1.0, 1.0])
    shapes = b[(b["kind"] == "shape") & (b["agent_id"] == "a") & (b["tool_name"] == "search")].set_index("key")
    assert shapes["share"].to_dict() == pytest.approx({"n:int,q:str": 3 / 4, "q:str": 1 / 4})
    bigrams = b[(b["kind"] == "bigram") & (b["agent_id"] == "a")].set_index("key")
    # P(next | search): read twice, search once; P(next | read): search once
    assert bigrams["share"].to_dict() == pytest.approx({"read→search": 1.0, "search→read": 2 / 3,
                                                        "search→search": 1 / 3})
    rates = b[(b["kind"] == "rate") & (b["agent_id"] == "a")].set_index("key")["count"]
    assert rates["calls"] == 6 and rates["sessions"] == 2


def test_rate_profile() -> None:
    r = rate_profile(frame(ROWS)).set_index("agent_id")
    assert r.loc["a", "active_minutes"] == 2  # s1 in minute 0, s2 in minute 1
    assert r.loc["a", "calls_per_minute"] == 3.0
    assert r.loc["a", "burst_p99"] == pytest.approx(np.quantile([1, 2, 3, 1, 1, 2], 0.99))


def test_mode_filter_and_empty() -> None:
    df = pd.concat([frame(ROWS[:2], mode="observe"), frame(ROWS[2:], mode="block")], ignore_index=True)
    assert baseline(df, mode="observe").query("kind == 'tool'")["count"].sum() == 2
    empty = baseline(frame(ROWS).iloc[:0])
    assert list(empty.columns) == ["agent_id", "kind", "tool_name", "prev_tool", "key", "count", "share"]
    assert len(empty) == 0


def test_baseline_from_the_embedded_store_in_observe_mode() -> None:
    ran: list[str] = []

    def search(q: str) -> str:
        ran.append(q)
        return q

    def read_file(path: str) -> str:
        return path

    tools = [search, read_file]
    base = {"agent_id": "obs", "approved_scope": ["search"], "tenant_id": "t", "session_id": str(uuid.uuid4())}
    thoth_nb.instrument(tools, enforcement="observe", **base)
    for i in range(3):
        tools[0](q=f"q{i}")
    tools[1](path="/etc/passwd")  # out of scope, but observe mode runs it
    thoth_nb.instrument(tools, enforcement="block", **base)
    tools[0](q="later")
    thoth_nb.flush()
    events = thoth_nb.events(tenant_id="t")
    b = baseline(events, mode="observe")  # enforcement_mode is read from the stored events
    counts = b[b["kind"] == "tool"].set_index("key")["count"].to_dict()
    assert counts == {"search": 3.0, "read_file": 1.0}
    assert baseline(events).query("kind == 'tool'")["count"].sum() == 5
