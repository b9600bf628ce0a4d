"""`thoth-nb` given a broken store or bad input: exit non-zero with one line saying what to fix, no
traceback, and the store file untouched."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from thoth_nb.cli import main
from thoth_nb.engine.store import SQLiteStore

_REPO = str(Path(__file__).resolve().parents[2])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THOTH_HOME": str(home), "PYTHONPATH": _REPO}
    env.pop("THOTH_DATABASE_URL", None)
    env.pop("THOTH_DB", None)
    return subprocess.run([sys.executable, "-m", "thoth_nb.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def _one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thoth-nb: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("argv", [
    ["db", "upgrade"], ["db", "prune", "--older-than", "30d"], ["keys", "list"], ["keys", "revoke", "key_x"],
    ["keys", "create", "--tenant", "t", "--role", "agent"], ["audit", "verify"], ["events"], ["holds"],
])
def test_a_corrupt_store_file_is_one_clear_line_and_left_alone(tmp_path: Path, argv: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = home / "thoth.db"
    db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)  # a header, then garbage
    before = _digest(db)
    _one_clear_line(_run(*argv, home=home), str(db))
    assert _digest(db) == before
    assert sorted(p.name for p in home.iterdir()) == ["thoth.db"]


@pytest.mark.parametrize("argv", [["keys", "list"], ["keys", "create", "--tenant", "t", "--role", "admin"],
                                  ["events"]])
def test_a_thoth_home_that_is_not_a_folder_is_one_clear_line(tmp_path: Path, argv: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_clear_line(_run(*argv, home=blocker / "home"), "THOTH_HOME")


def test_an_age_too_large_for_a_date_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    for age in ("99999999999d", "999999d"):
        assert main(["db", "prune", "--older-than", age, "--db", str(db)]) == 2
        assert "--older-than" in capsys.readouterr().err


def test_approve_with_modified_args_that_are_not_json_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "apr_x", "--modified-args", "{bad"]) != 0
    assert "--modified-args" in capsys.readouterr().err
    assert main(["approve", "apr_x", "--modified-args", "[1, 2]"]) != 0
    assert "--modified-args" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["missing/dir/out.parquet", "."])
def test_export_to_an_unwritable_path_is_one_line_and_leaves_nothing(
        tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyarrow")
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    out = tmp_path / "out"
    out.mkdir()
    assert main(["db", "export", "--parquet", str(out / target), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thoth-nb: ") and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == [] and not list(tmp_path.glob("*.partial"))


def test_export_with_a_since_that_is_no_time_is_a_usage_error(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyarrow")
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    assert main(["db", "export", "--parquet", str(tmp_path / "e.parquet"), "--since", "yesterday",
                 "--db", str(db)]) == 2
    assert "--since" in capsys.readouterr().err
    assert not list(tmp_path.glob("e.parquet*"))


def test_upgrade_of_a_store_from_a_newer_thoth_nb_says_so(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES ('m999_from_the_future', '2030-01-01')")
    raw.close()
    assert main(["db", "upgrade", "--db", str(db)]) != 0
    err = capsys.readouterr().err
    assert "m999_from_the_future" in err and "newer" in err
