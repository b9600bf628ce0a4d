"""The README's first command (`thoth-nb demo`) and the small CLI subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from thoth_nb.cli import main


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THOTH_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "thoth_nb", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_demo_allows_holds_and_blocks(thoth_home: Path) -> None:
    done = run("demo", "--approve-after", "0.05", home=thoth_home)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "reviewer approves" in out and "reviewer denies" in out
    assert "4 calls ran, 3 were stopped before running." in out
    assert "14 events recorded in" in out and str(thoth_home / "thoth.db") in out


def test_demo_ignores_an_earlier_demos_pending_hold(thoth_home: Path) -> None:
    import thoth_nb
    from thoth_nb._runtime import local_engine

    held = local_engine().decide({
        "agent_id": "demo-agent", "tenant_id": "demo", "tool_name": "send_email", "session_id": "old-session",
        "approved_scope": [], "enforcement_mode": "step_up", "tool_args": {"to": "x@example.com"},
    })
    assert held.hold_token
    done = run("demo", "--approve-after", "0.05", "--quiet", home=thoth_home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [h["session_id"] for h in thoth_nb.holds("pending", tenant_id="demo")] == ["old-session"]


def test_policy_check(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nrules:\n  - {tool: x, decision: block}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - {tool: x, decision: perhaps}\n")
    assert main(["policy", "check", str(good)]) == 0
    assert "ok (1 rules" in capsys.readouterr().out
    assert main(["policy", "check", str(bad)]) == 1
    assert "bad.yaml:3 (rules.0.decision)" in capsys.readouterr().err


def test_events_lists_what_the_store_holds(thoth_home: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import thoth_nb

    @thoth_nb.governed(agent_id="a", tenant_id="local", approved_scope=["search"])
    def search(q: str) -> str:
        return q

    search("x")
    thoth_nb.flush()
    assert main(["events", "--tenant", "local"]) == 0
    out = capsys.readouterr().out
    assert "TOOL_CALL_PRE" in out and "TOOL_CALL_POST" in out and "search" in out
