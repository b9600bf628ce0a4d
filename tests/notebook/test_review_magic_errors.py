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
