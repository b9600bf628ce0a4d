"""Bad `%thoth` input through a real InteractiveShell: a UsageError that says what to type, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from nbshell import Shell


@pytest.mark.parametrize("target", ["missing.yaml", "."])
def test_policy_show_of_a_file_it_cannot_read_is_a_usage_error(loaded: Shell, tmp_path: Path, target: str) -> None:
    path = tmp_path / target
    with pytest.raises(UsageError, match="cannot read the policy file"):
        loaded.magic(f"thoth policy show {path}")


def test_policy_show_of_a_loaded_file_deleted_since_is_a_usage_error(loaded: Shell, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules: []\n", encoding="utf-8")
    loaded.magic(f"thoth policy load {path}")
    path.unlink()
    with pytest.raises(UsageError, match=r"cannot read the policy file .*p\.yaml.*%thoth policy load"):
        loaded.magic("thoth policy show")


@pytest.mark.parametrize(("line", "usage"), [
    ("thoth instrument", "%thoth instrument [--agent-id"),
    ("thoth mode research", "%thoth mode agent {observe"),
    ("thoth events --limit x", "%thoth events [--agent"),
])
def test_usage_line_in_errors_is_the_line_magic(loaded: Shell, line: str, usage: str) -> None:
    """The usage line is what to type: `%thoth ...`, not the cell magic `%%thoth ...`."""
    with pytest.raises(UsageError) as info:
        loaded.magic(line)
    text = str(info.value)
    assert usage in text
    assert "%%thoth" not in text


def test_cell_magic_usage_and_help(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError) as info:
        loaded.ip.run_cell_magic("thoth", "--mode maybe", "ran = True\n")
    text = str(info.value)
    assert "%%thoth [--agent-id" in text and "%%%thoth" not in text
    assert "%%thoth -h" in text and "%thoth %%thoth" not in text
    # what the hint says to type works, and the cell does not run
    loaded.ip.run_cell_magic("thoth", "-h", "ran = True\n")
    assert "--scope" in capsys.readouterr().out
    assert "ran" not in loaded.ns


def test_thoth_policy_cell_usage_line(loaded: Shell) -> None:
    with pytest.raises(UsageError) as info:
        loaded.ip.run_cell_magic("thoth_policy", "--mode maybe", "- {tool: a, expect: allow}\n")
    assert "%%thoth_policy [" in str(info.value) and "%%%thoth_policy" not in str(info.value)


@pytest.mark.parametrize("sub", ["events", "violations", "sessions", "approvals"])
def test_negative_limit_is_a_usage_error(loaded: Shell, sub: str) -> None:
    """SQLite reads LIMIT -1 as no limit at all (and a frame's head(-1) drops the last row)."""
    with pytest.raises(UsageError, match=r"--limit.*0 or more"):
        loaded.magic(f"thoth {sub} --limit -1")
