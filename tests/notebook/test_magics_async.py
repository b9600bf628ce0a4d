"""`%%thoth` cells with top-level await: through a real InteractiveShell (IPython's own loop runner) and a
real kernel (nbclient: ipykernel awaits the cell on its running event loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from nbshell import Shell

from thoth_nb import _context
from thoth_nb._instrument import is_governed

ASYNC_CELL = """%%thoth --agent-id cellbot --scope web_search --mode observe
import asyncio
async def go(path):
    await asyncio.sleep(0)
    return fresh.tools[1].run(path)
fresh = Agent()
first = await go("/tmp/awaited")
await asyncio.gather(go("/tmp/task"), asyncio.to_thread(fresh.tools[1].run, "/tmp/thread"))
"""


@pytest.fixture(autouse=True, scope="module")
def _close_ipython_loop() -> Iterator[None]:
    """IPython's loop runner keeps one event loop for the process and never closes it; close it after
    these tests (IPython makes a new one when it needs one again)."""
    yield
    from IPython.core import async_helpers

    loop = async_helpers._asyncio_event_loop
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def _transformers(shell: Shell) -> list[object]:
    return [t for t in shell.ip.input_transformers_cleanup if getattr(t, "__name__", "") == "thoth_async_cells"]


def test_await_in_a_governed_cell_runs_under_its_options(loaded: Shell) -> None:
    """Awaited coroutines, the tasks gather starts and a thread from to_thread all get the cell's options
    (observe: the out-of-scope deletes are recorded as would-be blocks and still run)."""
    value = loaded.cell(ASYNC_CELL)
    assert value == ["deleted /tmp/task", "deleted /tmp/thread"]  # the last expression is the cell's value
    assert loaded.ns["first"] == "deleted /tmp/awaited"
    assert is_governed(loaded.ns["fresh"].tools[1].run)  # governed after the statement that made it
    frame = loaded.magic("thoth events --agent cellbot")
    decided = frame[frame["decision"].notna()]
    assert sorted(decided["tool_args"].map(lambda a: a["path"])) == ["/tmp/awaited", "/tmp/task", "/tmp/thread"]
    assert set(decided["decision"]) == {"ALLOW"} and decided["reason"].str.contains("observe").all()
    assert _context.config_override.get() is None
    assert "__thoth_cell__" not in loaded.ns


def test_options_reach_agents_instrumented_inside_awaited_tasks(loaded: Shell) -> None:
    """An agent instrumented inside a task (with its own enforcement="block") gets the cell's override."""
    loaded.cell("""%%thoth --mode observe --agent-id observed
import asyncio, thoth_nb
async def build_and_call():
    await asyncio.sleep(0)
    inner = thoth_nb.instrument(Agent(), agent_id="strict", tenant_id="local", approved_scope=["web_search"],
                                enforcement="block")
    return inner.tools[1].run("/tmp/z")
result = (await asyncio.gather(asyncio.create_task(build_and_call())))[0]
""")
    assert loaded.ns["result"] == "deleted /tmp/z"  # observe: not blocked
    frame = loaded.magic("thoth events --agent observed")
    assert frame["decision"].dropna().tolist() == ["ALLOW"]
    assert "observe" in frame["reason"].dropna().iloc[-1]


def test_a_failing_async_cell_resets_its_options(loaded: Shell) -> None:
    with pytest.raises(ZeroDivisionError):
        loaded.cell("%%thoth --mode observe --agent-id a\nimport asyncio\nawait asyncio.sleep(0)\n1 / 0")
    assert _context.config_override.get() is None
    assert "__thoth_cell__" not in loaded.ns


def test_bad_options_in_an_async_cell_are_a_usage_error(loaded: Shell) -> None:
    with pytest.raises(UsageError, match="--mode"):
        loaded.cell("%%thoth --mode sometimes\nimport asyncio\nawait asyncio.sleep(0)")
    assert _context.config_override.get() is None


def test_ipython_syntax_in_the_body_and_a_quiet_last_line(loaded: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    out = loaded.cell("%%thoth --agent-id a --scope web_search\nimport asyncio\nx = !echo shell-ok\n"
                      "await asyncio.sleep(0)\nx[0]")
    assert out == "shell-ok"
    assert loaded.cell("%%thoth --agent-id a\nimport asyncio\nawait asyncio.sleep(0)\n41 + 1;") is None
    assert "42" not in capsys.readouterr().out


def test_cells_without_await_are_left_to_the_magic(loaded: Shell) -> None:
    transform = _transformers(loaded)[0]
    lines = ["%%thoth --agent-id a\n", "x = 1\n"]
    assert transform(lines) is lines  # type: ignore[operator]
    assert transform(["%%thothx\n", "await f()\n"]) == ["%%thothx\n", "await f()\n"]  # type: ignore[operator]
    assert "run_cell_magic('thoth'" in loaded.ip.transform_cell("%%thoth --agent-id a\nasync def f():\n    await g()\n")


def test_the_magic_called_directly_still_refuses_await_with_a_hint(loaded: Shell) -> None:
    """Without the transformer (run_cell_magic from code) the magic cannot await: it says what to do."""
    with pytest.raises(UsageError, match="top-level await"):
        loaded.ip.run_cell_magic("thoth", "--agent-id a", "import asyncio\nawait asyncio.sleep(0)")


def test_load_reload_unload_manage_one_transformer(shell: Shell) -> None:
    shell.magic("load_ext thoth_nb")
    assert len(_transformers(shell)) == 1
    shell.magic("reload_ext thoth_nb")
    assert len(_transformers(shell)) == 1
    shell.magic("unload_ext thoth_nb")
    assert not _transformers(shell)
    with pytest.raises(UsageError, match="thoth"):  # no %%thoth any more
        shell.cell("%%thoth --agent-id a\nimport asyncio\nawait asyncio.sleep(0)")


@pytest.mark.kernel
@pytest.mark.timeout(180)
def test_await_in_a_governed_cell_in_a_real_kernel(tmp_path: Path) -> None:
    pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    from nbshell import AGENT_CODE

    from thoth_nb.testing import run_notebook

    cells = [
        "%load_ext thoth_nb\n%config ThothMagics.feed = False",
        AGENT_CODE,
        ASYNC_CELL,
        # the cell's --mode block wins over the observe mode an awaited coroutine instruments with
        "%%thoth --mode block\nimport asyncio, thoth_nb\n"
        "async def attempt():\n    await asyncio.sleep(0)\n"
        "    inner = thoth_nb.instrument(Agent(), agent_id='lenient', tenant_id='local',\n"
        "                                approved_scope=['web_search'], enforcement='observe')\n"
        "    try:\n        inner.tools[1].run('/tmp/k')\n"
        "    except Exception as exc:\n        return type(exc).__name__\n"
        "print('blocked:', await attempt())",
        "frame = %thoth events --agent cellbot\n"
        "print('observed:', sorted(frame[frame['decision'].notna()]['tool_args'].map(lambda a: a['path'])))\n"
        "from thoth_nb import _context\nprint('override after:', _context.config_override.get())",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "async_cell.ipynb"
    nbformat.write(notebook, path)
    shown = run_notebook(path, cwd=tmp_path)
    assert "['deleted /tmp/task', 'deleted /tmp/thread']" in shown
    assert "observed: ['/tmp/awaited', '/tmp/task', '/tmp/thread']" in shown
    assert "blocked: ThothPolicyViolation" in shown
    assert "override after: None" in shown


def test_terminal_input_of_an_async_cell_still_ends_at_a_blank_line(loaded: Shell) -> None:
    manager = loaded.ip.input_transformer_manager
    assert manager.check_complete("%%thoth --agent-id a\nx = await f()\n")[0] == "incomplete"
    assert manager.check_complete("%%thoth --agent-id a\nx = await f()\n\n")[0] == "complete"


def test_with_autoawait_off_the_magic_explains(loaded: Shell) -> None:
    loaded.magic("autoawait False")
    try:
        with pytest.raises(UsageError, match="autoawait"):
            loaded.cell("%%thoth --agent-id a\nimport asyncio\nawait asyncio.sleep(0)")
    finally:
        loaded.magic("autoawait True")
