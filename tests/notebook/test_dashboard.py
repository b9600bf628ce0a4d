"""The workbench dashboard (`%thoth dashboard`), `%thoth replay`, and the workbench notebook."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("pandas")

import thoth_nb
from thoth_nb import _runtime
from thoth_nb.notebook.dashboard import TABS, dashboard, policy_diff

POLICY = """
rules:
  - {id: no-etc, tool: read_file, when: {path: {regex: "^/etc/"}}, decision: block, severity: high}
  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}, decision: step_up}
"""


def _history(tmp_path: Path) -> Path:
    """Calls in block mode (one violation) and a pending step-up hold, all in the embedded store."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")

    def read_file(path: str) -> str:
        return path

    tools: list[Any] = [read_file]
    thoth_nb.instrument(tools, agent_id="clerk", approved_scope=["read_file", "refund"], tenant_id="local",
                        session_id="sess-1", policy=str(policy))
    tools[0](path="docs/a.md")
    with pytest.raises(thoth_nb.ThothPolicyViolation):
        tools[0](path="/etc/passwd")
    engine = _runtime.local_engine(str(policy))
    held = engine.decide({"agent_id": "clerk", "tenant_id": "local", "user_id": "u", "tool_name": "refund",
                          "session_id": "sess-2", "approved_scope": ["refund"], "enforcement_mode": "step_up",
                          "tool_args": {"amount": 500}})  # a hold nobody waits on
    assert held.hold_token
    thoth_nb.flush()
    return policy


def _html(widget: Any) -> str:
    """All HTML the widget tree shows right now."""
    parts = []
    stack = [widget]
    while stack:
        item = stack.pop()
        if hasattr(item, "value") and isinstance(item.value, str):
            parts.append(item.value)
        for output in getattr(item, "outputs", ()):
            parts.extend(f"{k}: {v}" for k, v in output.get("data", {}).items())
        stack.extend(getattr(item, "children", ()))
    return "\n".join(parts)


def _buttons(widget: Any) -> list[Any]:
    import ipywidgets

    found, stack = [], [widget]
    while stack:
        item = stack.pop()
        if isinstance(item, ipywidgets.Button):
            found.append(item)
        stack.extend(getattr(item, "children", ()))
    return found


def test_empty_store_renders_every_tab() -> None:
    tab = dashboard(analytics=True)
    assert [tab.get_title(i) for i in range(len(TABS))] == list(TABS)
    bundle = tab._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    snapshot = bundle["text/html"]
    assert "no sessions recorded" in snapshot and "no violations" in snapshot
    assert "no tool calls recorded yet" in snapshot
    assert "secrets-in-arguments" in snapshot  # the built-in policy's rules are listed


def test_tabs_show_the_history_and_buttons_resolve_holds(tmp_path: Path) -> None:
    _history(tmp_path)
    tab = dashboard(analytics=True)
    sessions, violations, approvals, policies, analytics = tab.children
    assert "sess-1" in _html(sessions) and "read_file" in _html(sessions)
    assert "/etc/passwd" in _html(sessions)  # the selected session's timeline, with arguments
    shown = _html(violations)
    assert "What to do next" in shown and "amount gt 100" in shown  # the newest violation, explained
    picker = violations.children[1]
    picker.value = next(value for label, value in picker.options if label.startswith("read_file"))
    shown = _html(violations)
    assert "no-etc: path regex" in shown and "What to do next" in shown  # Engine.explain from the rule
    assert "no-etc" in _html(policies) and "big-refund" in _html(policies)
    charts = _html(analytics)
    assert "calls analysed" in charts and "application/vnd.plotly.v1+json" in charts  # interactive charts
    buttons = {b.description: b for b in _buttons(approvals)}
    assert set(buttons) == {"Approve", "Deny"}
    pending = thoth_nb.approvals("pending")
    assert len(pending) == 1
    buttons["Approve"].click()
    resolved = thoth_nb.approvals("approved")
    assert len(resolved) == 1 and resolved["reviewer"].iloc[0]
    assert len(thoth_nb.approvals("pending")) == 0
    assert "approved" in _html(approvals) and not _buttons(approvals)  # re-rendered: no pending left
    assert "latency" in _html(approvals)
    snapshot = tab._repr_mimebundle_()["text/html"]
    assert "<img" in snapshot and "no-etc" in snapshot  # static charts for nbconvert


def test_policy_versions_and_diff(tmp_path: Path) -> None:
    store = _runtime.local_store()
    store.save_policy("local", POLICY, "e1", created_by="alice")
    store.save_policy("local", POLICY.replace("gt: 100", "gt: 50"), "e2", created_by="bob")
    tab = dashboard(analytics=False)
    policies = tab.children[TABS.index("Policies")]
    html = _html(policies)
    assert "v1" in html and "v2" in html and "alice" in html
    assert "-  - {id: big-refund" not in html or "+" in html
    text = policy_diff(POLICY, POLICY.replace("gt: 100", "gt: 50"), "v1", "v2")
    assert "-  - {id: big-refund, tool: refund, when: {amount: {gt: 100}}" in text
    assert "+  - {id: big-refund, tool: refund, when: {amount: {gt: 50}}" in text
    assert policy_diff("a\n", "a\n") == "(no differences)\n"


@pytest.mark.slow
def test_analytics_wait_for_their_tab_on_big_stores(tmp_path: Path) -> None:
    from benchmarks.notebook_data import make_store

    store = make_store(tmp_path / "big.db", 100_000)
    started = time.perf_counter()
    tab = dashboard(store=store, tenant_id="local", analytics="auto")
    opened = time.perf_counter() - started
    assert opened < 5.0, f"dashboard took {opened:.2f}s to open on 100,000 events"
    analytics = tab.children[TABS.index("Behavioral Analytics")]
    assert "calls analysed" not in _html(analytics)
    tab.selected_index = TABS.index("Behavioral Analytics")  # opening the tab computes them
    assert "50000 calls analysed" in _html(analytics)


def test_dashboard_and_replay_magics(shell: Any, tmp_path: Path) -> None:
    policy = _history(tmp_path)
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(POLICY + "  - {id: no-docs, tool: read_file, when: {path: {contains: docs}}, "
                                 "decision: block}\n", encoding="utf-8")
    shell.magic("load_ext thoth_nb")
    tab = shell.magic("thoth dashboard --analytics lazy")
    assert type(tab).__name__ == "Dashboard" and len(tab.children) == 5
    changes = shell.magic(f"thoth replay {stricter}")
    assert changes["transition"].astype(str).tolist() == ["ALLOW→BLOCK"]
    assert changes["after_rules"].iloc[0] == ["no-docs"]
    assert len(shell.magic(f"thoth replay {policy}")) == 0
    from IPython.core.error import UsageError

    with pytest.raises(UsageError):
        shell.magic(f"thoth replay {tmp_path / 'missing.yaml'}")


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workbench_notebook_runs_offline(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = Path(__file__).resolve().parents[2] / "notebooks" / "04_policy_workbench.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=90, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(str(v) for cell in nb.cells for output in cell.get("outputs", [])
                     for v in [output.get("text", ""), *output.get("data", {}).values()])
    assert "image/png" in str([o.get("data", {}).keys() for c in nb.cells for o in c.get("outputs", [])])
    assert "planted exfiltration found: True" in text
    assert "drift detected after the shift: True" in text
    assert "ALLOW→BLOCK" in text
    assert "tools run by the replay: 0" in text
    assert "stricter policy cases pass: True" in text and "2 of 2 cases pass" in text  # section 7
    assert "<built-in default policy>: 2 of 2 cases pass" in text and "parquet round trip: True" in text


def test_dashboard_on_a_server(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import httpx

    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server import BackgroundServer

    db, policy = tmp_path / "server.db", tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    store = SQLiteStore(db)
    key = store.create_api_key("acme", "admin", "admin")[1]
    store.close()
    server = BackgroundServer(db, policy=policy).start()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        base = {"agent_id": "clerk", "tenant_id": "acme", "user_id": "u", "session_id": "srv-1",
                "approved_scope": ["read_file", "refund"], "enforcement_mode": "block", "session_tool_calls": []}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10.0, trust_env=False) as client:
            blocked = client.post("/v1/enforce", json={**base, "tool_name": "read_file",
                                                       "tool_args": {"path": "/etc/passwd"}}).json()
            assert blocked["decision"] == "BLOCK"
            held = client.post("/v1/enforce", json={**base, "tool_name": "refund", "enforcement_mode": "step_up",
                                                    "tool_args": {"amount": 500}}).json()
            assert held["decision"] == "STEP_UP"
        tab = dashboard(api_url=server.url, api_key=key, tenant_id="acme", analytics=False)
        violations = tab.children[TABS.index("Violations")]
        picker = violations.children[1]
        picker.value = next(value for label, value in picker.options if label.startswith("read_file"))
        assert "no-etc: path regex" in _html(violations)  # POST /v1/explain
        assert "no-etc" in _html(tab.children[TABS.index("Policies")])  # GET /v1/policies
        approvals = tab.children[TABS.index("Approvals")]
        [approve] = [b for b in _buttons(approvals) if b.description == "Approve"]
        approve.click()  # POST /v1/approvals/{id}/resolve
        assert "could not resolve" not in _html(approvals)
        status = thoth_nb.approvals("approved", api_url=server.url, api_key=key, tenant_id="acme")
        assert len(status) == 1
    finally:
        server.stop()
