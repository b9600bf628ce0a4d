"""A real IPython InteractiveShell per test (jupysql's TestingShell idea: cell errors raise)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("IPython")

from nbshell import AGENT_CODE, Shell


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance(config=config)
    try:
        yield Shell(ip)
    finally:
        from thoth_nb import _context
        from thoth_nb.notebook import state, unload_ipython_extension

        if state.shell is ip:
            unload_ipython_extension(ip)
        state.unloaded = None
        _context.config_override.set(None)
        ip.history_manager.end_session()
        InteractiveShell.clear_instance()


@pytest.fixture
def loaded(shell: Shell) -> Shell:
    shell.magic("load_ext thoth_nb")
    shell.cell(AGENT_CODE)
    return shell
