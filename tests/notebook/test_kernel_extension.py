"""The extension in a real headless kernel (jupyter_client): load, instrument, a blocked call, the live
feed's widget updates arriving while the cell still runs, its static snapshot, `%thoth events`."""

from __future__ import annotations

import os
import queue
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]


class Kernel:
    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, code: str, timeout: float = 30.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every iopub message of one execution (until idle) and the execute_reply."""
        msg_id = self.client.execute(textwrap.dedent(code))
        messages: list[dict[str, Any]] = []
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no idle after {timeout}s; got {[m['msg_type'] for m in messages]}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        return messages, reply["content"]


def _text(messages: list[dict[str, Any]], kind: str = "stream") -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == kind)


@pytest.fixture
def kernel(thoth_home: Path, tmp_path: Path) -> Iterator[Kernel]:
    manager = jupyter_client.KernelManager(kernel_name="python3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    env.update({"THOTH_HOME": str(thoth_home), "IPYTHONDIR": str(tmp_path / "ipython")})
    manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield Kernel(client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


AGENT = """
import time
class Tool:
    def __init__(self, name, fn):
        self.name, self.run = name, fn
def web_search(query):
    return "results for " + query
def delete_file(path):
    return "deleted " + path
class Agent:
    def __init__(self):
        self.tools = [Tool("web_search", web_search), Tool("delete_file", delete_file)]
agent = Agent()
"""


def test_extension_in_a_headless_kernel(kernel: Kernel) -> None:
    messages, reply = kernel.run("%load_ext thoth_nb")
    assert reply["status"] == "ok", reply
    kernel.run(AGENT)
    messages, reply = kernel.run("%thoth instrument agent --agent-id kbot --scope web_search --mode block")
    assert reply["status"] == "ok", reply
    assert "governing agent as agent 'kbot' in block mode" in _text(messages)

    messages, reply = kernel.run("""
        agent.tools[0].run("first")
        time.sleep(0.3)
        try:
            agent.tools[1].run("/tmp/x")
        except Exception as exc:
            print("BLOCKED", type(exc).__name__)
        time.sleep(0.5)
        print("AFTER")
    """)
    assert reply["status"] == "ok", reply
    assert "BLOCKED ThothPolicyViolation" in _text(messages)
    kinds = [m["msg_type"] for m in messages]
    # the live widget: shown at the first call, its value updated by comm messages during the cell
    shown = next(m for m in messages if m["msg_type"] == "display_data")
    assert "application/vnd.jupyter.widget-view+json" in shown["content"]["data"]
    assert "first" in shown["content"]["data"]["text/plain"]  # readable where widgets are not
    updates = [i for i, m in enumerate(messages) if m["msg_type"] == "comm_msg"
               and "delete_file" in str(m["content"]["data"].get("state", {}).get("value", ""))]
    assert updates, kinds
    snapshot_at = kinds.index("update_display_data")
    after_at = next(i for i, m in enumerate(messages) if "AFTER" in m["content"].get("text", ""))
    assert updates[0] < after_at < snapshot_at  # the BLOCK row reached the frontend while the cell ran
    # at the end the widget is replaced by a static snapshot readable without JavaScript (nbconvert)
    final = messages[snapshot_at]["content"]
    assert final["transient"]["display_id"] == shown["content"]["transient"]["display_id"]
    assert "BLOCK" in final["data"]["text/html"] and "#cf222e" in final["data"]["text/html"]
    assert "delete_file" in final["data"]["text/plain"] and "ALLOW" in final["data"]["text/plain"]

    messages, reply = kernel.run("%thoth events --agent kbot")
    assert reply["status"] == "ok", reply
    result = next(m for m in messages if m["msg_type"] == "execute_result")["content"]["data"]
    assert "TOOL_CALL_BLOCK" in result["text/html"] and "delete_file" in result["text/plain"]

    messages, reply = kernel.run("%thoth status")
    result = next(m for m in messages if m["msg_type"] == "execute_result")["content"]["data"]
    assert "agent 'kbot'" in result["text/plain"] and "thoth-status" in result["text/html"]

    messages, reply = kernel.run("%unload_ext thoth_nb\nprint(agent.tools[1].run('/tmp/x'))")
    assert reply["status"] == "ok", reply
    assert "deleted /tmp/x" in _text(messages)
