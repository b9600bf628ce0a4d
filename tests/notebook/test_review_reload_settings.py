"""`%reload_ext thoth_nb` keeps what the user set with `%thoth` (feed off, the loaded policy): the reloaded
agents are still decided by the loaded policy, so `%thoth policy show` and the next `%thoth instrument`
must use it too."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbshell import Shell

import thoth_nb

POLICY = "version: 1\nrules:\n  - {id: no-search, tool: web_search, decision: block, reason: searching is off}\n"


def test_reload_keeps_feed_and_policy(loaded: Shell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    loaded.magic("thoth feed off")
    loaded.magic(f"thoth policy load {path}")
    loaded.magic("thoth instrument agent --scope web_search")
    loaded.magic("reload_ext thoth_nb")
    capsys.readouterr()
    loaded.magic("thoth feed")
    assert "live feed off" in capsys.readouterr().out
    assert loaded.magic("thoth policy show").source == str(path.resolve())
    loaded.cell("other = Agent()")
    loaded.magic("thoth instrument other --scope web_search")
    for name in ("agent", "other"):  # the reloaded agent and the one instrumented after the reload
        with pytest.raises(thoth_nb.ThothPolicyViolation, match="searching is off"):
            loaded.cell(f"{name}.tools[0].run('q')")


def test_unload_then_load_starts_from_the_defaults(loaded: Shell, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    loaded.magic("thoth feed off")
    loaded.magic("unload_ext thoth_nb")
    loaded.magic("load_ext thoth_nb")
    capsys.readouterr()
    loaded.magic("thoth feed")
    assert "live feed on" in capsys.readouterr().out
