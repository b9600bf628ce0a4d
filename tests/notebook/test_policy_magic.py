"""`%%thoth_policy` through a real InteractiveShell: cases in YAML, the named or the current policy, --strict."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from nbshell import Shell

POLICY = """
rules:
  - {id: no-secrets, tool: read_file, when: {path: {glob: "secrets/**"}}, decision: block}
  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}, decision: step_up}
"""

CASES = """
- {name: secret, tool: read_file, args: {path: secrets/a.env}, expect: block}
- {tool: read_file, args: {path: notes.md}, expect: allow}
- {name: refund, tool: refund, args: {amount: 500}, expect: step_up}
"""


def run(shell: Shell, line: str, cell: str) -> object:
    return shell.ip.run_cell_magic("thoth_policy", line, cell)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_cases_against_a_named_policy_file(loaded: Shell, policy_file: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    result = run(loaded, str(policy_file), CASES)
    assert result["passed"].tolist() == [True, True, True]  # type: ignore[index]
    assert result["rule"].tolist() == ["no-secrets", "", "big-refund"]  # type: ignore[index]
    assert f"✓ {policy_file}: 3 of 3 cases pass" in capsys.readouterr().out


def test_failures_are_reported_and_strict_fails_the_cell(loaded: Shell, policy_file: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    wrong = CASES.replace("expect: step_up", "expect: allow")
    result = run(loaded, str(policy_file), wrong)
    assert result["passed"].tolist() == [True, True, False]  # type: ignore[index]
    assert "✗" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"refund \(refund: expected ALLOW, got STEP_UP\)"):
        run(loaded, f"{policy_file} --strict", wrong)


def test_current_policy_is_the_one_loaded_with_thoth_policy_load(loaded: Shell, policy_file: Path) -> None:
    loaded.magic(f"thoth policy load {policy_file}")
    assert run(loaded, "", CASES)["passed"].all()  # type: ignore[index]


def test_default_policy_when_nothing_is_loaded(loaded: Shell) -> None:
    result = run(loaded, "", "- {tool: read_file, args: {path: /etc/passwd}, expect: block}")
    assert result["rule"].tolist() == ["system-paths"]  # type: ignore[index]  # the built-in default policy


def test_inline_policy_and_mode_in_the_cell(loaded: Shell) -> None:
    body = "policy: |\n" + "".join(f"  {line}\n" for line in POLICY.strip().splitlines()) + "cases:\n" + CASES
    assert run(loaded, "", body)["passed"].all()  # type: ignore[index]
    as_block = run(loaded, "--mode block", body.replace("expect: step_up", "expect: block"))
    assert as_block["passed"].all()  # type: ignore[index]


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("", "# nothing yet\n", "the cell has no cases"),
        ("", "- {tool: x, expect: allow\n", "not valid YAML"),
        ("", "- {tool: x, expect: sometimes}", "'sometimes' is not a decision"),
        ("missing.yaml", CASES, "policy file not found"),
        ("--mode fast", CASES, "invalid choice"),
    ],
)
def test_bad_input_is_a_usage_error(loaded: Shell, line: str, cell: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(loaded, line, cell)


def test_unload_removes_the_cell_magic(shell: Shell) -> None:
    shell.magic("load_ext thoth_nb")
    assert "thoth_policy" in shell.ip.magics_manager.magics["cell"]
    shell.magic("unload_ext thoth_nb")
    assert "thoth_policy" not in shell.ip.magics_manager.magics["cell"]


def test_thoth_coverage_magic(loaded: Shell, policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic("thoth instrument agent --agent-id research --scope web_search,delete_file")
    loaded.cell("agent.tools[0].run('cats')")
    result = loaded.magic(f"thoth coverage {policy_file}")
    out = capsys.readouterr().out
    assert f"coverage of {policy_file} over 1 calls: 2 tool without rule, 2 rule never fired, 0 always approved" in out
    # delete_file was never called: it comes from the tool inventory instrument() recorded
    without = result[result["finding"] == "tool without rule"].set_index("tool_name")["calls"].to_dict()
    assert without == {"web_search": 1, "delete_file": 0}
    with pytest.raises(UsageError, match="policy file not found"):
        loaded.magic("thoth coverage nowhere.yaml")
