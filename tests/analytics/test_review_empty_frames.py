"""Frames a notebook user gets on an empty store and after filtering a frame to nothing: the same dtypes
and accessor behaviour as with rows, so code written on a full frame does not break on an empty one."""

from __future__ import annotations

from typing import Any

import pytest

pd = pytest.importorskip("pandas")

import thoth_nb  # noqa: E402


def _tools() -> dict[str, Any]:
    def web_search(query: str) -> str:
        return "results for " + query

    def delete_file(path: str) -> str:
        return "deleted " + path

    return thoth_nb.wrap_openai_tools({"web_search": web_search, "delete_file": delete_file}, agent_id="research",
                                      tenant_id="local", approved_scope=["web_search"], session_id="s1")


def _one_of_each() -> None:
    tools = _tools()
    tools["web_search"](query="q")
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        tools["delete_file"](path="/x")
    thoth_nb.flush()


def test_text_columns_of_an_empty_events_frame_are_text() -> None:
    _one_of_each()
    full = thoth_nb.events()
    empty = thoth_nb.events(agent_id="nobody")
    assert len(empty) == 0
    for column in ("event_id", "violation_id"):
        assert empty[column].dtype == full[column].dtype, column
        assert empty[column].str.startswith("local:").tolist() == []  # `.str` works, as on the full frame


def test_text_columns_of_an_events_frame_on_an_empty_store_are_text() -> None:
    empty = thoth_nb.events()
    assert len(empty) == 0
    assert str(empty["occurred_at"].dtype) == "datetime64[us, UTC]"
    for column in ("event_id", "violation_id"):
        assert not pd.api.types.is_numeric_dtype(empty[column]), column


def test_timeline_of_a_frame_filtered_to_nothing_is_empty() -> None:
    _one_of_each()
    df = thoth_nb.events()
    nothing = df[df.tool_name == "no_such_tool"]
    timeline = nothing.thoth.timeline()
    assert len(timeline) == 0
    assert list(timeline.columns) == list(df.thoth.timeline().columns)
    assert len(thoth_nb.events(agent_id="nobody").thoth.timeline()) == 0
