from __future__ import annotations

import random
from pathlib import Path

import pytest

from thoth_nb._exceptions import PolicyError
from thoth_nb._models import DecisionType
from thoth_nb.engine.policy import Policy, load_policy, parse_policy


def rule_matches(when: dict[str, object], args: dict[str, object] | None) -> bool:
    policy = parse_policy({"rules": [{"id": "r", "tool": "t", "when": when, "decision": "block"}]})
    return policy.rules[0].matches(args)


@pytest.mark.parametrize(
    ("when", "args", "expected"),
    [
        ({"path": "/a"}, {"path": "/a"}, True),
        ({"path": "/a"}, {"path": "/b"}, False),
        ({"n": {"equals": 3}}, {"n": 3.0}, True),
        ({"n": {"not_equals": 3}}, {"n": 4}, True),
        ({"path": {"regex": "^/etc/"}}, {"path": "/etc/passwd"}, True),
        ({"path": {"regex": "^/etc/"}}, {"path": "/home/etc/"}, False),
        ({"path": {"glob": "/home/*/secrets/*"}}, {"path": "/home/al/secrets/k"}, True),
        ({"path": {"glob": "*.txt"}}, {"path": "a.csv"}, False),
        ({"amount": {"gt": 1000}}, {"amount": 1000.5}, True),
        ({"amount": {"gt": 1000}}, {"amount": 1000}, False),
        ({"amount": {"gte": 1000}}, {"amount": "1000"}, True),
        ({"amount": {"lt": 0}}, {"amount": -1}, True),
        ({"amount": {"lte": 5}}, {"amount": "six"}, False),
        ({"amount": {"gt": 1}}, {"amount": True}, False),
        ({"body": {"contains": "password"}}, {"body": "my password is"}, True),
        ({"tags": {"contains": "pii"}}, {"tags": ["x", "pii"]}, True),
        ({"body": {"not_contains": "ok"}}, {"body": "fine"}, True),
        ({"to": {"in": ["a", "b"]}}, {"to": "b"}, True),
        ({"to": {"not_in": ["a", "b"]}}, {"to": "c"}, True),
        ({"cc": {"exists": True}}, {"cc": None}, True),
        ({"cc": {"exists": True}}, {"to": 1}, False),
        ({"cc": {"exists": False}}, {"to": 1}, True),
        ({"q": {"length_gt": 3}}, {"q": "abcd"}, True),
        ({"q": {"length_lt": 3}}, {"q": "abcd"}, False),
        ({"headers.to": {"regex": "@evil"}}, {"headers": {"to": "x@evil.com"}}, True),
        ({"items.1": 5}, {"items": [4, 5]}, True),
        ({"*": {"contains": "../"}}, {"a": {"b": ["x", "../../etc"]}}, True),
        ({"*": {"contains": "../"}}, {"a": "fine"}, False),
        ({"path": "/a"}, None, False),
        ({"path": "/a", "mode": "w"}, {"path": "/a", "mode": "r"}, False),
    ],
)
def test_operators(when: dict[str, object], args: dict[str, object] | None, expected: bool) -> None:
    assert rule_matches(when, args) is expected


def test_any_groups_and_tool_globs() -> None:
    policy = parse_policy(
        {"rules": [{"id": "r", "tool": ["db_*", "exec"], "any": [{"q": {"contains": "DROP"}}, {"force": True}],
                    "decision": "step_up"}]}
    )
    rule = policy.rules[0]
    assert rule.applies_to("db_query") and rule.applies_to("exec") and not rule.applies_to("read")
    assert rule.matches({"q": "DROP TABLE x"}) and rule.matches({"force": True}) and not rule.matches({"q": "SELECT"})
    assert policy.rules_for(None, "db_query") == (rule,)
    assert policy.rules_for(None, "other") == ()


def test_default_policy_loads_and_is_sane() -> None:
    policy = load_policy(None)
    ids = {r.id for r in policy.rules}
    assert {"system-paths", "secrets-in-arguments", "path-traversal", "destructive-shell"} <= ids
    system = policy.rule("system-paths")
    assert system is not None and system.matches({"path": "/etc/passwd"}) and not system.matches({"path": "/tmp/x"})
    destructive = policy.rule("destructive-shell")
    assert destructive is not None and destructive.matches({"cmd": "sudo rm -rf /"})
    assert policy.default is DecisionType.ALLOW


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("rules:\n  - tool: x\n    decision: maybe\n", r":3 \(rules.0.decision\)", "allow, step_up, block"),
        ("rules:\n  - tool: x\n    when:\n      p: {regexp: a}\n    decision: block\n",
         r":4 \(rules.0.when.p.regexp\)", "unknown operator 'regexp'"),
        ("rules:\n  - tool: x\n    when:\n      p: {regex: '('}\n    decision: block\n", r":4", "invalid regular"),
        ("rules:\n  - tool: x\n    when:\n      n: {gt: lots}\n    decision: block\n", r":4", "gt needs a number"),
        ("rules:\n  - decision: block\n", r":2 \(rules.0.tool\)", "needs `tool:`"),
        ("rules:\n  - tool: x\n", r":2 \(rules.0\)", "needs `decision:`"),
        ("rules:\n  - tool: x\n    decison: block\n", r":3 \(rules.0.decison\)", "unknown rule field"),
        ("rule:\n  - tool: x\n", r":1 \(rule\)", "unknown top-level field"),
        ("rules: [\n", r":2", "not valid YAML"),
        ("rules:\n  - {id: a, tool: x, decision: block}\n  - {id: a, tool: y, decision: block}\n", r"rules.1.id",
         "duplicate rule id"),
        ("rate_limits:\n  - tool: x\n    max_calls: 0\n    per_seconds: 1\n", r":3 \(rate_limits.0.max_calls\)",
         "max_calls must be"),
        ("version: 2\n", r":1 \(version\)", "unsupported policy version"),
        ("rules:\n  - tool: x\n    decision: block\n    severity: huge\n", r":4", "severity must be"),
        ("a: 1\na: 2\n", r":2", "duplicate key"),
        ("- just\n- a list\n", "", "must be a mapping"),
    ],
)
def test_errors_name_line_and_field(tmp_path: Path, text: str, where: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    if where:
        assert __import__("re").search(where, str(info.value)), str(info.value)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_agent_sections_and_sequence_steps() -> None:
    policy = parse_policy(
        """
agents:
  bot:
    approved_scope: [read_file, send_email]
    rules:
      - tool: send_email
        after:
          - tool: read_file
            when: {path: {contains: secrets}}
        decision: block
"""
    )
    assert policy.agent_scopes == {"bot": ("read_file", "send_email")}
    rule = policy.rules[0]
    assert rule.agent_id == "bot" and rule.id == "bot:rule-1" and rule.after[0].tool == ("read_file",)
    assert policy.rules_for("other", "send_email") == ()


# --- the per-(agent, tool) plan and its merged prefilter ------------------------------------------

_PATTERNS = [
    {"regex": "^/etc/"}, {"regex": r"\.\./"}, {"regex": r"(?i)\.ssh|id_rsa"}, {"regex": "(?i)password|secret"},
    {"regex": "(?x) ^ s3 : // # a verbose pattern with a comment"}, {"regex": r"(a)\1"},
    {"regex": "(?P<x>ab)(?P=x)"}, {"glob": "/home/*/secrets/*"}, {"glob": "*.pem"}, {"glob": "[!a]*z"},
    {"contains": "DROP"}, {"equals": "/tmp/x"}, {"length_gt": 30}, {"regex": "(?i)^/Etc/.*conf$|k"},
    {"regex": r"(?i)\S+ssh"}, {"regex": "(?i)[a-c]z"},
]
_VALUES = ["/etc/passwd", "/home/al/secrets/k", "a/../b", "~/.SSH/id", "MY PASSWORD", "s3://bucket", "aa",
           "abab", "key.pem", "bz", "az", "DROP TABLE", "/tmp/x", "x" * 40, "/home/user/notes.txt", 7, None,
           ["/etc/passwd"], "PA\u017f\u017fWORD", "\u212a", "/ETC/A.CONF", "x SSH", "BZ", "\u0130d_rsa"]


def _random_policy(rng: random.Random) -> Policy:
    rules = []
    for i in range(rng.randint(1, 6)):
        when = {rng.choice(["path", "mode", "q"]): rng.choice(_PATTERNS) for _ in range(rng.randint(0, 2))}
        rule: dict[str, object] = {"id": f"r{i}", "tool": rng.choice(["t", "*", "t*"]), "decision": "step_up"}
        if rng.random() < 0.2:
            rule["any"] = [when, {"q": rng.choice(_PATTERNS)}]
        elif when:
            rule["when"] = when
        rules.append(rule)
    return parse_policy({"rules": rules})


def test_plan_prefilter_never_hides_a_matching_rule() -> None:
    """The merged prefilter may only skip rules that cannot match: checked against every rule one by one."""
    rng = random.Random(7)
    pruned = 0
    for _ in range(400):
        policy = _random_policy(rng)
        plan = policy.plan_for("agent", "t")
        for _ in range(10):
            args = {k: rng.choice(_VALUES) for k in rng.sample(["path", "mode", "q"], rng.randint(0, 3))}
            candidates = plan.candidates(args)
            matching = [r for r in policy.rules_for("agent", "t") if r.matches(args)]
            assert all(r in candidates for r in matching), (policy.text, args)
            pruned += len(candidates) < len(plan.rules)
    assert pruned > 500  # and it does prune: most random calls skip most rules


def test_plan_prefilter_skips_all_rules_when_no_pattern_can_match() -> None:
    policy = parse_policy({"rules": [
        {"id": "etc", "tool": "*", "when": {"path": {"regex": "^/etc/"}}, "decision": "block"},
        {"id": "keys", "tool": "*", "when": {"path": {"regex": "(?i)id_rsa"}, "mode": "r"}, "decision": "block"},
        {"id": "pem", "tool": "*", "when": {"path": {"glob": "*.pem"}}, "decision": "block"},
        {"id": "always", "tool": "other", "decision": "block"},
    ]})
    plan = policy.plan_for(None, "read_file")
    assert plan.candidates({"path": "/home/notes.txt", "mode": "r"}) == ()
    assert plan.candidates({"path": "/home/ID_RSA", "mode": "w"}) == plan.rules
    assert [r.id for r in policy.plan_for(None, "other").candidates({"path": "/x"})] == ["always"]
