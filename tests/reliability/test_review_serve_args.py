"""`thoth-nb serve` refuses a port outside 1-65535 (uvicorn bound it modulo 65536 while the banner named
the number given) and a body limit below 1 byte (every request got 413), before it touches the store."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

from thoth_nb.cli import main


@pytest.mark.parametrize("argv", [["--port", "99999"], ["--port", "-1"], ["--port", "0"], ["--port", "http"],
                                  ["--max-body-bytes", "-5"], ["--max-body-bytes", "0"]])
def test_serve_rejects_impossible_numbers(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from thoth_nb import cli_server

    monkeypatch.setattr(cli_server, "cmd_serve", lambda args: 0)  # never start a server if parsing lets it by
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--no-auth", "--db", str(db), *argv])
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
    assert not db.exists()
