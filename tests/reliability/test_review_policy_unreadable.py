"""Policy files that are not UTF-8, or nested deeper than Python's stack: a PolicyError naming the file
(`thoth-nb policy check` exits 1 with one line; instrument() raises ThothConfigError), not a
UnicodeDecodeError or RecursionError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import thoth_nb
from thoth_nb._exceptions import PolicyError
from thoth_nb.cli import main
from thoth_nb.engine.policy import load_policy, parse_policy

DEEP = "rules: " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize(("content", "words"), [
    (b"\xff\xfe\x00r\x00u\x00l\x00e\x00s", "not UTF-8"),
    (DEEP.encode(), "nested too deeply"),
])
def test_policy_check_reports_the_file_in_one_line(tmp_path: Path, content: bytes, words: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(content)
    assert main(["policy", "check", str(policy)]) == 1
    err = capsys.readouterr().err
    assert words in err and str(policy) in err and len(err.strip().splitlines()) == 1


def test_instrument_with_a_utf16_policy_is_a_config_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n", encoding="utf-16")

    def lookup(q: str) -> str:
        return q

    with pytest.raises(thoth_nb.ThothConfigError, match="UTF-8"):
        thoth_nb.instrument([lookup], agent_id="a", tenant_id="t", approved_scope=["lookup"], policy=str(policy))
    with pytest.raises(PolicyError):
        load_policy(policy)


def test_deep_nesting_in_policy_text_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="nested too deeply"):
        parse_policy(DEEP, name="PUT /v1/policies")
