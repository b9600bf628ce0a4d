"""ruff and mypy run as part of the test command, so a lint error fails CI like a broken test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)  # mypy with a cold cache on a 2-core machine takes minutes
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "thoth_nb", "tests", "benchmarks"],
        [sys.executable, "-m", "mypy", "thoth_nb"],
    ],
    ids=["ruff", "mypy"],
)
def test_clean(command: list[str]) -> None:
    if shutil.which(command[0]) is None:  # pragma: no cover
        pytest.fail(f"{command[0]} missing")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
