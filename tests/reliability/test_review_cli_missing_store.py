"""Read and maintenance commands given a store path that does not exist (a typo in --db): an error naming
the path, never a new empty store reported as "intact" or "(none)"."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_nb.cli import main


@pytest.mark.parametrize("argv", [
    ["audit", "verify"], ["audit", "export", "--out", "{tmp}/bundle"], ["db", "prune", "--older-than", "30d"],
    ["db", "export", "--parquet", "{tmp}/e.parquet"], ["keys", "list"], ["keys", "revoke", "key_x"],
])
def test_a_mistyped_store_path_is_an_error_and_creates_nothing(
        tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if "export" in argv and "--parquet" in argv:
        pytest.importorskip("pyarrow")
    typo = tmp_path / "typo" / "thoth.db"
    code = main([a.format(tmp=tmp_path) for a in argv] + ["--db", str(typo)])
    err = capsys.readouterr().err
    assert code == 2 and str(typo) in err and "does not exist" in err
    assert not typo.parent.exists()


def test_a_directory_given_as_the_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_keys_create_still_starts_a_new_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new" / "keys.db"
    assert main(["keys", "create", "--tenant", "acme", "--role", "admin", "--db", str(db)]) == 0
    assert db.is_file()
    capsys.readouterr()
    assert main(["keys", "list", "--db", str(db)]) == 0 and "acme" in capsys.readouterr().out
