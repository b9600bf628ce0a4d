"""The prefilter's literal tests (`startswith` / `in` instead of `re.search`) agree with `re` exactly.

`test_policy.py` checks the prefilter never hides a matching rule; here each field filter's `hit` is
compared with `re.search` of every pattern, both ways, on random literal-like patterns and values, and
the plain ALLOW shortcut of the engine with `_decide` on the same random calls.
"""

from __future__ import annotations

import random
import re
import warnings

import pytest

from thoth_nb.engine.decide import Engine
from thoth_nb.engine.policy import _compile_candidates, _FieldFilter, _literals, parse_policy
from thoth_nb.engine.store import SQLiteStore

_ATOMS = ["a", "B", "/", ".", r"\.", r"\-", "-", "_", "^", "$", "|", "[ab]", "[xY_]", "k", "s", "*", "(", ")",
          r"\|", "[", "]", "?", "(?i)", "#", " ", "~", r"\d", r"\A", "{2}", "é"]
_CHARS = "aAbBkKsSxyY_/.-| ~#\u017f\u212a\u0130é"


def _pattern(rng: random.Random) -> str:
    text = "".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 6)))
    return ("(?i)" if rng.random() < 0.4 else "") + text


def _compiles(pattern: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "possible nested set" and the like: leave those out
        try:
            re.compile(pattern)
        except (re.error, FutureWarning, DeprecationWarning):
            return False
    return True


@pytest.mark.parametrize("pattern", [
    "^/etc/", r"\.\./", r"(?i)\.ssh|id_rsa", "^[wa]", "(?i)password|secret|token", "(?i)^[K]ey", "a|^b|c",
])
def test_literal_patterns_are_recognised(pattern: str) -> None:
    assert _literals(pattern) is not None


@pytest.mark.parametrize("pattern", [
    "a.b", "x|", "|x", "(?i)", "(?m)^a", "(?s)a", r"\Aa", "a$", "[a-c]", "[^a]", r"\d", "a{2}", "(a)", "a*",
    "(?x)a b", "é",
])
def test_patterns_with_other_meanings_stay_regexes(pattern: str) -> None:
    assert _literals(pattern) is None


def test_field_filter_hit_agrees_with_re_search_exactly() -> None:
    rng = random.Random(11)
    literal_patterns = 0
    for _ in range(3000):
        patterns = [p for p in (_pattern(rng) for _ in range(rng.randint(1, 4))) if _compiles(p)]
        if not patterns:
            continue
        literal_patterns += sum(_literals(p) is not None for p in patterns)
        try:
            check = _FieldFilter("f", patterns)
        except re.error:  # the plan then evaluates every rule; nothing to compare
            continue
        candidates = _compile_candidates((check,), rules=("may match",), residual=())  # type: ignore[arg-type]
        for _ in range(8):
            value = "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 8)))
            expected = any(re.search(p, value) for p in patterns)
            assert (candidates({"f": value}) == ("may match",)) == expected, (patterns, value)
            assert candidates({"g": value}) == ()
    assert literal_patterns > 500  # the literal tests were exercised, not only the regex fallbacks


def test_plain_allow_check_agrees_with_decide(tmp_path: object) -> None:
    """The engine's shortcut answers exactly when `_decide` takes its plain-ALLOW branch, and records the
    call the same way; otherwise it answers None and records nothing."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    rng = random.Random(5)
    policy = parse_policy({"rules": [
        {"id": "etc", "tool": "*", "when": {"path": {"regex": "^/etc/"}}, "decision": "step_up"},
        {"id": "keys", "tool": "*", "when": {"path": {"regex": r"(?i)\.ssh|id_rsa"}}, "decision": "block"},
        {"id": "writes", "tool": "write_*", "when": {"mode": {"regex": "^[wa]"}}, "decision": "step_up"},
        {"id": "env", "tool": "read_file", "when": {"path": {"contains": ".env"}}, "decision": "block"},
    ], "rate_limits": [{"id": "rl", "tool": "search", "max_calls": 1000, "per_seconds": 60}]})
    store_a, store_b = SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db")
    try:
        shortcut, reference = Engine(store_a, policy), Engine(store_b, policy)
        for mode in ("step_up", "block", "observe", "progressive"):
            static = {"agent_id": "ag", "tenant_id": "t", "session_id": f"s-{mode}", "user_id": "u",
                      "approved_scope": ["read_file", "write_file", "search"], "enforcement_mode": mode}
            check = shortcut.plain_allow_check(static)
            if mode == "progressive":
                assert check is None
                continue
            assert check is not None
            answered = 0
            for _ in range(300):
                tool = rng.choice(["read_file", "write_file", "search", "delete"])
                paths = ["/home/a", "/srv/b", "/home/c", "/etc/x", "~/.SSH/k", "/srv/.env", "/tmp/id_rsa"]
                args = {"path": rng.choice(paths), "mode": rng.choice(["r", "rb", "w", "a"])}
                expected = reference._decide({**static, "tool_name": tool, "tool_args": args})
                got = check(tool, args)
                if got is None:
                    got = shortcut._decide({**static, "tool_name": tool, "tool_args": args})
                else:
                    answered += 1
                    assert expected.decision_reason_code == "allowed"
                assert (got.decision, got.decision_reason_code, got.matched_rule_ids) == (
                    expected.decision, expected.decision_reason_code, expected.matched_rule_ids)
            assert answered > 15  # read_file/write_file calls no rule matches (search has a rate limit)
            key = ("t", f"s-{mode}")
            assert list(shortcut._sessions[key].history) == list(reference._sessions[key].history)
    finally:
        store_a.close()
        store_b.close()


def test_policy_text_never_enters_the_generated_source(tmp_path: object) -> None:
    """Field names and literals are data in the generated prefilter's globals, never source text."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    marker = tmp_path / "pwned"
    field = f"x'):\n    __import__('pathlib').Path({str(marker)!r}).touch()\n#"
    literal = "q\"'); open('" + str(marker) + "', 'w'); ('"
    check = _FieldFilter(field, [re.escape(literal), "^a'b"])
    candidates = _compile_candidates((check,), rules=("may match",), residual=())  # type: ignore[arg-type]
    assert candidates({field: "zz" + literal}) == ("may match",)
    assert candidates({field: "a'b"}) == ("may match",)
    assert candidates({field: "b'a"}) == ()
    assert not marker.exists()
