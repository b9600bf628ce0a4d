"""`local_engine()` parses a policy again only when its text changed, and still reports a bad edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_nb import _runtime
from thoth_nb._exceptions import PolicyError

GOOD = "version: 1\nrules:\n  - {id: a, tool: read_file, decision: block}\n"
EDITED = "version: 1\nrules:\n  - {id: b, tool: read_file, decision: step_up}\n"


def test_unchanged_policy_is_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(GOOD)
    engine = _runtime.local_engine(policy)
    parsed = []
    real = _runtime.load_policy
    monkeypatch.setattr(_runtime, "load_policy", lambda path: parsed.append(path) or real(path))
    assert _runtime.local_engine(policy) is engine
    _runtime.local_engine()  # the built-in default: parsed once, then reused
    _runtime.local_engine()
    assert parsed.count(None) <= 1 and policy not in parsed

    policy.write_text(EDITED)
    assert [r.id for r in _runtime.local_engine(policy).default_policy.rules] == ["b"]
    assert policy in parsed

    policy.write_text("version: 1\nrules:\n  - {id: c, tool: read_file, decision: maybe}\n")
    with pytest.raises(PolicyError, match="decision"):
        _runtime.local_engine(policy)
    with pytest.raises(PolicyError):  # reported every time, not only the first
        _runtime.local_engine(policy)
    policy.unlink()
    with pytest.raises(PolicyError, match="not found"):
        _runtime.local_engine(policy)
