from __future__ import annotations

import math

import pytest

from thoth_nb._models import (
    DecisionType,
    EnforcementDecision,
    apply_modified_args,
    json_safe,
    parse_decision_value,
    tool_args_of,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("allow", DecisionType.ALLOW), (" deny ", DecisionType.BLOCK), ("CHALLENGE", DecisionType.STEP_UP),
        ("escalate", DecisionType.STEP_UP), ("review", DecisionType.STEP_UP), ("transform", DecisionType.MODIFY),
        ("MODIFIED", DecisionType.MODIFY), ("hold", DecisionType.DEFER), ("deferred", DecisionType.DEFER),
        ("step-up", DecisionType.STEP_UP), ("maybe", None), (None, None), (3, None),
    ],
)
def test_decision_aliases(raw: object, expected: DecisionType | None) -> None:
    assert parse_decision_value(raw) is expected


def test_unknown_or_missing_decision_blocks() -> None:
    assert EnforcementDecision.from_response({"decision": "perhaps"}).decision is DecisionType.BLOCK
    missing = EnforcementDecision.from_response({"reason": "x"})
    assert missing.decision is DecisionType.BLOCK and "unsupported authorization decision" in missing.reason


def test_authorization_decision_and_camel_case() -> None:
    d = EnforcementDecision.from_response(
        {"authorizationDecision": "STEP_UP", "holdToken": "h1", "riskScore": 70, "violationId": "v",
         "matchedRuleIds": ["r"]}
    )
    assert d.decision is DecisionType.STEP_UP and d.hold_token == "h1" and d.risk_score == 70
    assert d.violation_id == "v" and d.matched_rule_ids == ["r"]


def test_step_up_without_token_blocks() -> None:
    assert EnforcementDecision.from_response({"decision": "STEP_UP"}).decision is DecisionType.BLOCK


def test_reason_falls_back() -> None:
    assert EnforcementDecision.from_response({"decision": "MODIFY", "modification_reason": "m"}).reason == "m"
    assert EnforcementDecision.from_response({"decision": "DEFER", "defer_reason": "d"}).reason == "d"


def test_json_safe_never_raises() -> None:
    cyclic: list[object] = [1]
    cyclic.append(cyclic)

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    deep: dict[str, object] = {}
    node = deep
    for _ in range(10):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    out = json_safe({"b": b"\xffhi", "t": (1, 2), "s": {3, 1}, "nan": math.nan, "inf": math.inf, "c": cyclic,
                     "h": Hostile(), 5: "int key", "deep": deep})
    assert out["b"] == "\ufffdhi" and out["t"] == [1, 2] and out["s"] == [1, 3]
    assert out["nan"] == "nan" and out["inf"] == "inf"
    assert out["c"] == [1, "[circular]"]
    assert out["h"] == "<unprintable Hostile>" and out["5"] == "int key"
    text = str(out["deep"])
    assert "[truncated]" in text


def test_tool_args_shapes() -> None:
    assert tool_args_of(({"a": 1},), {}) == {"a": 1}
    assert tool_args_of((), {"a": 1}) == {"a": 1}
    assert tool_args_of((), {}) is None
    assert tool_args_of((1, 2), {"k": 3}) == {"args": [1, 2], "kwargs": {"k": 3}}
    assert tool_args_of((1,), {}) == {"args": [1]}


def test_apply_modified_args_rules() -> None:
    assert apply_modified_args({"args": [9], "kwargs": {"k": 1}}, (1,), {}) == ((9,), {"k": 1})
    assert apply_modified_args({"args": [9]}, (1,), {"z": 2}) == ((9,), {"z": 2})
    assert apply_modified_args({"q": "new"}, ({"q": "old"},), {}) == (({"q": "new"},), {})
    assert apply_modified_args({"input": "x"}, ("y",), {}) == (("x",), {})
    assert apply_modified_args({"arg0": 1, "arg1": 2}, (0, 0), {}) == ((1, 2), {})
    assert apply_modified_args({"path": "/safe"}, (), {"path": "/etc"}) == ((), {"path": "/safe"})
    assert apply_modified_args({"weird": 1}, (1, 2), {}) == ((1, 2), {})
