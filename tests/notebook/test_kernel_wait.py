"""Kernel level (D6): a real kernel holds a governed call; the test clicks the card's buttons over the
Jupyter protocol, the way a frontend does, and checks that the waiting cell resumes (or is denied).

Each test runs against the ipykernel installed here (7.4) and, when their virtual environments exist,
against 7.3 (`/tmp/venv73`) and 6.29 (`/tmp/venv629`):

    python -m venv /tmp/venv629 && /tmp/venv629/bin/pip install ipykernel==6.29.5 ipywidgets==8.1.9 -e .
    python -m venv /tmp/venv73 && /tmp/venv73/bin/pip install ipykernel==7.3.0 ipywidgets==8.1.9 -e .

On 7.0-7.3 the kernel cannot reroute comms itself; the test sends the click on a subshell, as
JupyterLab >= 4.4 and Notebook 7 do (`commsOverSubshells`).
"""

from __future__ import annotations

import os
import queue
import statistics
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

VENVS = {
    "7.4-here": sys.executable,
    "7.3": "/tmp/venv73/bin/python",
    "6.29": "/tmp/venv629/bin/python",
}

POLICY = """\
version: 1
default: allow
rules:
  - id: pay-needs-human
    tool: pay
    decision: step_up
    reason: payments need a human
    severity: high
"""

SETUP = """\
import time, asyncio, thoth_nb
from thoth_nb.notebook import approval
approval.install(get_ipython())
def pay(amount: int, to: str) -> str:
    print("RESUMED_AT", repr(time.time()))
    return f"paid {{amount}} to {{to}}"
def _async_pay():
    async def pay(amount: int, to: str) -> str:
        print("RESUMED_AT", repr(time.time()))
        await asyncio.sleep(0)
        return f"paid {{amount}} to {{to}}"
    return pay
opts = dict(agent_id="agent-1", approved_scope=["pay"], tenant_id="t1", policy={policy!r},
            enforcement="step_up", step_up_timeout_minutes={timeout})
pay_g = thoth_nb.governed(pay, **opts)
apay_g = thoth_nb.governed(_async_pay(), **opts)
print("SETUP_OK", approval._installed.waiter.strategy)
"""


class Kernel:
    """A started kernel plus a blocking client, with helpers for iopub and comm clicks."""

    def __init__(self, python: str, home: Path) -> None:
        from jupyter_client.kernelspec import KernelSpec
        from jupyter_client.manager import KernelManager

        self.km = KernelManager()
        self.km._kernel_spec = KernelSpec(
            argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="thoth-test", language="python",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
        env["THOTH_HOME"] = str(home)
        self.km.start_kernel(env=env, cwd=str(home))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.subshell_id: str | None = None
        self.comms: dict[str, dict[str, Any]] = {}  # comm_id -> widget state
        self.messages: list[dict[str, Any]] = []

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def execute(self, code: str) -> str:
        return str(self.kc.execute(code))

    def iopub(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg: dict[str, Any] = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        self.messages.append(msg)
        if msg["msg_type"] == "comm_open":
            self.comms[msg["content"]["comm_id"]] = dict(msg["content"]["data"].get("state", {}))
        elif msg["msg_type"] == "comm_msg":
            data = msg["content"]["data"]
            if data.get("method") in ("update", "echo_update"):
                self.comms.setdefault(msg["content"]["comm_id"], {}).update(data.get("state", {}))
        return msg

    def wait_for(self, predicate: Any, timeout: float) -> Any:
        """Read iopub until predicate(msg) is truthy (it is also asked once before reading, with {});
        fail after `timeout` seconds."""
        found = predicate({})
        if found:
            return found
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.iopub(min(left, 0.5))
            if msg is not None:
                found = predicate(msg)
                if found:
                    return found
        raise AssertionError(f"timed out after {timeout}s; last messages: "
                             f"{[m['msg_type'] for m in self.messages[-15:]]}")

    def button(self, description: str, timeout: float = 30.0) -> str:
        """The comm id of the card button with this description (from iopub comm_open)."""
        def match(msg: dict[str, Any]) -> str | None:
            for comm_id, state in self.comms.items():
                if state.get("_model_name") == "ButtonModel" and state.get("description") == description:
                    return comm_id
            return None

        return str(match({}) or self.wait_for(match, timeout))

    def run_until_idle(self, msg_id: str, timeout: float) -> dict[str, Any]:
        """Collect the cell's stream text and its reply; `timeout` bounds the wait."""
        self.wait_for(lambda m: m.get("msg_type") == "status" and m["content"]["execution_state"] == "idle"
                      and m["parent_header"].get("msg_id") == msg_id, timeout)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        return dict(reply["content"])

    def stdout_of(self, msg_id: str) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id)

    def create_subshell(self) -> str:
        msg = self.kc.session.msg("create_subshell_request", {})
        self.kc.control_channel.send(msg)
        reply = self.kc.control_channel.get_msg(timeout=10)
        assert reply["content"]["status"] == "ok", reply["content"]
        self.subshell_id = str(reply["content"]["subshell_id"])
        return self.subshell_id

    def send_comm(self, comm_id: str, data: dict[str, Any]) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        if self.subshell_id is not None:  # what JupyterLab >= 4.4 does on ipykernel 7
            msg["header"]["subshell_id"] = self.subshell_id
        self.kc.shell_channel.send(msg)

    def click(self, comm_id: str) -> float:
        """The ipywidgets 8 button click protocol; returns the wall time just before sending."""
        sent = time.time()
        self.send_comm(comm_id, {"method": "custom", "content": {"event": "click"}})
        return sent

    def set_value(self, comm_id: str, value: Any) -> None:
        self.send_comm(comm_id, {"method": "update", "state": {"value": value}, "buffer_paths": []})


def _version_of(python: str) -> str:
    import subprocess

    out = subprocess.run([python, "-c", "import ipykernel; print(ipykernel.__version__)"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


@pytest.fixture(params=list(VENVS), scope="module")
def python(request: pytest.FixtureRequest) -> str:
    path = VENVS[request.param]
    if not Path(path).exists():
        pytest.skip(f"no virtual environment at {path}")
    return path


@pytest.fixture
def kernel(python: str, tmp_path: Path) -> Iterator[Kernel]:
    home = tmp_path / "khome"
    home.mkdir()
    (home / "policy.yaml").write_text(POLICY)
    k = Kernel(python, home)
    k.version = _version_of(python)  # type: ignore[attr-defined]
    try:
        yield k
    finally:
        k.close()


def _setup(k: Kernel, timeout_minutes: float = 1.0) -> str:
    msg_id = k.execute(SETUP.format(policy="policy.yaml", timeout=timeout_minutes))
    reply = k.run_until_idle(msg_id, 60)
    assert reply["status"] == "ok", reply
    out = k.stdout_of(msg_id)
    assert "SETUP_OK" in out, out
    strategy = out.split("SETUP_OK", 1)[1].split()[0]
    if strategy == "frontend-subshell":
        k.create_subshell()
    return strategy


def _resumed_at(text: str) -> float:
    return float(text.split("RESUMED_AT", 1)[1].split()[0])


EXPECTED = {"7.4": "route-subshell", "7.3": "frontend-subshell", "6.2": "queue-pump"}


def test_strategy_matches_kernel_version(kernel: Kernel) -> None:
    strategy = _setup(kernel)
    assert strategy == EXPECTED[kernel.version[:3]], (kernel.version, strategy)  # type: ignore[attr-defined]


@pytest.mark.parametrize("agent", ["sync", "async"])
def test_approve_click_resumes_the_running_cell(kernel: Kernel, agent: str) -> None:
    _setup(kernel)
    call = 'pay_g(5, to="bob")' if agent == "sync" else 'await apay_g(5, to="bob")'
    msg_id = kernel.execute(f'print("RESULT", {call})\nprint("AFTER")')
    comm_id = kernel.button("Approve once")
    time.sleep(0.3)  # the agent is now waiting
    sent = kernel.click(comm_id)
    reply = kernel.run_until_idle(msg_id, 30)
    assert reply["status"] == "ok", reply
    out = kernel.stdout_of(msg_id)  # output after the wait lands in the waiting cell
    assert "RESULT paid 5 to bob" in out and "AFTER" in out, out
    latency = _resumed_at(out) - sent
    assert latency < 2.0, latency
    print(f"ipykernel {kernel.version} {agent}: click -> resume {latency * 1000:.1f} ms")  # type: ignore[attr-defined]


@pytest.mark.parametrize("agent", ["sync", "async"])
def test_deny_click_raises_policy_violation(kernel: Kernel, agent: str) -> None:
    _setup(kernel)
    msg_id = kernel.execute('pay_g(5, to="bob")' if agent == "sync" else 'await apay_g(5, to="bob")')
    comm_id = kernel.button("Deny")
    time.sleep(0.3)
    kernel.click(comm_id)
    reply = kernel.run_until_idle(msg_id, 30)
    assert reply["status"] == "error"
    assert reply["ename"] == "ThothPolicyViolation", reply
    assert "denied" in reply["evalue"], reply["evalue"]


def test_resolved_card_says_who_and_how_long(kernel: Kernel) -> None:
    _setup(kernel)
    msg_id = kernel.execute('pay_g(7, to="eve")')
    comm_id = kernel.button("Allow for this session")
    time.sleep(0.3)
    kernel.click(comm_id)
    assert kernel.run_until_idle(msg_id, 30)["status"] == "ok"

    def card_text(msg: dict[str, Any]) -> str | None:  # card updates may trail the cell's idle status
        texts = " ".join(str(s.get("value", "")) for s in kernel.comms.values()
                         if s.get("_model_name") == "HTMLModel")
        wanted = ("Approved for this session", "the agent waited", "by <b>")
        return texts if all(w in texts for w in wanted) else None

    kernel.wait_for(card_text, 10)
    # the session grant lets the same call through without a new card
    msg_id = kernel.execute('print("AGAIN", pay_g(7, to="eve"))')
    assert kernel.run_until_idle(msg_id, 30)["status"] == "ok"
    assert "AGAIN paid 7 to eve" in kernel.stdout_of(msg_id)


def test_approve_with_edited_arguments(kernel: Kernel) -> None:
    _setup(kernel)
    msg_id = kernel.execute('print("RESULT", pay_g(5000, to="mallory"))')
    edited = kernel.button("Approve with these arguments")
    editor = kernel.wait_for(lambda m: next((cid for cid, s in kernel.comms.items()
                                             if s.get("_model_name") == "TextareaModel"), None), 10)
    time.sleep(0.3)
    kernel.set_value(editor, '{"amount": 50, "to": "mallory"}')
    kernel.click(edited)
    reply = kernel.run_until_idle(msg_id, 30)
    assert reply["status"] == "ok", reply
    assert "RESULT paid 50 to mallory" in kernel.stdout_of(msg_id)


@pytest.mark.parametrize("agent", ["sync", "async"])
def test_interrupt_denies_and_the_kernel_stays_usable(kernel: Kernel, agent: str) -> None:
    _setup(kernel)
    msg_id = kernel.execute('pay_g(5, to="bob")' if agent == "sync" else 'await apay_g(5, to="bob")')
    kernel.button("Approve once")
    time.sleep(0.5)
    started = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.run_until_idle(msg_id, 30)
    elapsed = time.monotonic() - started
    assert reply["status"] == "error" and reply["ename"] in ("KeyboardInterrupt", "CancelledError"), reply
    assert elapsed < 5.0, elapsed
    print(f"ipykernel {kernel.version} {agent}: interrupt -> cell stopped {elapsed * 1000:.0f} ms")  # type: ignore[attr-defined]
    msg_id = kernel.execute('print("HOLDS", [(h["status"], h["note"]) for h in thoth_nb.holds("all")])')
    assert kernel.run_until_idle(msg_id, 30)["status"] == "ok"
    out = kernel.stdout_of(msg_id)
    assert "('denied', 'the waiting call was interrupted')" in out, out


def test_headless_timeout_denies(kernel: Kernel) -> None:
    _setup(kernel, timeout_minutes=0.02)  # 1.2 s; nobody clicks
    msg_id = kernel.execute('pay_g(5, to="bob")')
    reply = kernel.run_until_idle(msg_id, 30)
    assert reply["status"] == "error" and reply["ename"] == "ThothPolicyViolation", reply
    assert "timed out" in reply["evalue"] or "timeout" in reply["evalue"], reply["evalue"]


def test_two_held_calls_in_threads_resolve_independently(kernel: Kernel) -> None:
    _setup(kernel)
    code = textwrap.dedent("""\
        import threading
        results = {}
        def run(n):
            try:
                results[n] = pay_g(n, to="t%d" % n)
            except thoth_nb.ThothPolicyViolation as exc:
                results[n] = "denied"
        threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
        for t in threads: t.start()
        for t in threads: t.join(30)
        print("RESULTS", sorted(results.items()))
    """)
    msg_id = kernel.execute(code)

    def two_cards(msg: dict[str, Any]) -> list[str] | None:
        ids = [(cid, s) for cid, s in kernel.comms.items()
               if s.get("_model_name") == "ButtonModel" and s.get("description") in ("Approve once", "Deny")]
        return [cid for cid, _ in ids] if len(ids) == 4 else None

    kernel.wait_for(two_cards, 30)
    time.sleep(0.3)
    # each button's tooltip ends with its hold's approval id: approve one card, deny the other
    by_card: dict[str, dict[str, str]] = {}
    for cid, s in kernel.comms.items():
        if s.get("description") in ("Approve once", "Deny"):
            by_card.setdefault(s["tooltip"].rsplit(" ", 1)[-1], {})[s["description"]] = cid
    assert len(by_card) == 2, by_card
    first, second = by_card.values()
    kernel.click(first["Approve once"])
    kernel.click(second["Deny"])
    reply = kernel.run_until_idle(msg_id, 40)
    assert reply["status"] == "ok", reply
    out = kernel.stdout_of(msg_id)
    assert "RESULTS" in out and "denied" in out and "paid" in out, out


def test_http_fallback_resolves_while_the_cell_runs(kernel: Kernel) -> None:
    """The universal path: the card's direct buttons POST to a server thread in the kernel."""
    import httpx

    _setup(kernel)
    msg_id = kernel.execute('import thoth_nb.notebook.approval as A; A._installed.force_http = True\n'
                            'print("RESULT", pay_g(5, to="bob"))')
    kernel.button("Approve once")
    state = kernel.wait_for(lambda m: next((s for s in kernel.comms.values() if s.get("secret")), None), 10)
    time.sleep(0.3)
    url = f"http://127.0.0.1:{state['port']}/thoth/resolve"
    wrong = httpx.post(url, json={"id": state["approval_id"], "secret": "nope", "action": "approve"},
                       timeout=5, trust_env=False)
    assert wrong.status_code == 403
    body = {"id": state["approval_id"], "secret": state["secret"], "action": "approve"}
    ok = httpx.post(url, json=body, timeout=5, trust_env=False)
    assert ok.status_code == 200, ok.text
    again = httpx.post(url, json=body, timeout=5, trust_env=False)  # one-time secret
    assert again.status_code == 403
    reply = kernel.run_until_idle(msg_id, 30)
    assert reply["status"] == "ok", reply
    assert "RESULT paid 5 to bob" in kernel.stdout_of(msg_id)


def test_click_latency_median(kernel: Kernel) -> None:
    """Issue 6 performance: click -> tool resumes <= 250 ms median at the kernel level."""
    _setup(kernel)
    latencies: list[float] = []
    used: set[str] = set()
    for n in range(5):
        msg_id = kernel.execute(f'print("RESULT", pay_g({n + 10}, to="lat"))')
        approve = kernel.wait_for(
            lambda m: next((cid for cid, s in kernel.comms.items()
                            if s.get("description") == "Approve once" and not s.get("disabled")
                            and cid not in used), None), 30)
        used.add(approve)
        time.sleep(0.25)
        sent = kernel.click(approve)
        assert kernel.run_until_idle(msg_id, 30)["status"] == "ok"
        latencies.append(_resumed_at(kernel.stdout_of(msg_id)) - sent)
    median = statistics.median(latencies)
    print(f"ipykernel {kernel.version}: click -> resume median {median * 1000:.1f} ms "  # type: ignore[attr-defined]
          f"(all: {[round(x * 1000, 1) for x in latencies]})")
    assert median <= 0.25, latencies

