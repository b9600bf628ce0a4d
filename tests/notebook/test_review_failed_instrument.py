"""A `%thoth instrument` that fails (not an agent, a bad option) governs nothing: it must not show up in
`%thoth status` nor become the tenant `%thoth events` reads by default (the recorded calls looked lost)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from nbshell import Shell

pytest.importorskip("pandas")


def test_failed_instrument_leaves_no_governor_behind(loaded: Shell) -> None:
    loaded.magic("thoth instrument agent --scope web_search")
    loaded.cell("agent.tools[0].run('q')")
    loaded.cell("x = 5")
    with pytest.raises(UsageError, match="cannot instrument a int"):
        loaded.magic("thoth instrument x --scope a --tenant acme --agent-id not-an-agent")
    with pytest.raises(UsageError, match="empty"):
        loaded.cell("empty = []")
        loaded.magic("thoth instrument empty --scope a --tenant acme --agent-id no-tools")
    assert loaded.magic("thoth events")["tool_name"].tolist() == ["web_search", "web_search"]
    status = repr(loaded.magic("thoth status"))
    assert "not-an-agent" not in status and "no-tools" not in status
