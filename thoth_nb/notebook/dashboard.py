"""`%thoth dashboard`: the policy workbench inline, as an ipywidgets Tab.

Tabs: Sessions (per-session timeline), Violations (with the engine's explanation), Approvals (pending
with Approve/Deny, resolved with reviewer and latency), Policies (rules in force, version history,
diff), Behavioral Analytics (usage, drift and anomaly charts). Every view comes from the DataFrames
of `thoth_nb.analytics.frames`, so it works on the embedded store and, with `api_url`, on a server.

The dashboard opens fast on big stores: the first four tabs read bounded pages (`limit`), and the
analytics are computed when their tab is first opened (or at once with `analytics=True`, which is
the default for small stores so that the static snapshot has the charts). Displaying the widget also
sends a static HTML snapshot (tables and PNG charts), which is what nbconvert and other viewers
without the widget manager show.

`%thoth replay FILE` is here too: a what-if replay of recorded calls under a candidate policy.
"""

from __future__ import annotations

import difflib
import html
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["TABS", "dashboard", "register", "what_would_pass"]

TABS = ("Sessions", "Violations", "Approvals", "Policies", "Behavioral Analytics")
#: below this many events `analytics="auto"` computes the charts up front (they are in the snapshot)
EAGER_ANALYTICS_EVENTS = 20_000
_ROWS = 50


def _table(frame: Any, columns: list[str] | None = None, rows: int = _ROWS, empty: str = "nothing yet") -> str:
    if frame is None or len(frame) == 0:
        return f"<p><i>{html.escape(empty)}</i></p>"
    view = frame[[c for c in (columns or list(frame.columns)) if c in frame.columns]].head(rows)
    more = f"<p><i>{len(frame) - rows} more rows not shown</i></p>" if len(frame) > rows else ""
    return str(view.to_html(index=False, escape=True, na_rep="", border=0, classes="thoth-table")) + more


_STYLE = ("<style>.thoth-table{border-collapse:collapse;font-size:12px}.thoth-table td,.thoth-table th"
          "{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style>")


class Workbench:
    """Reads what the tabs show (one place for filters, the store or server, and the policy)."""

    def __init__(self, *, agent_id: str | None = None, since: Any = None, tenant_id: str | None = None,
                 api_url: str | None = None, api_key: str | None = None, store: Any = None, limit: int = 1000,
                 analytics_limit: int = 200_000, policy: Any = None) -> None:
        from thoth_nb.analytics.frames import _server, default_tenant

        self.agent_id = agent_id
        self.since = since
        self.tenant = default_tenant(tenant_id)
        self.api_url = _server(api_url) if store is None else None
        self.api_key = api_key
        self.store = store
        self.limit = limit
        self.analytics_limit = analytics_limit
        self.policy_source = policy

    def _source(self) -> dict[str, Any]:
        if self.api_url:
            return {"api_url": self.api_url, "api_key": self.api_key, "tenant_id": self.tenant}
        return {"store": self._store(), "tenant_id": self.tenant}

    def _store(self) -> Any:
        if self.store is None:
            from thoth_nb import _runtime

            _runtime.flush(timeout=5.0)
            self.store = _runtime.local_store()
        return self.store

    # -- data ------------------------------------------------------------------------------------

    def sessions(self) -> Any:
        from thoth_nb.analytics import frames

        return frames.sessions(agent_id=self.agent_id, since=self.since, limit=self.limit, **self._source())

    def timeline(self, session_id: str) -> Any:
        from thoth_nb.analytics import frames

        source = self._source()
        if "store" in source:
            source = {**source, "tool_args": True}
        events = frames.events(session_id=session_id, limit=5000, **source)
        return events.thoth.timeline(session_id) if len(events) else events

    def violations(self) -> Any:
        from thoth_nb.analytics import frames

        return frames.violations(agent_id=self.agent_id, since=self.since, limit=self.limit, **self._source())

    def approvals(self, status: str) -> Any:
        from thoth_nb.analytics import frames

        limit = self.limit if status != "all" else max(self.limit, 10_000)  # pending ones are the newest
        frame = frames.approvals(status, agent_id=self.agent_id, limit=limit, **self._source())
        if status != "pending" and len(frame):
            frame = frame.assign(latency=frame["resolved_at"] - frame["created_at"])
        return frame

    def explain(self, violation_id: str) -> dict[str, Any]:
        """Engine.explain (PROTOCOL §6) from the policy in force, or the server's POST /v1/explain."""
        if self.api_url:
            data: dict[str, Any] = self._request("POST", "/v1/explain", {"violation_id": violation_id,
                                                                          "tenant_id": self.tenant})
            return data
        from thoth_nb.engine.decide import Engine

        return Engine(self._store(), self.policy()).explain(self.tenant, violation_id)

    def policy(self) -> Any:
        """The policy in force: given, else the last embedded agent's, else $THOTH_HOME's or the default."""
        from thoth_nb.engine.policy import load_policy, parse_policy

        if self.policy_source is not None:
            from thoth_nb.analytics.replay import load_candidate

            return load_candidate(self.policy_source)
        if self.api_url:
            data = self._get("/v1/policies")
            text = data.get("policy") if isinstance(data, dict) else None
            if isinstance(text, dict):
                return parse_policy(text, name=f"{self.api_url} v{data.get('version')}")
            return parse_policy(text, name=f"{self.api_url} v{data.get('version')}") if isinstance(text, str) else None
        from thoth_nb import _runtime

        for governor in reversed(_runtime.governors()):
            config = governor.config
            if config.embedded and config.tenant_id == self.tenant:
                return load_policy(config.policy) if config.policy else load_policy(_runtime.default_policy_path())
        return load_policy(_runtime.default_policy_path())

    def policy_versions(self) -> list[dict[str, Any]]:
        if self.api_url:
            data = self._get("/v1/policies")
            if not isinstance(data, dict) or "policy" not in data:
                return []
            text = data["policy"]
            if not isinstance(text, str):
                import yaml

                text = yaml.safe_dump(text, sort_keys=False)
            return [{"version": data.get("version"), "etag": data.get("etag"), "text": text, "created_at": None,
                     "created_by": None}]
        return list(self._store().policy_versions(self.tenant))

    def events(self) -> Any:
        from thoth_nb.analytics import frames

        source = self._source()
        return frames.events(agent_id=self.agent_id, since=self.since, limit=self.analytics_limit, **source)

    def count_events(self) -> int:
        if self.api_url:
            return EAGER_ANALYTICS_EVENTS + 1  # unknown: stay lazy
        return int(self._store().count_events(self.tenant))

    def resolve(self, key: str, approve: bool) -> Any:
        """The Approve/Deny buttons: thoth_nb.approve / thoth_nb.deny (on a given store: its engine)."""
        import thoth_nb

        if self.api_url:
            return (thoth_nb.approve if approve else thoth_nb.deny)(key, api_url=self.api_url, api_key=self.api_key)
        from thoth_nb import _runtime

        if self.store is not None and self.store is not _runtime.local_store():
            from thoth_nb.engine.decide import Engine

            return Engine(self.store, self.policy()).resolve(key, approve=approve, reviewer=_reviewer(),
                                                             tenant_id=self.tenant)
        return (thoth_nb.approve if approve else thoth_nb.deny)(key)

    def _get(self, path: str) -> Any:
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        from thoth_nb._version import __version__

        headers = {"User-Agent": f"thoth-nb/{__version__}"}
        key = self.api_key or os.environ.get("THOTH_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        response = httpx.request(method, f"{self.api_url}{path}", params={"tenant_id": self.tenant}, json=body,
                                 headers=headers, timeout=10.0, trust_env=False)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} failed (status={response.status_code})")
        return response.json()

    # -- analytics -------------------------------------------------------------------------------

    def analytics(self) -> dict[str, Any]:
        """Baseline, drift, call and session scores, and their charts, for the events in range."""
        from thoth_nb.analytics import plots
        from thoth_nb.analytics.anomaly import anomaly_scores, session_scores
        from thoth_nb.analytics.baseline import baseline, calls
        from thoth_nb.analytics.drift import drift

        events = self.events()
        c = calls(events)
        out: dict[str, Any] = {"calls": len(c)}
        if len(c) == 0:
            return out
        b = baseline(c)
        span = (c["occurred_at"].max() - c["occurred_at"].min()).total_seconds()
        window = max(60.0, span / 12.0)
        d = drift(c, window=window, step=window / 4, min_calls=min(20, max(3, len(c) // 50)))
        scores = anomaly_scores(c, b)
        top = session_scores(scores)
        out.update(baseline=b, drift=d, scores=scores, sessions=top, charts=[
            plots.usage_chart(b), plots.drift_chart(d), plots.anomaly_chart(scores), plots.session_chart(top)])
        return out


def _append(out: Any, chart: Any) -> None:
    """Add a chart to an Output widget (works with or without a kernel; saved with the widget state):
    the interactive plotly figure, or the PNG without plotly. The static snapshot has the PNGs."""
    figure = chart.figure()
    bundle = {"text/plain": chart.title, "application/vnd.plotly.v1+json": figure.to_plotly_json()} if (
        figure is not None) else chart._repr_mimebundle_()
    out.outputs = (*out.outputs, {"output_type": "display_data", "data": bundle, "metadata": {}})


def _reviewer() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "notebook"


def what_would_pass(record: dict[str, Any], tenant_id: str | None = None) -> str | None:
    """For a violation record (a row of `thoth_nb.violations()`): what would have passed under the policy
    in force (`thoth_nb.engine.explain.counterfactual`); None when that policy cannot be read."""
    from thoth_nb.engine.explain import counterfactual

    try:
        policy = Workbench(tenant_id=tenant_id).policy()
        if policy is None:
            return None
        answer: str = counterfactual(policy, record)["what_would_pass"]
    except Exception:  # a card never fails to render for want of an explanation
        return None
    return answer


def _explanation_html(explained: dict[str, Any]) -> str:
    from thoth_nb.engine.explain import explanation_rows

    body = "".join(f"<tr><th>{html.escape(k.capitalize())}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in explanation_rows(explained))
    return f"{_STYLE}<table class='thoth-table'>{body}</table>"


def _rules_frame(policy: Any) -> Any:
    from thoth_nb.analytics.frames import _pd

    pd = _pd()
    rows = [{"rule_id": r.id, "agent": r.agent_id or "*", "tools": ", ".join(r.tools), "when": r.describe(),
             "decision": r.decision.value, "severity": r.severity, "hard": r.hard} for r in policy.rules]
    rows += [{"rule_id": r.id, "agent": r.agent_id or "*", "tools": ", ".join(r.tools),
              "when": f"more than {r.max_calls} calls in {r.per_seconds:g}s", "decision": r.decision.value,
              "severity": "", "hard": False} for r in policy.rate_limits]
    return pd.DataFrame(rows, columns=["rule_id", "agent", "tools", "when", "decision", "severity", "hard"])


def policy_diff(old: str, new: str, old_name: str = "a", new_name: str = "b") -> str:
    """A unified diff of two policy texts (difflib), as text."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_name, tofile=new_name)) or "(no differences)\n"


# --- the widget -----------------------------------------------------------------------------------


def _widgets() -> Any:
    try:
        import ipywidgets
    except ImportError:
        raise ImportError('the dashboard needs ipywidgets: pip install "thoth-nb[notebook]"') from None
    return ipywidgets


def _dashboard_class() -> Any:
    widgets = _widgets()

    class Dashboard(widgets.Tab):  # type: ignore[misc, name-defined]
        """The workbench Tab; displaying it also sends a static HTML snapshot for nbconvert."""

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            bundle = super()._repr_mimebundle_(**kwargs)
            snapshot = getattr(self, "_thoth_snapshot", None)
            if isinstance(bundle, dict) and snapshot is not None:
                bundle = {**bundle, "text/html": snapshot()}
            return bundle

    return Dashboard


_CLASS: Any = None


def dashboard(*, agent_id: str | None = None, since: Any = None, tenant_id: str | None = None,
              api_url: str | None = None, api_key: str | None = None, store: Any = None, limit: int = 1000,
              analytics: bool | str = "auto", analytics_limit: int = 200_000, policy: Any = None) -> Any:
    """The workbench as an ipywidgets Tab (see the module docstring). Filters: agent_id, since, tenant_id;
    `api_url` reads from a server; `analytics=True|False|"auto"` computes the charts now, on first
    opening of their tab, or now only for stores under EAGER_ANALYTICS_EVENTS events."""
    global _CLASS
    widgets = _widgets()
    if _CLASS is None:
        _CLASS = _dashboard_class()
    bench = Workbench(agent_id=agent_id, since=since, tenant_id=tenant_id, api_url=api_url, api_key=api_key,
                      store=store, limit=limit, analytics_limit=analytics_limit, policy=policy)
    static: dict[str, str] = {}
    tab = _CLASS()
    tab.workbench = bench
    sessions_box, static["Sessions"] = _sessions_tab(widgets, bench)
    violations_box, static["Violations"] = _violations_tab(widgets, bench)
    approvals_box, static["Approvals"] = _approvals_tab(widgets, bench, static)
    policies_box, static["Policies"] = _policies_tab(widgets, bench)
    analytics_box, compute = _analytics_tab(widgets, bench, static)
    tab.children = [sessions_box, violations_box, approvals_box, policies_box, analytics_box]
    for index, title in enumerate(TABS):
        tab.set_title(index, title)
    tab.compute_analytics = compute
    eager = analytics is True or (analytics == "auto" and bench.count_events() <= EAGER_ANALYTICS_EVENTS)
    if eager:
        compute()
    else:
        def on_select(change: dict[str, Any]) -> None:
            if change.get("new") == TABS.index("Behavioral Analytics"):
                compute()

        tab.observe(on_select, names="selected_index")

    def snapshot() -> str:
        parts = [_STYLE, "<div class='thoth-dashboard'><h3>thoth_nb policy workbench</h3>"]
        for title in TABS:
            parts.append(f"<h4>{html.escape(title)}</h4>{static.get(title) or '<p><i>not computed</i></p>'}")
        return "".join(parts) + "</div>"

    tab._thoth_snapshot = snapshot
    tab.static = static
    return tab


def _sessions_tab(widgets: Any, bench: Workbench) -> tuple[Any, str]:
    frame = bench.sessions()
    columns = ["session_id", "agent_id", "user_id", "first_seen", "last_seen", "tool_calls", "blocked",
               "stepped_up", "violations"]
    summary = widgets.HTML(_STYLE + _table(frame, columns, rows=20, empty="no sessions recorded"))
    ids = [str(s) for s in frame["session_id"].tolist()] if len(frame) else []
    picker = widgets.Dropdown(options=ids, description="Session", layout={"width": "460px"})
    out = widgets.Output()
    events = widgets.HTML()

    def show(change: Any = None) -> None:
        from thoth_nb.analytics import plots

        out.outputs = ()
        events.value = ""
        if not picker.value:
            return
        timeline = bench.timeline(str(picker.value))
        if len(timeline):
            _append(out, plots.timeline_chart(timeline, title=f"Session {str(picker.value)[:12]}"))
        events.value = _STYLE + _table(timeline, ["occurred_at", "elapsed", "event_type", "tool_name", "decision",
                                                  "reason", "tool_args"], rows=200)

    picker.observe(show, names="value")
    show()
    return widgets.VBox([summary, picker, out, events]), _table(frame, columns, rows=20,
                                                                empty="no sessions recorded")


def _violations_tab(widgets: Any, bench: Workbench) -> tuple[Any, str]:
    frame = bench.violations()
    columns = ["created_at", "agent_id", "session_id", "tool_name", "decision", "observed", "reason", "risk_score",
               "matched_rule_ids", "violation_id"]
    table = _table(frame, columns, empty="no violations")
    ids = [str(v) for v in frame["violation_id"].tolist()] if len(frame) else []
    labels = [(f"{t!s} · {d!s} · {v[:12]}", v) for t, d, v in zip(
        frame["tool_name"].astype(str) if len(frame) else [], frame["decision"].astype(str) if len(frame) else [],
        ids, strict=True)]
    picker = widgets.Dropdown(options=labels, description="Explain", layout={"width": "460px"})
    card = widgets.HTML()
    static_card = ""

    def show(change: Any = None) -> None:
        nonlocal static_card
        if not picker.value:
            card.value = ""
            return
        try:
            card.value = _explanation_html(bench.explain(str(picker.value)))
        except Exception as exc:  # an explanation is best-effort: show why there is none
            card.value = f"<p><i>no explanation: {html.escape(str(exc))}</i></p>"
        static_card = static_card or card.value

    picker.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HTML(_STYLE + table), picker, card]), table + static_card


def _approvals_tab(widgets: Any, bench: Workbench, static: dict[str, str]) -> tuple[Any, str]:
    box = widgets.VBox()
    message = widgets.HTML()

    def render() -> str:
        everything = bench.approvals("all")  # one read: listing holds also expires the overdue ones
        waiting = (everything["status"].astype(str) == "pending").to_numpy(dtype=bool)
        pending, resolved = everything[waiting], everything[~waiting]
        rows = [widgets.HTML("<b>Pending</b>" + ("" if len(pending) else " <i>(none)</i>"))]
        for record in pending.head(_ROWS).to_dict("records"):
            key = str(record["approval_id"])
            label = widgets.HTML(html.escape(f"{record['tool_name']} {record.get('tool_args')} — "
                                             f"{record.get('reason') or ''} (risk {record.get('risk_score')})"))
            approve = widgets.Button(description="Approve", button_style="success", layout={"width": "90px"})
            deny = widgets.Button(description="Deny", button_style="danger", layout={"width": "90px"})
            approve.on_click(lambda _b, k=key: act(k, True))
            deny.on_click(lambda _b, k=key: act(k, False))
            approve.approval_id = deny.approval_id = key
            rows.append(widgets.HBox([approve, deny, label]))
        columns = ["status", "tool_name", "reviewer", "note", "created_at", "resolved_at", "latency", "approval_id"]
        done = _table(resolved, columns, empty="no resolved approvals")
        rows += [widgets.HTML(_STYLE + "<b>Resolved</b>" + done), message]
        box.children = rows
        pending_html = _table(pending, ["created_at", "tool_name", "tool_args", "reason", "risk_score",
                                        "approval_id"], empty="none")
        static["Approvals"] = f"<b>Pending</b>{pending_html}<b>Resolved</b>{done}"
        return static["Approvals"]

    def act(key: str, approve: bool) -> None:
        try:
            bench.resolve(key, approve)
            message.value = f"<i>{'approved' if approve else 'denied'} {html.escape(key)}</i>"
        except Exception as exc:
            message.value = f"<i>could not resolve {html.escape(key)}: {html.escape(str(exc))}</i>"
        render()

    box.refresh = render
    return box, render()


def _policies_tab(widgets: Any, bench: Workbench) -> tuple[Any, str]:
    try:
        policy = bench.policy()
    except Exception as exc:
        note = f"<p><i>policy unavailable: {html.escape(str(exc))}</i></p>"
        return widgets.HTML(note), note
    rules = _rules_frame(policy) if policy is not None else None
    source = html.escape(str(getattr(policy, "source", "") or "policy"))
    thresholds = (f"<p>risk thresholds (progressive mode): step up at {policy.risk_step_up:g}, "
                  f"block at {policy.risk_block:g}; default {policy.default.value}</p>") if policy is not None else ""
    current = f"<p><b>In force:</b> {source}</p>{thresholds}" + _table(rules, empty="no rules")
    versions = bench.policy_versions()
    texts = {f"v{v['version']} ({v.get('created_at') or ''})": str(v.get("text") or "") for v in versions}
    if policy is not None and policy.text:
        texts = {"in force": policy.text, **texts}
    history = "".join(f"<li>v{v['version']} {html.escape(str(v.get('created_at') or ''))} "
                      f"{html.escape(str(v.get('created_by') or ''))} <code>{html.escape(str(v.get('etag')))}</code>"
                      "</li>" for v in versions) or "<li><i>no saved versions (PUT /v1/policies saves one)</i></li>"
    names = list(texts)
    left = widgets.Dropdown(options=names, value=names[1] if len(names) > 1 else (names[0] if names else None),
                            description="from")
    right = widgets.Dropdown(options=names, value=names[0] if names else None, description="to")
    diff = widgets.HTML()

    def show(change: Any = None) -> None:
        if left.value is None or right.value is None:
            diff.value = ""
            return
        text = policy_diff(texts[left.value], texts[right.value], left.value, right.value)
        diff.value = f"<pre style='font-size:12px'>{html.escape(text)}</pre>"

    left.observe(show, names="value")
    right.observe(show, names="value")
    show()
    static_html = f"{current}<p><b>Versions</b></p><ul>{history}</ul>{diff.value}"
    return widgets.VBox([widgets.HTML(_STYLE + current + f"<p><b>Versions</b></p><ul>{history}</ul>"),
                         widgets.HBox([left, right]), diff]), static_html


def _analytics_tab(widgets: Any, bench: Workbench, static: dict[str, str]) -> tuple[Any, Callable[[], None]]:
    out = widgets.Output()
    table = widgets.HTML()
    status = widgets.HTML("<i>opens when selected (computed from the recorded events)</i>")
    done: list[bool] = []

    def compute() -> None:
        if done:
            return
        done.append(True)
        status.value = "<i>computing…</i>"
        try:
            result = bench.analytics()
        except Exception as exc:
            status.value = f"<i>analytics unavailable: {html.escape(str(exc))}</i>"
            static["Behavioral Analytics"] = status.value
            return
        if not result.get("calls"):
            status.value = "<i>no tool calls recorded yet</i>"
            static["Behavioral Analytics"] = status.value
            return
        status.value = f"<i>{result['calls']} calls analysed</i>"
        charts = result["charts"]
        top = _table(result["sessions"], ["session_id", "agent_id", "score", "flagged", "top_factor", "top_tool"],
                     rows=10)
        for chart in charts:
            _append(out, chart)
        table.value = _STYLE + "<b>Most anomalous sessions</b>" + top
        static["Behavioral Analytics"] = "".join(chart.html() for chart in charts) + top

    return widgets.VBox([status, out, table]), compute


# --- %thoth dashboard and %thoth replay -----------------------------------------------------------


def register(command: Callable[..., Any], add_filters: Callable[..., None] | None = None) -> None:
    """Add the `dashboard` and `replay` subcommands to the `%thoth` dispatch table (magics.COMMANDS)."""

    def dashboard_options(p: Any) -> None:
        p.add_argument("--agent", dest="agent_id", help="only this agent")
        p.add_argument("--since", help="ISO time or relative: 30m, 2h, 7d")
        p.add_argument("--tenant", dest="tenant_id", help="tenant (default: the last instrumented agent's)")
        p.add_argument("--api-url", dest="api_url", help="read from a thoth-nb server")
        p.add_argument("--limit", type=int, default=1000, help="rows per table (default 1000)")
        p.add_argument("--analytics", choices=("auto", "now", "lazy"), default="auto",
                       help="compute the charts now, when their tab opens, or now for small stores")

    def run_dashboard(magics: Any, args: argparse.Namespace) -> Any:
        choices: dict[str, bool | str] = {"auto": "auto", "now": True, "lazy": False}
        analytics = choices[args.analytics]
        return dashboard(agent_id=args.agent_id, since=args.since, tenant_id=args.tenant_id, api_url=args.api_url,
                         limit=args.limit, analytics=analytics, policy=getattr(magics, "policy", None) or None)

    command("dashboard", "The policy workbench: sessions, violations, approvals, policies, behavioral analytics.",
            dashboard_options)(run_dashboard)

    def replay_options(p: Any) -> None:
        p.add_argument("policy", help="candidate policy YAML file")
        p.add_argument("--agent", dest="agent_id", help="only this agent's calls")
        p.add_argument("--since", help="ISO time or relative: 30m, 2h, 7d")
        p.add_argument("--tenant", dest="tenant_id")
        p.add_argument("--mode", type=str.lower, choices=("observe", "step_up", "block", "progressive"),
                       help="replay every call in this mode (default: the recorded one)")
        p.add_argument("--all", dest="all_calls", action="store_true", help="every call, not only the changes")
        p.add_argument("--api-url", dest="api_url", help="read the recorded events from a thoth-nb server")

    def run_replay(magics: Any, args: argparse.Namespace) -> Any:
        from IPython.core.error import UsageError

        from thoth_nb._exceptions import PolicyError
        from thoth_nb.analytics import frames
        from thoth_nb.analytics.replay import load_candidate, replay, rule_counts

        try:
            candidate = load_candidate(os.path.expanduser(args.policy))
        except PolicyError as exc:
            raise UsageError(str(exc)) from None
        events = frames.events(agent_id=args.agent_id, since=args.since, tenant_id=args.tenant_id,
                               api_url=args.api_url)
        result = replay(events, candidate, mode=args.mode, changes_only=not args.all_calls)
        stats = result.attrs.get("thoth_replay", {})
        transitions = ", ".join(f"{k}: {v}" for k, v in stats.get("transitions", {}).items()) or "no changes"
        print(f"thoth: replayed {stats.get('calls', 0)} calls under {args.policy} "
              f"({stats.get('decisions_per_second', 0):,.0f} decisions/s): {transitions}")
        counts = rule_counts(result)
        if len(counts):
            print(counts.to_string(index=False))
        return result

    command("replay", "What-if: re-decide recorded calls under a candidate policy FILE (no tool runs).",
            replay_options)(run_replay)

    def coverage_options(p: Any) -> None:
        p.add_argument("policy", nargs="?", help="policy YAML file (default: the policy in force)")
        p.add_argument("--agent", dest="agent_id", help="only this agent's calls")
        p.add_argument("--since", help="ISO time or relative: 30m, 2h, 7d")
        p.add_argument("--tenant", dest="tenant_id")
        p.add_argument("--min-approvals", dest="min_approvals", type=int, default=3,
                       help="resolved holds a tool needs, all approved, to be an allow candidate (default 3)")

    def run_coverage(magics: Any, args: argparse.Namespace) -> Any:
        from IPython.core.error import UsageError

        from thoth_nb._exceptions import PolicyError
        from thoth_nb.analytics import frames
        from thoth_nb.analytics.coverage import FINDINGS, coverage

        try:
            bench = Workbench(agent_id=args.agent_id, since=args.since, tenant_id=args.tenant_id,
                              policy=os.path.expanduser(args.policy) if args.policy else
                              (getattr(magics, "policy", None) or None))
            events = frames.events(agent_id=args.agent_id, since=args.since, tenant_id=bench.tenant)
            result = coverage(events, bench.policy(), min_approvals=args.min_approvals)
        except (PolicyError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        stats = result.attrs["thoth_coverage"]
        print(f"thoth: coverage of {stats['policy']} over {stats['calls']} calls: "
              + ", ".join(f"{stats[f]} {f}" for f in FINDINGS))
        return result

    command("coverage", "Coverage of a policy FILE (default: in force): tools with no rule, rules that never "
            "fired, tools reviewers always approve.", coverage_options)(run_coverage)
