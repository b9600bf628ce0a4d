from __future__ import annotations

from pathlib import Path

import pytest

POLICY = """
version: 1
rules:
  - {id: etc, tool: "*", when: {"*": {regex: "^/etc/"}}, decision: block, severity: critical, hard: true}
  - {id: pay-big, tool: pay, when: {amount: {gt: 100}}, decision: step_up, severity: high}
  - {id: stream-secret, tool: "*", when: {topic: secret}, decision: block}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def cfg(policy_file: str) -> dict[str, object]:
    return {
        "agent_id": "agent",
        "tenant_id": "t",
        "approved_scope": ["read_file", "pay", "stream", "astream", "fetch", "search"],
        "policy": policy_file,
        "step_up_timeout_minutes": 0.05,
        "step_up_poll_interval_ms": 50,
    }
