"""A `multiprocessing` child started by fork (Linux's default before Python 3.14) calls governed tools and
returns: its events reach the store. Such a child ends with os._exit(), which skips atexit, so every
event it queued was lost without a trace."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import thoth_nb
    from thoth_nb import _runtime

    def lookup(q):
        return q

    tools = thoth_nb.instrument([lookup], agent_id="a", tenant_id="mp", approved_scope=["lookup"],
                                tool_inventory=False)
    tools[0]("parent")
    thoth_nb.flush()

    def work(i):
        for k in range(5):
            tools[0](f"child{i}-{k}")

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=work, args=(i,)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        with ctx.Pool(2) as pool:
            pool.map(work, [7, 8])
            pool.close()
            pool.join()
        thoth_nb.flush()
        print("exit codes", [p.exitcode for p in procs])
        print("stored", _runtime.local_store().count_events("mp"))
""")


def test_fork_children_of_multiprocessing_deliver_their_events(tmp_path: Path) -> None:
    script = tmp_path / "agents.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    env.update(THOTH_HOME=str(tmp_path / "home"), THOTH_FRAME_KEEPER="0",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "exit codes [0, 0]" in done.stdout
    # the parent's call (PRE + POST) and 4 children x 5 calls x 2 events
    assert "stored 42" in done.stdout, done.stdout + done.stderr
