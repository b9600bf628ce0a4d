"""The live decision feed: widget value while a cell runs, static snapshot after, text fallback, cost."""

from __future__ import annotations

import time
from typing import Any

import pytest

import thoth_nb
from thoth_nb import _context
from thoth_nb._render import DECISION_COLOURS
from thoth_nb.notebook.feed import CellFeed, Feed, args_preview, feed_text

pytest.importorskip("ipywidgets")


class Handle:
    """Stands in for IPython's DisplayHandle: records what the frontend would be sent."""

    def __init__(self, obj: Any) -> None:
        self.shown = obj
        self.updates: list[dict[str, str]] = []

    def update(self, bundle: dict[str, str], raw: bool = False) -> None:
        assert raw
        self.updates.append(bundle)


class Display:
    def __init__(self) -> None:
        self.handles: list[Handle] = []

    def __call__(self, obj: Any, **kwargs: Any) -> Handle:
        assert kwargs.get("display_id") is True
        handle = Handle(obj)
        self.handles.append(handle)
        return handle


@pytest.fixture(autouse=True)
def _no_rate_limits(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in policy steps up after 100 calls a minute; these tests make hundreds."""
    policy = tmp_path / "allow.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    monkeypatch.setenv("THOTH_POLICY", str(policy))


def _tools() -> list[Any]:
    def web_search(query: str) -> str:
        return "results " + query

    def delete_file(path: str) -> str:
        return "deleted"

    return thoth_nb.instrument([web_search, delete_file], agent_id="feedbot", tenant_id="local",
                               approved_scope=["web_search"], enforcement="block")


def _run_calls(tools: list[Any], n: int = 1) -> None:
    for i in range(n):
        tools[0](f"q{i}")
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        tools[1]("/tmp/x")


def _patch_display(monkeypatch: pytest.MonkeyPatch, display: Display) -> None:
    monkeypatch.setattr("thoth_nb.notebook.feed._ipython_display", display)


def test_widget_feed_updates_while_running_and_leaves_a_static_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    feed = Feed("widget", enabled=lambda: True, max_rows=lambda: 50, throttle=0.0)
    _context.add_listener(feed)
    try:
        tools = _tools()
        feed.pre_run_cell()
        tools[0]("cats")
        assert len(display.handles) == 1
        shown = display.handles[0].shown
        assert "application/vnd.jupyter.widget-view+json" in shown
        assert "web_search" in shown["text/plain"]  # frontends without widgets still read the feed
        assert feed.current is not None
        widget = feed.current.widget
        assert "cats" in widget.value and "ALLOW" in widget.value
        with pytest.raises(thoth_nb.ThothPolicyViolation):
            tools[1]("/tmp/x")
        # the widget's value changed while the "cell" was still running: that is what reaches the browser
        assert "delete_file" in widget.value and DECISION_COLOURS["BLOCK"] in widget.value
        assert "2 governed calls" in widget.value
        feed.post_run_cell()
    finally:
        _context.remove_listener(feed)
    snapshot = display.handles[0].updates[-1]
    assert "delete_file" in snapshot["text/html"] and "BLOCK" in snapshot["text/html"]
    assert "delete_file" in snapshot["text/plain"] and "BLOCK" in snapshot["text/plain"]
    assert "path='/tmp/x'" in snapshot["text/plain"]
    # nothing is shown for a cell without governed calls
    feed.pre_run_cell()
    feed.post_run_cell()
    assert len(display.handles) == 1


def test_renders_are_throttled_and_the_last_state_still_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    feed = Feed("widget", enabled=lambda: True, max_rows=lambda: 20, throttle=0.2)
    _context.add_listener(feed)
    try:
        tools = _tools()
        feed.pre_run_cell()
        _run_calls(tools, n=200)
        cell = feed.current
        assert cell is not None
        assert cell.renders < 10  # 402 listener calls, a handful of renders
        time.sleep(0.4)  # the throttle timer renders the pending rows without a new call
        widget = cell.widget
        assert "q199" in widget.value and "delete_file" in widget.value
        assert "201 governed calls" in widget.value and "earlier calls not shown" in widget.value
        feed.post_run_cell()
    finally:
        _context.remove_listener(feed)


def test_html_mode_without_widgets_updates_the_display(monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    feed = Feed("html", enabled=lambda: True, max_rows=lambda: 50, throttle=0.0)
    _context.add_listener(feed)
    try:
        tools = _tools()
        feed.pre_run_cell()
        _run_calls(tools)
        feed.post_run_cell()
    finally:
        _context.remove_listener(feed)
    handle = display.handles[0]
    assert "text/html" in handle.shown and "text/plain" in handle.shown
    assert any("delete_file" in u["text/html"] for u in handle.updates)


def test_text_mode_prints_one_line_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    feed = Feed("text", enabled=lambda: True, max_rows=lambda: 50)
    _context.add_listener(feed)
    try:
        tools = _tools()
        feed.pre_run_cell()
        _run_calls(tools)
        feed.post_run_cell()
        tools[0]("outside a cell")  # no cell running: nothing printed
    finally:
        _context.remove_listener(feed)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "feedbot" in lines[0] and "web_search" in lines[0] and "ALLOW" in lines[0] and "q0" in lines[0]
    assert "delete_file" in lines[1] and "BLOCK" in lines[1] and "not in the approved scope" in lines[1]


def test_held_call_shows_as_held_then_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb._flow import Call

    display = Display()
    _patch_display(monkeypatch, display)
    cell = CellFeed("widget", throttle=10.0, display=display)
    tools = _tools()
    governor = tools[0].__thoth_binding__.governor
    call = Call(governor, "send_email", (), {"to": "x@y"}, {"to": "x@y"})
    from thoth_nb._models import DecisionType, EnforcementDecision

    call.decision = EnforcementDecision(DecisionType.STEP_UP, "needs a human", "step_up", hold_token="h1")
    cell.event("decided", Call(governor, "web_search", (), {}, None))  # opens the widget
    cell.event("held", call)
    widget = cell.widget
    assert "STEP_UP held" in widget.value and "waiting" in widget.value  # shown at once, despite the throttle
    call.decision = EnforcementDecision(DecisionType.ALLOW, "approved by ann", "step_up_approved")
    cell.event("decided", call)
    cell.event("finished", call)
    cell.close()
    final = display.handles[0].updates[-1]["text/plain"]
    assert "STEP_UP held" not in final and "approved by ann" not in final.split("send_email")[0]
    assert "send_email" in final and "ALLOW" in final


def test_args_preview_is_short_and_cheap() -> None:
    huge = {"data": list(range(1_000_000)), "text": "x" * 10_000, "nested": {"a": {"b": {"c": 1}}}}
    started = time.perf_counter()
    preview = args_preview(huge)
    assert time.perf_counter() - started < 0.01
    assert len(preview) <= 60 and preview.startswith("data=[0, 1, 2, 3")
    assert feed_text([]) .startswith("thoth · 0 governed calls")


def test_feed_cost_per_call_is_under_two_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    tools = _tools()
    n = 300

    def timed() -> float:
        started = time.perf_counter()
        for i in range(n):
            tools[0](f"q{i}")
        return (time.perf_counter() - started) / n

    timed()  # warm up
    bare = min(timed() for _ in range(3))
    feed = Feed("widget", enabled=lambda: True, max_rows=lambda: 50, throttle=0.1)
    _context.add_listener(feed)
    try:
        feed.pre_run_cell()
        with_feed = min(timed() for _ in range(3))
        feed.post_run_cell()
    finally:
        _context.remove_listener(feed)
    cost_ms = (with_feed - bare) * 1000
    print(f"feed cost per governed call: {cost_ms:.3f} ms (bare {bare * 1000:.3f} ms)")
    assert cost_ms < 2.0


def test_nested_cells_share_the_outer_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    feed = Feed("widget", enabled=lambda: True, max_rows=lambda: 50, throttle=0.0)
    _context.add_listener(feed)
    try:
        tools = _tools()
        feed.pre_run_cell()
        feed.pre_run_cell()  # %%capture runs the cell body as a cell of its own
        tools[0]("inner")
        feed.post_run_cell()
        assert feed.current is not None  # the outer cell is still running
        tools[0]("outer")
        feed.post_run_cell()
        assert feed.current is None
    finally:
        _context.remove_listener(feed)
    assert len(display.handles) == 1
    final = display.handles[0].updates[-1]["text/plain"]
    assert "inner" in final and "outer" in final


def test_long_cells_keep_few_rows_but_count_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()
    _patch_display(monkeypatch, display)
    cell = CellFeed("widget", max_rows=10, throttle=60.0, display=display)
    feed = Feed("widget", enabled=lambda: True, max_rows=lambda: 10, throttle=60.0)
    feed.current = cell
    feed.pre_run_cell()
    _context.add_listener(feed)
    try:
        _run_calls(_tools(), n=1000)
    finally:
        _context.remove_listener(feed)
    assert len(cell.ordered) <= 200  # memory stays bounded however long the cell runs
    feed.post_run_cell()
    text = display.handles[0].updates[-1]["text/plain"]
    assert text.startswith("thoth · 1001 governed calls · 1000 ALLOW · 1 BLOCK")
    assert "… 991 earlier calls not shown" in text and "q999" in text
