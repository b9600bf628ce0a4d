"""LangChain tools governed by thoth_nb: every call path once, blocks as tool errors, holds, teardown."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, tool

import thoth_nb
from thoth_nb import _runtime
from thoth_nb.integrations import installed
from thoth_nb.integrations import langchain as lc_integration

TENANT = "lc-tenant"
POLICY = """\
version: 1
default: allow
scope_violation: {decision: block, severity: high, hard: true}
rules:
  - id: mail-needs-human
    tool: send_email
    decision: step_up
    reason: sending mail needs a human
    severity: medium
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return str(path)


@pytest.fixture
def counter() -> dict[str, int]:
    return {"search": 0, "delete": 0, "send_email": 0}


@pytest.fixture
def tools(counter: dict[str, int]) -> dict[str, BaseTool]:
    @tool
    def search(query: str) -> str:
        """Search the docs."""
        counter["search"] += 1
        return f"results for {query}"

    @tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        counter["delete"] += 1
        return f"deleted {path}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        counter["send_email"] += 1
        return f"sent to {to}"

    return {"search": search, "delete_file": delete_file, "send_email": send_email}


def govern(obj: Any, **extra: Any) -> Any:
    options = {"agent_id": "lc-agent", "tenant_id": TENANT, "approved_scope": ["search", "send_email"],
               "tool_inventory": False, **extra}
    return thoth_nb.instrument(obj, **options)


def events() -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return _runtime.local_store().events(TENANT)


def kinds(tool_name: str | None = None) -> list[str]:
    return [e["event_type"] for e in events() if tool_name is None or e["tool_name"] == tool_name]


@pytest.fixture(autouse=True)
def _restore() -> Any:
    yield
    lc_integration.LangChainIntegration.teardown()


def test_import_thoth_nb_does_not_import_langchain() -> None:
    code = "import sys, thoth_nb; print(any(m.startswith(('langchain', 'langgraph')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_allowed_call_runs_once_and_is_recorded(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    search = tools["search"]
    assert govern(search) is search
    assert search.invoke({"query": "llamas"}) == "results for llamas"
    assert counter["search"] == 1
    evs = events()
    assert [e["event_type"] for e in evs] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    post = evs[1]
    assert post["tool_name"] == "search"
    assert post["metadata"]["tool_args"] == {"query": "llamas"}
    assert post["metadata"]["framework"] == "langchain"
    assert post["metadata"]["authorization_decision"] == "ALLOW"


def test_block_is_a_tool_error_and_the_body_never_runs(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    govern(list(tools.values()))
    delete = tools["delete_file"]
    out = delete.invoke({"type": "tool_call", "name": "delete_file", "args": {"path": "/tmp/x"}, "id": "call-1"})
    assert isinstance(out, ToolMessage)
    assert out.status == "error"
    assert out.tool_call_id == "call-1"
    assert "Blocked by Thoth policy" in str(out.content)
    assert "not in the approved scope" in str(out.content)
    text = delete.invoke({"path": "/tmp/y"})  # no tool-call id: the observation text (AgentExecutor style)
    assert isinstance(text, str) and text.startswith("Blocked by Thoth policy")
    assert counter["delete"] == 0
    assert kinds("delete_file") == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK"] * 2


def test_on_block_raise(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    govern([tools["delete_file"]], on_block="raise")
    with pytest.raises(thoth_nb.ThothPolicyViolation, match="approved scope") as info:
        tools["delete_file"].invoke({"path": "/tmp/x"})
    assert info.value.tool_name == "delete_file"
    assert counter["delete"] == 0


@pytest.mark.parametrize("path", ["invoke", "run", "batch", "stream", "ainvoke", "arun", "astream", "abatch"])
async def test_every_call_path_is_governed_exactly_once(path: str, tools: dict[str, BaseTool],
                                                        counter: dict[str, int]) -> None:
    search = tools["search"]
    govern([search])
    args = {"query": "q"}
    if path == "invoke":
        result: Any = search.invoke(args)
    elif path == "run":
        result = search.run(args)
    elif path == "batch":
        result = search.batch([args])[0]
    elif path == "stream":
        result = "".join(search.stream(args))
    elif path == "ainvoke":
        result = await search.ainvoke(args)
    elif path == "arun":
        result = await search.arun(args)
    elif path == "abatch":
        result = (await search.abatch([args]))[0]
    else:
        result = "".join([chunk async for chunk in search.astream(args)])
    assert result == "results for q"
    assert counter["search"] == 1
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]


async def test_async_tool_allowed_and_blocked(counter: dict[str, int]) -> None:
    @tool
    async def search(query: str) -> str:
        """Async search."""
        counter["search"] += 1
        return f"async {query}"

    @tool
    async def delete_file(path: str) -> str:
        """Async delete."""
        counter["delete"] += 1
        return "deleted"

    govern([search, delete_file])
    assert await search.ainvoke({"query": "a"}) == "async a"
    out = await delete_file.ainvoke({"type": "tool_call", "name": "delete_file", "args": {"path": "p"}, "id": "c9"})
    assert isinstance(out, ToolMessage) and out.status == "error"
    assert counter == {"search": 1, "delete": 0, "send_email": 0}
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]


async def test_structured_tool_sync_func_through_ainvoke_is_governed_once(counter: dict[str, int]) -> None:
    def search(query: str, limit: int = 3) -> str:
        counter["search"] += 1
        return f"{limit} results for {query}"

    st = StructuredTool.from_function(search, name="search", description="Search.")
    govern(st)
    assert await st.ainvoke({"query": "z", "limit": 2}) == "2 results for z"  # invoke in an executor thread
    assert counter["search"] == 1
    evs = events()
    assert [e["event_type"] for e in evs] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    assert evs[0]["metadata"]["tool_args"] == {"query": "z", "limit": 2}


def test_subclass_overriding_run_is_governed_once(counter: dict[str, int]) -> None:
    class Search(BaseTool):
        name: str = "search"
        description: str = "Search."

        def _run(self, query: str) -> str:
            counter["search"] += 1
            return f"sub {query}"

        def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
            return super().run(tool_input, *args, **kwargs)

    class Delete(Search):
        name: str = "delete_file"

    search, delete = Search(), Delete()
    govern([search, delete])
    assert search.invoke("x") == "sub x"
    assert delete.invoke("y").startswith("Blocked by Thoth policy")
    assert counter["search"] == 1
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]
    assert events()[0]["metadata"]["tool_args"] == {"query": "x"}


def _approve_when_held(outcome: dict[str, Any], approve: bool = True) -> threading.Thread:
    def worker() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = thoth_nb.holds(tenant_id=TENANT)
            if pending:
                outcome["hold"] = pending[0]
                (thoth_nb.approve if approve else thoth_nb.deny)(pending[0]["hold_token"], reviewer="tester")
                return
            time.sleep(0.02)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("approve", [True, False])
def test_step_up_resolved_from_another_thread(approve: bool, tools: dict[str, BaseTool], counter: dict[str, int],
                                              policy: str) -> None:
    send = tools["send_email"]
    govern([send], policy=policy, enforcement="step_up", step_up_poll_interval_ms=50)
    outcome: dict[str, Any] = {}
    thread = _approve_when_held(outcome, approve)
    out = send.invoke({"type": "tool_call", "name": "send_email", "args": {"to": "bob", "body": "hi"}, "id": "c2"})
    thread.join(5)
    assert outcome["hold"]["tool_name"] == "send_email"
    assert isinstance(out, ToolMessage)
    if approve:
        assert out.content == "sent to bob" and out.status == "success"
        assert counter["send_email"] == 1
        assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
        assert events()[1]["metadata"]["decision_reason_code"] == "step_up_approved"
    else:
        assert out.status == "error" and "Blocked by Thoth policy" in str(out.content)
        assert counter["send_email"] == 0
        assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK"]


def test_chain_and_agent_like_objects_are_searched(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    chain = RunnableLambda(lambda q: {"path": q}) | tools["delete_file"]
    assert govern(chain) is chain
    assert chain.invoke("/tmp/z").startswith("Blocked by Thoth policy")

    class Executor:  # what AgentExecutor looks like to thoth_nb: an object with .tools
        def __init__(self, tools: list[BaseTool]) -> None:
            self.tools = tools

    executor = Executor([tools["search"]])
    govern(executor)
    assert tools["search"].run({"query": "q"}) == "results for q"
    assert counter == {"search": 1, "delete": 0, "send_email": 0}
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_BLOCK", "TOOL_CALL_PRE", "TOOL_CALL_POST"]


def test_plain_functions_next_to_tools_are_governed(tools: dict[str, BaseTool]) -> None:
    calls: list[str] = []

    def rm(path: str) -> str:
        calls.append(path)
        return "gone"

    mixed: list[Any] = [tools["search"], rm]
    govern(mixed)
    assert thoth_nb.unwrap(mixed[1]) is rm
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        mixed[1]("/tmp/a")
    assert calls == []


def test_reinstrumenting_does_not_double_govern(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    search = tools["search"]
    govern(search)
    govern(search, agent_id="other-agent")
    search.invoke({"query": "q"})
    evs = events()
    assert [e["event_type"] for e in evs] == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]
    assert evs[0]["agent_id"] == "other-agent"


def test_teardown_restores_the_originals(tools: dict[str, BaseTool], counter: dict[str, int]) -> None:
    original_run, original_arun = BaseTool.__dict__["run"], BaseTool.__dict__["arun"]
    govern(tools["delete_file"])
    assert "langchain" in installed()
    assert BaseTool.__dict__["run"] is not original_run
    lc_integration.LangChainIntegration.teardown()
    assert BaseTool.__dict__["run"] is original_run and BaseTool.__dict__["arun"] is original_arun
    assert "langchain" not in installed()
    assert tools["delete_file"].invoke({"path": "/tmp/q"}) == "deleted /tmp/q"  # ungoverned again
    assert counter["delete"] == 1
    assert kinds() == []


def test_bad_input_is_an_error_not_a_silent_no_op(tools: dict[str, BaseTool]) -> None:
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

    class ToolModel(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[{"name": getattr(t, "name", "x")} for t in tools])

    bound = ToolModel(responses=[]).bind_tools([tools["search"]])
    with pytest.raises(thoth_nb.ThothConfigError, match="bind_tools"):
        govern(bound)
    with pytest.raises(thoth_nb.ThothConfigError, match="on_block"):
        govern(tools["search"], on_block="ignore")
    with pytest.raises(thoth_nb.ThothConfigError, match="framework objects"):
        govern([lambda: None], on_block="raise")


def test_version_outside_the_tested_range_warns(tools: dict[str, BaseTool], monkeypatch: pytest.MonkeyPatch) -> None:
    lc_integration.LangChainIntegration.teardown()
    monkeypatch.setattr(lc_integration.LangChainIntegration, "supported", ((0, 1), (0, 2)))
    with pytest.warns(RuntimeWarning, match=r"tested with langchain-core >=0\.1,<0\.2; you have"):
        govern(tools["search"])
    assert tools["search"].invoke({"query": "q"}) == "results for q"  # still governed, only warned
    assert kinds() == ["TOOL_CALL_PRE", "TOOL_CALL_POST"]


def test_missing_library_names_the_extra_to_install() -> None:
    code = """
import sys
sys.modules["langchain_core"] = None  # as if langchain-core were not installed
import thoth_nb

class FakeTool:
    __module__ = "langchain_core.tools.structured"
    name = "search"

try:
    thoth_nb.instrument(FakeTool(), agent_id="a", tenant_id="t", approved_scope=["search"], tool_inventory=False)
except thoth_nb.ThothConfigError as exc:
    print("ERROR", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "ERROR langchain-core is not installed" in out.stdout
    assert 'pip install "thoth-nb[langchain]"' in out.stdout


@pytest.mark.parametrize("use_async", [False, True])
async def test_callbacks_see_a_blocked_call_as_a_tool_error(use_async: bool, tools: dict[str, BaseTool]) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[tuple[str, Any]] = []

    class Recorder(BaseCallbackHandler):
        def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
            seen.append(("start", serialized["name"]))

        def on_tool_error(self, error: BaseException, **kwargs: Any) -> None:
            seen.append(("error", type(error).__name__))

        def on_tool_end(self, output: Any, **kwargs: Any) -> None:
            seen.append(("end", output))

    delete = tools["delete_file"]
    govern(delete)
    config: Any = {"callbacks": [Recorder()]}
    out = await delete.ainvoke({"path": "/x"}, config) if use_async else delete.invoke({"path": "/x"}, config)
    assert out.startswith("Blocked by Thoth policy")
    assert seen == [("start", "delete_file"), ("error", "ThothPolicyViolation")]


def test_reviewer_modified_args_are_what_the_tool_gets(tools: dict[str, BaseTool], counter: dict[str, int],
                                                       policy: str) -> None:
    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        counter["send_email"] += 1
        return f"sent to {to}: {body}"

    govern(send_email, policy=policy, enforcement="step_up", step_up_poll_interval_ms=50)

    def review() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = thoth_nb.holds(tenant_id=TENANT)
            if pending:
                thoth_nb.approve(pending[0]["hold_token"], modified_args={"to": "safe@example.com", "body": "redacted"})
                return
            time.sleep(0.02)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    out = send_email.invoke({"type": "tool_call", "name": "send_email", "args": {"to": "bob", "body": "s3cret"},
                             "id": "c3"})
    thread.join(5)
    assert out.content == "sent to safe@example.com: redacted"
    assert counter["send_email"] == 1
