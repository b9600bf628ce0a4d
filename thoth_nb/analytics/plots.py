"""Charts of the behavioral analytics: interactive (plotly) in a live notebook, a PNG beside it.

Every chart is a `Chart`: a small description (series of x/y points) that renders as a plotly figure
when plotly is installed and as a matplotlib PNG when matplotlib is. Displaying one sends both (plotly
JSON for JupyterLab, `image/png` for nbconvert, GitHub and any viewer without the plotly renderer),
so the plots survive `jupyter nbconvert --execute` and static HTML exports.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Chart", "anomaly_chart", "drift_chart", "session_chart", "timeline_chart", "usage_chart"]

_PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D")


@dataclasses.dataclass
class Series:
    name: str
    x: list[Any]
    y: list[Any]
    kind: str = "line"  # line | markers | bar | barh
    text: list[str] | None = None


@dataclasses.dataclass
class Chart:
    """A chart that shows itself interactively (plotly) and statically (PNG)."""

    title: str
    series: list[Series]
    x_title: str = ""
    y_title: str = ""
    hline: float | None = None
    hline_label: str = ""
    stacked: bool = False
    height: int = 320
    _png: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    # -- plotly ----------------------------------------------------------------------------------

    def figure(self) -> Any:
        """A plotly Figure, or None without plotly."""
        try:
            import plotly.graph_objects as go  # type: ignore[import-untyped]
        except ImportError:
            return None
        fig = go.Figure()
        for i, s in enumerate(self.series):
            color = _PALETTE[i % len(_PALETTE)]
            if s.kind in ("bar", "barh"):
                horizontal = s.kind == "barh"
                fig.add_trace(go.Bar(x=s.y if horizontal else s.x, y=s.x if horizontal else s.y, name=s.name,
                                     orientation="h" if horizontal else "v", marker_color=color,
                                     hovertext=s.text))
            else:
                fig.add_trace(go.Scatter(x=s.x, y=s.y, name=s.name, mode="lines+markers" if s.kind == "line"
                                         else "markers", line={"color": color}, hovertext=s.text))
        if self.hline is not None:
            fig.add_hline(y=self.hline, line_dash="dash", line_color="#888", annotation_text=self.hline_label)
        fig.update_layout(title=self.title, xaxis_title=self.x_title, yaxis_title=self.y_title, height=self.height,
                          margin={"l": 50, "r": 20, "t": 50, "b": 40}, barmode="stack" if self.stacked else "group",
                          template="plotly_white", legend={"orientation": "h", "y": -0.2})
        return fig

    # -- matplotlib ------------------------------------------------------------------------------

    def png(self) -> bytes | None:
        """The chart as PNG bytes (matplotlib, Agg backend), or None without matplotlib (drawn once)."""
        if self._png is None:
            self._png = self._draw()
        return self._png

    def _draw(self) -> bytes | None:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return None
        fig = Figure(figsize=(8, self.height / 100), dpi=90)
        ax = fig.subplots()
        bottoms: dict[Any, float] = {}
        bars = [s for s in self.series if s.kind in ("bar", "barh")]
        width = 0.8 / max(1, len(bars)) if not self.stacked else 0.8
        for i, s in enumerate(self.series):
            color = _PALETTE[i % len(_PALETTE)]
            if s.kind in ("bar", "barh"):
                labels = [str(v) for v in s.x]
                positions: list[float] = [float(p) for p in range(len(labels))]
                if not self.stacked:
                    positions = [p + (bars.index(s) - (len(bars) - 1) / 2) * width for p in positions]
                base = [bottoms.get(label, 0.0) for label in labels] if self.stacked else None
                values = [float(v) for v in s.y]
                if s.kind == "barh":
                    ax.barh(positions, values, height=width, left=base, label=s.name, color=color)
                    ax.set_yticks(range(len(labels)), labels)
                else:
                    ax.bar(positions, values, width=width, bottom=base, label=s.name, color=color)
                    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
                if self.stacked:
                    for label, value in zip(labels, values, strict=True):
                        bottoms[label] = bottoms.get(label, 0.0) + value
            else:
                ax.plot(s.x, s.y, "-o" if s.kind == "line" else "o", label=s.name, color=color, markersize=3)
        if self.hline is not None:
            ax.axhline(self.hline, linestyle="--", color="#888", label=self.hline_label or None)
        ax.set_title(self.title)
        ax.set_xlabel(self.x_title)
        ax.set_ylabel(self.y_title)
        if len(self.series) > 1 or self.hline_label:
            ax.legend(fontsize="small")
        if any(_is_time(s.x) for s in self.series if s.kind not in ("bar", "barh")):
            ax.tick_params(axis="x", labelrotation=20)
        # fixed margins: tight_layout costs more than the drawing itself
        left = 0.3 if any(s.kind == "barh" for s in self.series) else 0.09
        fig.subplots_adjust(left=left, right=0.98, top=0.9, bottom=0.25)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    # -- display ---------------------------------------------------------------------------------

    def html(self) -> str:
        """A static <img> (PNG) of the chart, or a small table when matplotlib is missing."""
        png = self.png()
        if png is not None:
            return (f'<img alt="{html.escape(self.title)}" style="max-width:100%" '
                    f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>')
        rows = "".join(f"<tr><td>{html.escape(s.name)}</td><td>{len(s.x)} points</td></tr>" for s in self.series)
        return f"<b>{html.escape(self.title)}</b><table>{rows}</table>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": f"<Chart {self.title!r}: {len(self.series)} series>"}
        png = self.png()
        if png is not None:
            bundle["image/png"] = base64.b64encode(png).decode()
        fig = self.figure()
        if fig is not None:
            bundle["application/vnd.plotly.v1+json"] = fig.to_plotly_json()
        if png is None and fig is None:
            bundle["text/html"] = self.html()
        return bundle


def _is_time(values: Sequence[Any]) -> bool:
    return bool(values) and hasattr(values[0], "year")


def _times(values: Any) -> list[Any]:
    return [v.to_pydatetime(warn=False) if hasattr(v, "to_pydatetime") else v for v in values]


# --- the charts ---------------------------------------------------------------------------------


def drift_chart(drift: pd.DataFrame, *, threshold: float | None = None, title: str = "Tool-usage drift") -> Chart:
    """JS divergence over time, one line per agent, with the drift threshold."""
    if threshold is None:
        threshold = (drift.attrs.get("thoth_drift") or {}).get("threshold")
    series = []
    for agent, rows in drift.dropna(subset=["js_divergence"]).groupby("agent_id", observed=True):
        series.append(Series(str(agent), _times(rows["window_end"]), rows["js_divergence"].round(4).tolist(),
                             text=[f"top: {t}" for t in rows["top_tool"].astype(str)]))
    return Chart(title, series, "window end", "JS divergence (base 2)", hline=threshold,
                 hline_label="threshold" if threshold is not None else "")


def anomaly_chart(scores: pd.DataFrame, *, top: int = 500, title: str = "Anomaly score per call") -> Chart:
    """Call scores over time (the `top` highest), one marker series per top factor."""
    frame = scores[scores["score"] > 0].nlargest(top, "score")
    series = []
    for factor, rows in frame.groupby("top_factor", observed=True):
        series.append(Series(str(factor), _times(rows["occurred_at"]), rows["score"].round(1).tolist(), "markers",
                             text=[f"{t} in {s}" for t, s in zip(rows["tool_name"].astype(str),
                                                                  rows["session_id"].astype(str), strict=True)]))
    return Chart(title, series, "time", "score (0-100)", hline=50.0, hline_label="flag")


def session_chart(sessions: pd.DataFrame, *, top: int = 10, title: str = "Most anomalous sessions") -> Chart:
    """Horizontal bars: the `top` sessions by score."""
    rows = sessions.head(top).iloc[::-1]
    labels = [f"{s[:12]} ({a})" for s, a in zip(rows["session_id"].astype(str), rows["agent_id"].astype(str),
                                                 strict=True)]
    return Chart(title, [Series("score", labels, rows["score"].round(1).tolist(), "barh",
                                text=rows["top_factor"].astype(str).tolist())], "score (0-100)", "",
                 height=max(240, 28 * len(labels) + 80))


def usage_chart(baseline: pd.DataFrame, *, title: str = "Baseline tool usage by agent") -> Chart:
    """Stacked bars: each agent's share of calls per tool."""
    tools = baseline[baseline["kind"] == "tool"]
    agents = sorted(tools["agent_id"].astype(str).unique())
    series = []
    for tool, rows in tools.groupby("tool_name", observed=True):
        share = dict(zip(rows["agent_id"].astype(str), rows["share"], strict=True))
        series.append(Series(str(tool), agents, [round(float(share.get(a, 0.0)), 4) for a in agents], "bar"))
    return Chart(title, series, "agent", "share of calls", stacked=True)


def timeline_chart(timeline: pd.DataFrame, *, title: str = "Session timeline") -> Chart:
    """A session's calls: tool (y) against seconds since the session began (x), one series per decision."""
    frame = timeline.copy()
    frame["seconds"] = frame["elapsed"].dt.total_seconds()
    if "decision" in frame.columns:
        frame["decision"] = frame["decision"].astype(object).where(frame["decision"].notna(), "requested")
    else:
        frame["decision"] = "requested"
    series = []
    for decision, rows in frame.groupby("decision"):
        series.append(Series(str(decision), rows["seconds"].round(3).tolist(), rows["tool_name"].astype(str).tolist(),
                             "markers"))
    return Chart(title, series, "seconds since the session began", "tool")
