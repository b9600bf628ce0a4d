"""THOTH_LOG_LEVEL / LOG_LEVEL (seed README, Environment Variables): the decision logs it turns on are
seen in a plain script, and a STEP_UP decision log carries its hold_token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import logging, sys
import thoth_nb
from thoth_nb.testing import ScriptedEnforcer
from thoth_nb._transports.http import HTTPTransport

if sys.argv[1] == "basic":  # the application configures logging itself, after importing thoth_nb
    logging.basicConfig(level=logging.DEBUG, format="ROOT %(name)s %(message)s")
enforcer = ScriptedEnforcer({"decision": "STEP_UP", "hold_token": "tok-visible", "violation_id": "v1"})
enforcer.holds["tok-visible"] = {"resolved": True, "resolution": "ALLOW", "decision": "ALLOW"}
mock = enforcer.transport()
transport = HTTPTransport("http://enforcer.test", transport=mock, async_transport=mock)
tool = thoth_nb.governed(transport=transport, agent_id="a", tenant_id="t", approved_scope=["f"],
                         api_url="http://enforcer.test", step_up_poll_interval_ms=10)(lambda x: x)
assert tool(1) == 1
thoth_nb.shutdown(2)
"""


def run(tmp_path: Path, mode: str, **env: str) -> str:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_") and k != "LOG_LEVEL"}
    done = subprocess.run([sys.executable, str(script), mode], env={**clean, "THOTH_HOME": str(tmp_path / "h"),
                          "THOTH_FRAME_KEEPER": "0", **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize("variable", ["THOTH_LOG_LEVEL", "LOG_LEVEL"])
def test_debug_level_shows_decision_logs_with_hold_token(tmp_path: Path, variable: str) -> None:
    err = run(tmp_path, "plain", **{variable: "DEBUG"})
    assert "hold_token=tok-visible" in err


def test_no_level_no_debug_output(tmp_path: Path) -> None:
    assert "hold_token" not in run(tmp_path, "plain")


def test_thoth_log_level_beats_log_level(tmp_path: Path) -> None:
    assert "hold_token" not in run(tmp_path, "plain", THOTH_LOG_LEVEL="WARN", LOG_LEVEL="DEBUG")


def test_application_handlers_get_each_line_once(tmp_path: Path) -> None:
    """Once the application configures logging, records go to its handlers only (no duplicates)."""
    err = run(tmp_path, "basic", THOTH_LOG_LEVEL="DEBUG")
    lines = [line for line in err.splitlines() if "hold_token=tok-visible" in line]
    assert len(lines) == 1 and lines[0].startswith("ROOT thoth "), err
