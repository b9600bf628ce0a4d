"""The live decision feed: every governed call of the running cell, listed under it as it happens.

One `Feed` is a `_context` listener for the whole kernel; it opens a `CellFeed` lazily at the first
governed call of a cell (cells without calls show nothing) and closes it when the cell finishes.

Where it shows (STYLE: anywidget's cheap reprs; D6's "always show the non-widget fallbacks"):
- in a kernel with ipywidgets: an `ipywidgets.HTML` whose `value` is re-rendered at most every
  `throttle` seconds. Widget state updates are iopub comm messages, which leave a busy kernel, so
  the browser sees rows while the cell still runs. When the cell finishes the widget is replaced
  (same display id) by a static text/html + text/plain snapshot, so nbconvert, nbclient and
  GitHub's renderer keep a readable feed without any JavaScript;
- in a kernel without ipywidgets: the same HTML through `update_display_data`;
- in terminal IPython (or any shell without a kernel): one text line per call, printed at once.

Cost: a listener call stores one small row and, at most every `throttle` seconds, renders; a
render of the 50 newest rows is ~0.1-0.3 ms, so the feed adds far less than 2 ms per call.
"""

from __future__ import annotations

import html
import reprlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from thoth_nb._render import DECISION_COLOURS

if TYPE_CHECKING:
    from thoth_nb._flow import Call

__all__ = ["CellFeed", "Feed", "FeedRow", "args_preview", "feed_html", "feed_text"]

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = 4
_repr.maxdict = 4
_repr.maxlevel = 2


def args_preview(tool_args: Any, width: int = 60) -> str:
    """`key=value, ...` cut to `width` characters; reprlib keeps huge arguments cheap to show."""
    if tool_args is None:
        return ""
    if isinstance(tool_args, dict):
        text = ", ".join(f"{k}={_repr.repr(v)}" for k, v in list(tool_args.items())[:6])
    else:
        text = _repr.repr(tool_args)
    return text if len(text) <= width else text[: width - 1] + "…"


class FeedRow:
    """What the feed shows about one call; updated in place as the call moves through its phases."""

    __slots__ = (
        "agent",
        "args",
        "decision",
        "duration_ms",
        "observed",
        "outcome",
        "reason",
        "risk",
        "started_ns",
        "state",
        "tool",
    )

    def __init__(self, call: Call) -> None:
        self.started_ns = call.started_ns
        self.agent = call.governor.config.agent_id
        self.tool = call.tool_name
        self.args = args_preview(call.tool_args)
        self.decision = ""
        self.observed = ""
        self.reason = ""
        self.risk = 0.0
        self.duration_ms: float | None = None
        self.state = ""
        self.outcome = ""

    def update(self, phase: str, call: Call) -> None:
        decision = call.decision
        if decision is not None:
            self.decision = decision.decision.value
            self.reason = decision.reason or ""
            self.risk = decision.risk_score
            observed = decision.observed_decision
            self.observed = observed.value if observed is not None else ""
        self.state = phase
        if phase in ("finished", "blocked"):
            self.duration_ms = call.duration_ms
            self.outcome = call.outcome or ("blocked" if phase == "blocked" else "ok")

    @property
    def label(self) -> str:
        if self.state == "held":
            return "STEP_UP held"
        if self.observed:
            return f"{self.decision} (observe: {self.observed})"
        return self.decision or "…"

    def clock(self) -> str:
        seconds, rest = divmod(self.started_ns, 1_000_000_000)
        return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{rest // 1_000_000:03d}"

    def text(self) -> str:
        ms = f"{self.duration_ms:.1f} ms" if self.duration_ms is not None else "running"
        if self.state == "held":
            ms = "waiting for approval"
        error = " (raised)" if self.outcome == "error" else ""
        return (f"{self.clock()}  {self.agent:<12} {self.tool:<16} {self.label:<13} risk {self.risk:>3g}  {ms:>9}"
                f"{error}  {self.args}" + (f"  — {self.reason}" if self.reason and self.decision != "ALLOW" else ""))


_CELL = "padding:1px 6px;text-align:left;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:{w}px"


def _badge(row: FeedRow) -> str:
    key = "STEP_UP" if row.state == "held" else (row.observed or row.decision)
    colour = DECISION_COLOURS.get(key, "#57606a")
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 5px;font-weight:600">'
            f"{html.escape(row.label)}</span>")


def _key(row: FeedRow) -> str:
    return row.label if row.state == "held" else (row.decision or "pending")


def _summary(rows: list[FeedRow], earlier: Mapping[str, int] | None) -> tuple[int, str]:
    counts: dict[str, int] = dict(earlier or {})
    for row in rows:
        key = _key(row)
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    return total, " · ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def feed_html(rows: list[FeedRow], max_rows: int = 50, earlier: Mapping[str, int] | None = None) -> str:
    """A compact table of the newest `max_rows` calls, readable without JavaScript. `earlier` counts,
    by decision, calls no longer kept as rows."""
    shown = rows[-max_rows:]
    cell = _CELL.format(w=160)
    wide = _CELL.format(w=320)
    body = []
    for row in shown:
        ms = "waiting…" if row.state == "held" else (f"{row.duration_ms:.1f}" if row.duration_ms is not None else "…")
        body.append(
            "<tr>"
            f"<td style='{cell}'>{row.clock()}</td><td style='{cell}'>{html.escape(row.agent)}</td>"
            f"<td style='{cell}'><b>{html.escape(row.tool)}</b></td>"
            f"<td style='{wide}' title='{html.escape(row.args)}'><code>{html.escape(row.args)}</code></td>"
            f"<td style='{cell}'>{_badge(row)}</td>"
            f"<td style='{wide}' title='{html.escape(row.reason)}'>{html.escape(row.reason)}</td>"
            f"<td style='{cell};text-align:right'>{row.risk:g}</td><td style='{cell};text-align:right'>{ms}</td>"
            "</tr>"
        )
    total, counts = _summary(rows, earlier)
    hidden = total - len(shown)
    more = f"<div style='color:#57606a'>… {hidden} earlier calls not shown</div>" if hidden else ""
    head = "".join(f"<th style='{cell}'>{h}</th>" for h in ("time", "agent", "tool", "args", "decision",
                                                               "reason", "risk", "ms"))
    return (
        "<div class='thoth-feed' style='font-size:12px;font-family:var(--jp-code-font-family,monospace)'>"
        f"<div style='color:#57606a'>thoth · {total} governed call{'s' if total != 1 else ''}"
        f" · {html.escape(counts)}</div>{more}"
        f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        "</table></div>"
    )


def feed_text(rows: list[FeedRow], max_rows: int = 50, earlier: Mapping[str, int] | None = None) -> str:
    shown = rows[-max_rows:]
    total, counts = _summary(rows, earlier)
    lines = [f"thoth · {total} governed call{'s' if total != 1 else ''} · {counts}"]
    if total > len(shown):
        lines.append(f"… {total - len(shown)} earlier calls not shown")
    lines.extend(row.text() for row in shown)
    return "\n".join(lines)


class CellFeed:
    """The feed of one cell: rows, a display, and a throttle on re-rendering."""

    def __init__(self, mode: str, *, max_rows: int = 50, throttle: float = 0.1,
                 display: Callable[..., Any] | None = None, printer: Callable[[str], None] = print) -> None:
        self.mode = mode  # "widget", "html" or "text"
        self.max_rows = max_rows
        self.throttle = throttle
        self.rows: dict[int, tuple[Call, FeedRow]] = {}  # calls still in flight, by id
        self._order: list[FeedRow] = []
        self._earlier: dict[str, int] = {}  # finished calls trimmed from _order, by decision
        self._keep = max(4 * max_rows, 200)
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._printer = printer
        self._display = display
        self.widget: Any = None
        self.handle: Any = None
        self.renders = 0
        self.closed = False

    # -- events ------------------------------------------------------------------------------------

    def event(self, phase: str, call: Call) -> None:
        with self._lock:
            if self.closed:
                return
            key = id(call)
            entry = self.rows.get(key)
            if entry is None or entry[0] is not call:
                entry = self.rows[key] = (call, FeedRow(call))
                self._order.append(entry[1])
                if len(self._order) > self._keep:
                    self._trim()
            row = entry[1]
            row.update(phase, call)
            if phase in ("finished", "blocked"):
                # the call is done: forget it (its id may be reused by the next Call object)
                del self.rows[key]
            if self.mode == "text":
                if phase in ("held", "finished", "blocked"):
                    self._printer(row.text())
                return
            if self.handle is None:
                self._open()
                return
            now = time.monotonic()
            # a held call waits for a human: show it now, not at the next throttle tick
            if phase == "held" or now - self._last >= self.throttle:
                self._render(now)
            elif self.mode == "widget" and self._timer is None:
                self._timer = threading.Timer(self.throttle, self._tick)
                self._timer.daemon = True
                self._timer.start()

    def _trim(self) -> None:
        """Bound memory and render cost in cells with many calls: keep the newest rows, count the rest."""
        drop = 0
        limit = len(self._order) - self._keep // 2
        while drop < limit and self._order[drop].state in ("finished", "blocked"):
            key = _key(self._order[drop])
            self._earlier[key] = self._earlier.get(key, 0) + 1
            drop += 1
        del self._order[:drop]

    def _tick(self) -> None:
        with self._lock:
            self._timer = None
            if not self.closed:
                self._render(time.monotonic())

    def _open(self) -> None:
        display = self._display or _ipython_display
        if self.mode == "widget":
            import ipywidgets

            self.widget = ipywidgets.HTML(value=feed_html(self._order, self.max_rows, self._earlier))
            # the widget view for frontends with a widget manager, the text feed for everything else
            bundle = dict(self.widget._repr_mimebundle_() or {})
            bundle["text/plain"] = feed_text(self._order, self.max_rows, self._earlier)
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle = display(self._bundle(), raw=True, display_id=True)
        self._last = time.monotonic()
        self.renders += 1

    def _render(self, now: float) -> None:
        self._last = now
        self.renders += 1
        if self.mode == "widget":
            self.widget.value = feed_html(self._order, self.max_rows, self._earlier)
        elif self.handle is not None:
            self.handle.update(self._bundle(), raw=True)

    # -- end of the cell ---------------------------------------------------------------------------

    def _bundle(self) -> dict[str, str]:
        return {"text/html": feed_html(self._order, self.max_rows, self._earlier),
                "text/plain": feed_text(self._order, self.max_rows, self._earlier)}

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return self._bundle()

    def close(self) -> None:
        """Replace the live widget with a static snapshot (what nbconvert and plain viewers keep)."""
        bundle = self.snapshot()
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self.handle is not None:
            self.handle.update(bundle, raw=True)
        if self.widget is not None:
            self.widget.close()

    @property
    def ordered(self) -> list[FeedRow]:
        return list(self._order)


def _ipython_display(obj: Any, **kwargs: Any) -> Any:
    from IPython.display import display

    return display(obj, **kwargs)  # type: ignore[no-untyped-call]


class Feed:
    """The kernel-wide listener: routes governed calls to the running cell's `CellFeed`."""

    def __init__(self, mode: str, *, enabled: Callable[[], bool], max_rows: Callable[[], int],
                 throttle: float = 0.1) -> None:
        self.mode = mode
        self._enabled = enabled
        self._max_rows = max_rows
        self.throttle = throttle
        self.current: CellFeed | None = None
        self.last: CellFeed | None = None
        self._in_cell = False
        self._depth = 0
        self._lock = threading.Lock()

    def __call__(self, phase: str, call: Call) -> None:
        if not self._in_cell or not self._enabled():
            return
        cell = self.current
        if cell is None:
            with self._lock:
                cell = self.current
                if cell is None:
                    cell = self.current = CellFeed(self.mode, max_rows=self._max_rows(), throttle=self.throttle)
        cell.event(phase, call)

    def __repr__(self) -> str:  # cheap, never renders (anywidget's advice)
        return f"<thoth_nb Feed mode={self.mode} in_cell={self._in_cell}>"

    def pre_run_cell(self, *_: Any) -> None:
        # cells run inside a cell (%%capture and friends call run_cell) share the outer cell's feed
        self._depth += 1
        self._in_cell = True

    def post_run_cell(self, *_: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth:
            return
        self.close()

    def close(self) -> None:
        """End the current cell's feed now (the cell finished, or the extension is unloading)."""
        self._depth = 0
        self._in_cell = False
        with self._lock:
            cell, self.current = self.current, None
        if cell is not None:
            cell.close()
            self.last = cell
