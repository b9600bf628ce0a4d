"""`%thoth` through a real InteractiveShell: lifecycle, every subcommand, `%%thoth`, completion."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from nbshell import AGENT_CODE, Shell

import thoth_nb
from thoth_nb import _context
from thoth_nb._instrument import is_governed, unwrap

SCOPE = "--agent-id research --scope web_search"


def _listeners_of(kind: str) -> list[object]:
    from thoth_nb.notebook.feed import Feed

    return [fn for fn in _context.listeners if isinstance(fn, Feed)]


# --- lifecycle ------------------------------------------------------------------------------------


def test_load_registers_magics_feed_and_config(shell: Shell) -> None:
    ip = shell.ip
    shell.magic("load_ext thoth_nb")
    assert "thoth" in ip.magics_manager.magics["line"]
    assert "thoth" in ip.magics_manager.magics["cell"]
    assert len(_listeners_of("feed")) == 1
    magics = ip.magics_manager.registry["ThothMagics"]
    assert magics in ip.configurables
    shell.magic("config ThothMagics.feed = False")
    assert magics.feed is False
    shell.magic("config ThothMagics.tenant = 'acme'")
    assert magics.tenant == "acme"


def test_unload_removes_everything_restores_and_flushes(shell: Shell) -> None:
    ip = shell.ip
    shell.magic("load_ext thoth_nb")
    shell.cell(AGENT_CODE)
    shell.magic(f"thoth instrument agent {SCOPE}")
    agent = shell.ns["agent"]
    assert all(is_governed(t.run) for t in agent.tools)
    shell.cell("agent.tools[0].run('cats')")
    pre_callbacks = list(ip.events.callbacks["pre_run_cell"])
    shell.magic("unload_ext thoth_nb")
    assert "thoth" not in ip.magics_manager.magics["line"]
    assert "thoth" not in ip.magics_manager.magics["cell"]
    assert "ThothMagics" not in ip.magics_manager.registry
    assert not _listeners_of("feed")
    assert len(ip.events.callbacks["pre_run_cell"]) == len(pre_callbacks) - 1
    assert [t.run for t in agent.tools] == shell.ns["originals"]
    assert not any(is_governed(t.run) for t in agent.tools)
    # flushed on unload: the call is in the store without an explicit flush
    store = thoth_nb._runtime.local_store()
    assert store.count_events("local") == 2
    with pytest.raises(UsageError):
        shell.magic("thoth status")


def test_reload_never_double_registers_or_double_patches(shell: Shell) -> None:
    ip = shell.ip
    shell.magic("load_ext thoth_nb")
    shell.cell(AGENT_CODE)
    shell.magic(f"thoth instrument agent {SCOPE}")
    first = shell.ns["agent"].tools[0].run
    callbacks = len(ip.events.callbacks["post_run_cell"])
    matchers = len(ip.Completer.custom_matchers)
    for _ in range(3):
        shell.magic("reload_ext thoth_nb")
    shell.magic("load_ext thoth_nb")  # loading again is a no-op
    agent = shell.ns["agent"]
    for tool, original in zip(agent.tools, shell.ns["originals"], strict=True):
        assert is_governed(tool.run)
        assert tool.run.__wrapped__ is original  # one layer of wrapping, not four
    assert tool.run is not first or is_governed(first)
    assert len(_listeners_of("feed")) == 1
    assert len(ip.events.callbacks["post_run_cell"]) == callbacks
    assert len(ip.Completer.custom_matchers) == matchers
    assert list(ip.magics_manager.magics["line"]).count("thoth") == 1
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        shell.cell("agent.tools[1].run('/tmp/x')")  # still governed after the reloads
    shell.magic("unload_ext thoth_nb")
    assert [t.run for t in agent.tools] == shell.ns["originals"]


def test_unload_restores_every_shape(shell: Shell) -> None:
    shell.magic("load_ext thoth_nb")
    shell.cell(AGENT_CODE + """
class MethodTool:
    name = "web_search"
    def run(self, query):
        return "method " + query

class MethodAgent:
    def __init__(self):
        self.tools = [MethodTool()]

magent = MethodAgent()
fns = [web_search, delete_file]
fdict = {"web_search": web_search}
bare = web_search
""")
    for var in ("agent", "magent", "fns", "fdict", "bare"):
        shell.magic(f"thoth instrument {var} --agent-id {var} --scope web_search")
    ns = shell.ns
    assert is_governed(ns["bare"]) and is_governed(ns["fns"][0]) and is_governed(ns["fdict"]["web_search"])
    assert "run" in vars(ns["magent"].tools[0])
    shell.magic("unload_ext thoth_nb")
    assert ns["bare"] is ns["web_search"]
    assert ns["fns"] == [ns["web_search"], ns["delete_file"]]
    assert ns["fdict"] == {"web_search": ns["web_search"]}
    assert "run" not in vars(ns["magent"].tools[0])  # the class's method shows through again
    assert ns["magent"].tools[0].run("x") == "method x"


# --- subcommands ----------------------------------------------------------------------------------


def test_instrument_blocked_call_and_events_frame(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic(f"thoth instrument agent {SCOPE} --mode block")
    assert loaded.cell("agent.tools[0].run('cats')") == "results for cats"
    with pytest.raises(thoth_nb.ThothPolicyViolation) as info:
        loaded.cell("agent.tools[1].run('/tmp/x')")
    assert info.value.tool_name == "delete_file"
    out = capsys.readouterr().out
    assert "governing agent as agent 'research' in block mode" in out
    # the text feed (no widget frontend in a plain shell) printed each call as it happened
    assert "web_search" in out and "ALLOW" in out and "BLOCK" in out and "delete_file" in out
    frame = loaded.magic("thoth events --agent research")
    assert list(frame["event_type"]) == ["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]
    assert frame["tool_args"].iloc[-1] == {"path": "/tmp/x"}
    assert str(frame["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert loaded.magic("thoth events --tool web_search --limit 1")["tool_name"].tolist() == ["web_search"]
    violations = loaded.magic("thoth violations")
    assert violations["tool_name"].tolist() == ["delete_file"]
    sessions = loaded.magic("thoth sessions")
    assert sessions["blocked"].tolist() == [1]
    explanation = loaded.magic(f"thoth explain {info.value.violation_id}")
    assert "approved_scope" in explanation["why_it_was_blocked"]
    assert "delete_file" in explanation._repr_html_()


def test_usage_errors_say_what_to_fix(loaded: Shell) -> None:
    with pytest.raises(UsageError, match=r"unknown subcommand .instrumnt.*instrument"):
        loaded.magic("thoth instrumnt agent")
    with pytest.raises(UsageError, match="no variable named 'nope'"):
        loaded.magic("thoth instrument nope --scope a")
    with pytest.raises(UsageError, match="invalid choice"):
        loaded.magic("thoth instrument agent --scope a --mode maybe")
    with pytest.raises(UsageError, match="approved_scope is required"):
        loaded.magic("thoth instrument agent")
    with pytest.raises(UsageError, match="no agent 'ghost'"):
        loaded.magic("thoth mode ghost observe")
    with pytest.raises(UsageError, match="no violation"):
        loaded.magic("thoth explain vio_missing")
    with pytest.raises(UsageError, match="no hold"):
        loaded.magic("thoth approve hold_missing")


def test_help_lists_subcommands(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic("thoth")
    out = capsys.readouterr().out
    for name in ("instrument", "status", "mode", "policy", "events", "approve", "explain", "feed"):
        assert f"  {name}" in out
    loaded.magic("thoth instrument -h")
    assert "--scope" in capsys.readouterr().out


def test_mode_switch_repoints_without_double_wrapping(loaded: Shell) -> None:
    loaded.magic(f"thoth instrument agent {SCOPE} --mode block")
    tool = loaded.ns["agent"].tools[1]
    wrapper = tool.run
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        loaded.cell("agent.tools[1].run('/tmp/x')")
    loaded.magic("thoth mode research observe")
    assert tool.run is wrapper and unwrap(tool.run) is loaded.ns["delete_file"]
    assert loaded.cell("agent.tools[1].run('/tmp/x')") == "deleted /tmp/x"
    status = loaded.magic("thoth status")
    assert "mode observe" in repr(status) and "dropped events 0" in repr(status)
    sessions = loaded.magic("thoth sessions")
    assert len(sessions) == 1  # the mode switch kept the session


def test_status_reports_queue_and_enforcer(loaded: Shell) -> None:
    loaded.magic(f"thoth instrument agent {SCOPE} --tenant acme")
    status = loaded.magic("thoth status")
    text = repr(status)
    assert "agent 'research'" in text and "tenant acme" in text and "embedded" in text
    assert status.queue_depth >= 0 and status.dropped == 0
    assert "research" in status._repr_html_()


BAD_POLICY = """version: 1
rules:
  - id: r1
    tool: web_search
    decision: maybe
"""

STRICT_POLICY = """version: 1
default: allow
rules:
  - id: no-cats
    tool: web_search
    when: {query: {contains: cats}}
    decision: block
    reason: no cats
"""


def test_policy_check_load_show(loaded: Shell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY)
    loaded.magic(f"thoth policy check {bad}")
    out = capsys.readouterr().out
    assert "✗" in out and "line 5" in out and "decision" in out
    good = tmp_path / "strict.yaml"
    good.write_text(STRICT_POLICY)
    loaded.magic(f"thoth policy check {good}")
    assert "✓" in capsys.readouterr().out
    with pytest.raises(UsageError):
        loaded.magic(f"thoth policy load {bad}")
    loaded.magic(f"thoth instrument agent {SCOPE}")
    assert loaded.cell("agent.tools[0].run('cats')") == "results for cats"
    loaded.magic(f"thoth policy load {good}")
    with pytest.raises(thoth_nb.ThothPolicyViolation, match="no cats"):
        loaded.cell("agent.tools[0].run('cats')")
    shown = loaded.magic("thoth policy show")
    assert "no-cats" in repr(shown) and "no-cats" in shown._repr_html_()


def test_feed_on_off(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic(f"thoth instrument agent {SCOPE}")
    loaded.magic("thoth feed off")
    loaded.cell("agent.tools[0].run('dogs')")
    out = capsys.readouterr().out
    assert "live feed off" in out and "query='dogs'" not in out
    loaded.magic("thoth feed on")
    loaded.cell("agent.tools[0].run('dogs')")
    assert "query='dogs'" in capsys.readouterr().out


def test_approve_resolves_a_waiting_call(loaded: Shell, tmp_path: Path) -> None:
    policy = tmp_path / "hold.yaml"
    policy.write_text("version: 1\nrules:\n  - {id: h, tool: web_search, decision: step_up, reason: ask}\n")
    loaded.magic(f"thoth instrument agent {SCOPE} --mode step_up --policy {policy}")
    run = loaded.ns["agent"].tools[0].run
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(run("cats")), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not thoth_nb.holds() and time.monotonic() < deadline:
        time.sleep(0.02)
    pending = loaded.magic("thoth approvals --status pending")
    assert len(pending) == 1 and pending["tool_name"].tolist() == ["web_search"]
    record = loaded.magic(f"thoth approve {pending['approval_id'][0]} --note fine")
    assert record["status"] == "approved" and record["note"] == "fine"
    worker.join(10)
    assert results == ["results for cats"]
    assert loaded.magic("thoth approvals")["status"].tolist() == ["approved"]
    assert loaded.magic("thoth approvals --since 1h")["status"].tolist() == ["approved"]
    assert loaded.magic("thoth approvals --since 2999-01-01T00:00:00Z").empty


def test_cell_magic_governs_objects_made_in_the_cell(loaded: Shell) -> None:
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        loaded.cell("""%%thoth --agent-id cellbot --scope web_search --mode block
fresh = Agent()
fresh.tools[0].run("ok")
fresh.tools[1].run("/tmp/y")
""")
    frame = loaded.magic("thoth events --agent cellbot")
    assert frame["decision"].dropna().tolist() == ["ALLOW", "BLOCK"]
    assert is_governed(loaded.ns["fresh"].tools[0].run)
    # last expression is the cell's value
    assert loaded.cell("%%thoth --agent-id cellbot --scope web_search\nfresh.tools[0].run('x')") == "results for x"


def test_cell_magic_overrides_options_of_tools_instrumented_inside(loaded: Shell) -> None:
    loaded.cell("""%%thoth --mode observe --agent-id observed
import thoth_nb
inner = thoth_nb.instrument(Agent(), agent_id="strict", tenant_id="local", approved_scope=["web_search"],
                            enforcement="block")
inner.tools[1].run("/tmp/z")
""")
    frame = loaded.magic("thoth events --agent observed")
    assert frame["decision"].dropna().tolist() == ["ALLOW"]
    assert "observe" in frame["reason"].dropna().iloc[-1]
    assert _context.config_override.get() is None  # reset after the cell


def test_completion(loaded: Shell) -> None:
    from IPython.core.completer import provisionalcompleter

    loaded.magic(f"thoth instrument agent {SCOPE}")

    def complete(text: str) -> list[str]:
        with provisionalcompleter():
            return [c.text for c in loaded.ip.Completer.completions(text, len(text))]

    assert "instrument" in complete("%thoth ins")
    assert complete("%thoth mode ") == ["research"]
    assert set(complete("%thoth mode research ")) == {"observe", "step_up", "block", "progressive"}
    assert set(complete("%thoth feed ")) == {"on", "off"}
    assert "agent" in complete("%thoth instrument ag")


def test_explain_from_a_server() -> None:
    import httpx

    from thoth_nb.notebook.magics import _explain_remote

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/explain"
        body = request.read()
        if b"vio_gone" in body:
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(200, json={"violation_id": "vio_1", "what_happened": "called x",
                                         "why_it_was_blocked": "rule r", "what_to_do_next": "ask",
                                         "business_impact": "none", "severity": "high"})

    transport = httpx.MockTransport(handler)
    data = _explain_remote("http://s.test", "acme", "vio_1", transport)
    assert data["why_it_was_blocked"] == "rule r"
    with pytest.raises(UsageError, match="no violation 'vio_gone'"):
        _explain_remote("http://s.test", "acme", "vio_gone", transport)


def test_config_traitlets_are_the_defaults(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic("config ThothMagics.mode = 'OBSERVE'")
    loaded.magic("config ThothMagics.tenant = 'acme'")
    loaded.magic("thoth instrument agent --scope web_search")
    assert "in observe mode" in capsys.readouterr().out
    assert loaded.cell("agent.tools[1].run('/tmp/q')") == "deleted /tmp/q"  # observe: runs, is recorded
    assert thoth_nb.violations(tenant_id="acme")["observed"].tolist() == [True]
    loaded.magic("config ThothMagics.mode = 'sometimes'")  # %config logs the trait error
    assert loaded.ip.magics_manager.registry["ThothMagics"].mode == "observe"


def test_unload_keeps_governance_the_user_added_before(loaded: Shell) -> None:
    loaded.cell("import thoth_nb\nmine = thoth_nb.instrument(Agent(), agent_id='mine', tenant_id='local', "
                "approved_scope=['web_search'])\nmine_runs = [t.run for t in mine.tools]")
    loaded.magic("thoth instrument mine --agent-id mine --scope web_search,delete_file --mode observe")
    loaded.magic("unload_ext thoth_nb")
    mine = loaded.ns["mine"]
    assert [t.run for t in mine.tools] == loaded.ns["mine_runs"]  # still the user's own governed wrappers
    assert all(is_governed(t.run) for t in mine.tools)


def test_cell_magic_defines_async_functions(loaded: Shell) -> None:
    # (top-level await in %%thoth cells: test_magics_async.py)
    loaded.cell("%%thoth --agent-id a --scope web_search\nasync def f():\n    await g()\n")


def test_feed_covers_the_cell_that_loads_the_extension(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.cell(AGENT_CODE)
    shell.cell("%load_ext thoth_nb\n%thoth instrument agent --agent-id research --scope web_search\n"
               "agent.tools[0].run('same-cell')")
    assert "query='same-cell'" in capsys.readouterr().out
    from thoth_nb.notebook import state

    assert state.feed is not None and state.feed.current is None  # closed at the end of that cell
    shell.cell("agent.tools[0].run('next-cell')")
    assert "query='next-cell'" in capsys.readouterr().out


def test_unload_restores_library_patches_made_while_loaded() -> None:
    langchain_core = pytest.importorskip("langchain_core.tools")
    from IPython.core.interactiveshell import InteractiveShell

    from thoth_nb.integrations import installed

    original_run = langchain_core.BaseTool.run
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "thoth_nb")

        @langchain_core.tool
        def lookup(q: str) -> str:
            """Look something up."""
            return q

        shell.user_ns["tools"] = [lookup]
        shell.run_line_magic("thoth", "instrument tools --agent-id a --scope lookup --tenant t")
        assert "langchain" in installed() and langchain_core.BaseTool.run is not original_run
        shell.run_line_magic("unload_ext", "thoth_nb")
        assert "langchain" not in installed() and langchain_core.BaseTool.run is original_run
    finally:
        InteractiveShell.clear_instance()
