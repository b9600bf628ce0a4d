"""`thoth-nb demo`: an offline scripted agent whose calls are allowed, held and approved or denied
by a scripted reviewer in another thread, and blocked; then where every event went."""

from __future__ import annotations

import threading
import time
from collections import Counter
from importlib import resources
from typing import Any

import thoth_nb
from thoth_nb import _runtime

__all__ = ["run_demo"]


class Tool:
    def __init__(self, name: str, fn: Any, description: str) -> None:
        self.name = name
        self.run = fn
        self.description = description


def web_search(query: str) -> str:
    return f"3 results for {query!r}"


def read_file(path: str) -> str:
    return f"<contents of {path}>"


def send_email(to: str, subject: str, body: str = "") -> str:
    return f"sent {subject!r} to {to}"


def delete_file(path: str) -> str:  # pragma: no cover - never allowed to run in the demo
    raise AssertionError("the demo policy must never let delete_file run")


class ScriptedAgent:
    """Stands in for an LLM agent: a fixed plan of tool calls, each governed through `.tools[].run`."""

    def __init__(self) -> None:
        self.tools = [
            Tool("web_search", web_search, "Search the web."),
            Tool("read_file", read_file, "Read a local file."),
            Tool("send_email", send_email, "Send an email."),
            Tool("delete_file", delete_file, "Delete a file."),
        ]
        self.plan: list[tuple[str, dict[str, Any]]] = [
            ("web_search", {"query": "quarterly report"}),
            ("read_file", {"path": "/home/demo/report.md"}),
            ("send_email", {"to": "team@demo.local", "subject": "Report", "body": "attached"}),
            ("send_email", {"to": "cfo@example.com", "subject": "Report", "body": "attached"}),
            ("send_email", {"to": "rival@example.org", "subject": "Numbers", "body": "all of them"}),
            ("read_file", {"path": "/etc/shadow"}),
            ("delete_file", {"path": "/home/demo/report.md"}),
        ]

    def run(self, say: Any) -> list[tuple[str, str, str]]:
        tools = {t.name: t for t in self.tools}
        outcomes = []
        for name, args in self.plan:
            try:
                result = tools[name].run(**args)
                outcomes.append((name, "ran", str(result)))
                say(f"  ✔ {name}({_fmt(args)}) -> {result}")
            except thoth_nb.ThothPolicyViolation as exc:
                outcomes.append((name, "blocked", exc.reason))
                say(f"  ✘ {name}({_fmt(args)}) -> {exc.reason}")
        return outcomes


def _fmt(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _reviewer(stop: threading.Event, approve_after: float, say: Any, session_id: str) -> None:
    """A scripted human: approves the first held call and denies the second, from another thread."""
    decided = 0
    while not stop.is_set():
        for hold in thoth_nb.holds("pending", tenant_id="demo"):
            if hold["session_id"] != session_id:  # an earlier, interrupted demo's hold: not ours
                continue
            time.sleep(approve_after)
            approve = decided == 0
            who = "scripted-reviewer"
            say(f"    reviewer {'approves' if approve else 'denies'} {hold['approval_id']} "
                f"({hold['tool_name']} to {hold['tool_args'].get('to')})")
            if approve:
                thoth_nb.approve(hold["approval_id"], reviewer=who)
            else:
                thoth_nb.deny(hold["approval_id"], reviewer=who, note="not to that address")
            decided += 1
        stop.wait(0.05)


def run_demo(*, approve_after: float = 0.5, quiet: bool = False) -> int:
    say = (lambda _msg: None) if quiet else print
    policy = str(resources.files("thoth_nb") / "policies" / "demo.yaml")
    agent = ScriptedAgent()
    thoth_nb.instrument(
        agent, agent_id="demo-agent", tenant_id="demo", user_id="you",
        approved_scope=["web_search", "read_file", "send_email"], enforcement="step_up",
        policy=policy, step_up_timeout_minutes=1, step_up_poll_interval_ms=5000,
    )
    store = _runtime.local_store()
    say(f"thoth_nb demo — embedded enforcer, policy {policy}")
    say("mode step_up: rule violations are held for a human; hard rules and out-of-scope tools block\n")
    stop = threading.Event()
    session_id = agent.tools[0].run.__thoth_binding__.governor.config.session_id
    reviewer = threading.Thread(target=_reviewer, args=(stop, approve_after, say, session_id), daemon=True)
    reviewer.start()
    try:
        outcomes = agent.run(say)
    finally:
        stop.set()
        reviewer.join(timeout=5)
    thoth_nb.flush()
    events = store.events("demo", session_id=session_id)
    counts = Counter(e["event_type"] for e in events)
    say(f"\n{sum(1 for o in outcomes if o[1] == 'ran')} calls ran, "
        f"{sum(1 for o in outcomes if o[1] == 'blocked')} were stopped before running.")
    say(f"{len(events)} events recorded in {store.path}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    say("See them with `thoth-nb events --tenant demo`, or in Python: thoth_nb.events(tenant_id='demo')")
    expected = [("web_search", "ran"), ("read_file", "ran"), ("send_email", "ran"), ("send_email", "ran"),
                ("send_email", "blocked"), ("read_file", "blocked"), ("delete_file", "blocked")]
    return 0 if [(o[0], o[1]) for o in outcomes] == expected else 1
