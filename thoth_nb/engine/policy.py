"""Policy documents: load, validate (with line numbers), and match rules against a tool call.

A policy is YAML (or the same structure as a dict):

    version: 1
    default: allow                # in-scope calls no rule matches
    scope_violation: {decision: block, severity: high, hard: false}
    risk_thresholds: {step_up: 40, block: 80}     # progressive mode: how rules and risk combine, see engine/risk.py
    rules:
      - id: no-system-files
        tool: read_file            # a tool name or glob, or a list of them
        when:                      # every field must match (use `any:` for alternatives)
          path: {glob: "/etc/**"}
        decision: block            # allow | step_up | block
        reason: System files are off limits
        severity: high             # low | medium | high | critical
        hard: true                 # never softened to STEP_UP by step_up mode
    rate_limits:
      - id: search-burst
        tool: web_search
        max_calls: 5
        per_seconds: 60
        decision: block
    agents:                        # per-agent additions
      research-agent:
        approved_scope: [web_search]
        rules: [...]

Conditions on a field: a bare value (equals), or a mapping of operators: equals, not_equals, regex,
glob, contains, not_contains, in, not_in, gt, gte, lt, lte, exists, length_gt, length_lt.
Field names are dotted paths into the tool arguments; `"*"` means any string value anywhere in them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from thoth_nb._exceptions import PolicyError
from thoth_nb._models import MAX_DECIDE_DEPTH, DecisionType

__all__ = [
    "DEFAULT_POLICY_YAML",
    "ArgumentsTooDeep",
    "Condition",
    "Plan",
    "Policy",
    "RateLimit",
    "Rule",
    "SequenceStep",
    "condition_matches",
    "load_policy",
    "parse_policy",
    "tool_matches",
]

SEVERITY_RISK = {"low": 25.0, "medium": 50.0, "high": 75.0, "critical": 95.0}
_DECISIONS = {"allow": DecisionType.ALLOW, "step_up": DecisionType.STEP_UP, "block": DecisionType.BLOCK}
_RANK = {DecisionType.ALLOW: 0, DecisionType.MODIFY: 1, DecisionType.STEP_UP: 2, DecisionType.BLOCK: 3}

DEFAULT_POLICY_YAML = """\
# thoth_nb built-in default policy: the approved scope is enforced, and a few calls that are
# dangerous for almost any agent need a human. Copy it, edit it, and pass policy="my_policy.yaml".
version: 1
default: allow
scope_violation: {decision: block, severity: high}
rules:
  - id: secrets-in-arguments
    tool: "*"
    when:
      "*": {regex: "(?i)(password|secret|api[_-]?key|private[_-]?key|BEGIN [A-Z ]*PRIVATE KEY)"}
    decision: step_up
    reason: the arguments mention a credential
    severity: high
  - id: system-paths
    tool: "*"
    when:
      "*": {regex: "^(/etc/|/root/|~/.ssh|.*\\\\.ssh/|/proc/|/sys/)"}
    decision: block
    reason: system and credential paths are off limits
    severity: critical
    hard: true
  - id: path-traversal
    tool: "*"
    when:
      "*": {contains: "../"}
    decision: block
    reason: path traversal in the arguments
    severity: high
  - id: destructive-shell
    tool: "*"
    when:
      "*": {regex: "(?i)(\\\\brm\\\\s+-rf\\\\b|\\\\bmkfs\\\\b|\\\\bdd\\\\s+if=|DROP\\\\s+TABLE|TRUNCATE\\\\s+TABLE)"}
    decision: block
    reason: destructive command
    severity: critical
    hard: true
rate_limits:
  - id: runaway-loop
    tool: "*"
    max_calls: 100
    per_seconds: 60
    decision: step_up
    reason: more than 100 calls of one tool in a minute
"""


# --- located YAML -------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Doc:
    """Plain data plus the line of every node, keyed by its path, for error messages."""

    data: Any
    lines: dict[tuple[Any, ...], int]
    source: str | None

    def error(self, path: tuple[Any, ...], message: str) -> PolicyError:
        line = None
        probe = path
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe[:-1]
        field = ".".join(str(p) for p in path) if path else None
        return PolicyError(message, source=self.source, line=line, field=field)


_MAX_NODES = 50_000
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


def _plain_tag(n: yaml.Node, path: tuple[Any, ...], source: str | None) -> None:
    """Only plain YAML values: `!!python/...` and custom tags are refused, never constructed."""
    if n.tag not in _PLAIN_TAGS:
        raise PolicyError(f"YAML tag {n.tag!r} is not allowed: a policy holds plain values only (no objects, "
                          "no code); remove the tag", source=source, line=n.start_mark.line + 1,
                          field=".".join(str(p) for p in path) or None)


def _compose(text: str, source: str | None) -> _Doc:
    """`_compose_nodes`, with nesting too deep for Python's stack (PyYAML's composer and `build` recurse
    per level: `[[[...]]]` thousands deep) reported as a PolicyError instead of a RecursionError."""
    try:
        return _compose_nodes(text, source)
    except RecursionError:
        raise PolicyError("values are nested too deeply; a policy needs a few levels, not hundreds",
                          source=source) from None


def _compose_nodes(text: str, source: str | None) -> _Doc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(
            f"not valid YAML: {problem}", source=source, line=(mark.line + 1) if mark is not None else None
        ) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is None:
        return _Doc({}, lines, source)
    constructor = yaml.SafeLoader("")
    budget = [_MAX_NODES]

    def build(n: yaml.Node, path: tuple[Any, ...]) -> Any:
        lines[path] = n.start_mark.line + 1
        budget[0] -= 1
        if budget[0] < 0:  # aliases can expand exponentially ("billion laughs")
            raise PolicyError(f"more than {_MAX_NODES} values once YAML aliases are expanded; remove the aliases",
                              source=source, line=n.start_mark.line + 1)
        _plain_tag(n, path, source)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                _plain_tag(key_node, path, source)
                key = constructor.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                if key in out:
                    raise PolicyError(
                        f"duplicate key {key!r}", source=source, line=key_node.start_mark.line + 1,
                        field=".".join(str(p) for p in (*path, key)),
                    )
                out[key] = build(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1  # errors point at the key's line
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)  # type: ignore[no-untyped-call]

    return _Doc(build(node, ()), lines, source)


# --- the model ----------------------------------------------------------------------------------


_OPERATORS = (
    "equals", "not_equals", "regex", "glob", "contains", "not_contains", "in", "not_in",
    "gt", "gte", "lt", "lte", "exists", "length_gt", "length_lt",
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclasses.dataclass(slots=True, frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    test: Callable[[Any], bool] = dataclasses.field(compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


def _make_test(op: str, value: Any) -> Callable[[Any], bool]:
    if op == "equals":
        return lambda v: v == value or (isinstance(v, (int, float)) and _number(value) == v)
    if op == "not_equals":
        return lambda v: v != value
    if op == "regex":
        rx = re.compile(value)
        return lambda v: isinstance(v, str) and rx.search(v) is not None
    if op == "glob":
        rx = re.compile(fnmatch.translate(value))
        return lambda v: isinstance(v, str) and rx.match(v) is not None
    if op == "contains":
        return lambda v: (isinstance(v, str) and isinstance(value, str) and value in v) or (
            isinstance(v, (list, tuple)) and value in v
        )
    if op == "not_contains":
        inner = _make_test("contains", value)
        return lambda v: not inner(v)
    if op == "in":
        options = list(value)
        return lambda v: v in options
    if op == "not_in":
        options = list(value)
        return lambda v: v not in options
    if op in ("gt", "gte", "lt", "lte"):
        bound = float(value)
        compare: Callable[[float], bool] = {
            "gt": lambda n: n > bound, "gte": lambda n: n >= bound,
            "lt": lambda n: n < bound, "lte": lambda n: n <= bound,
        }[op]

        def numeric(v: Any) -> bool:
            n = _number(v)
            return n is not None and compare(n)

        return numeric
    if op == "exists":
        return lambda v: (v is not _MISSING) == bool(value)
    if op == "length_gt":
        return lambda v: hasattr(v, "__len__") and len(v) > int(value)
    if op == "length_lt":
        return lambda v: hasattr(v, "__len__") and len(v) < int(value)
    raise AssertionError(op)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _lookup(args: Mapping[str, Any] | None, path: str) -> Any:
    if args is None:
        return _MISSING
    if path in args:
        return args[path]
    current: Any = args
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, (list, tuple)) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


class ArgumentsTooDeep(Exception):
    """Tool arguments nest deeper than a "*" condition can look (MAX_DECIDE_DEPTH): the engine blocks."""


def _strings(value: Any, depth: int = 0, _path: set[int] | None = None) -> Iterator[str]:
    """Every string in the arguments, at any depth up to MAX_DECIDE_DEPTH; a container that contains
    itself is walked once (its strings are all seen), a deeper one raises instead of being skipped."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (Mapping, list, tuple)):
        if depth >= MAX_DECIDE_DEPTH:  # never stop quietly: a value below here would go unchecked
            raise ArgumentsTooDeep
        path = _path if _path is not None else set()
        if id(value) in path:
            return
        path.add(id(value))
        try:
            for v in value.values() if isinstance(value, Mapping) else value:
                yield from _strings(v, depth + 1, path)
        finally:
            path.discard(id(value))


_MISSING_OK = frozenset({"exists", "not_equals", "not_in", "not_contains"})


def compile_condition(cond: Condition) -> Callable[[Mapping[str, Any] | None], bool]:
    """One closure per condition: the hot path does a dict lookup and a test, nothing else."""
    field, op, test = cond.field, cond.op, cond.test
    if field == "*" or "." in field or op in _MISSING_OK:
        return lambda args: condition_matches(cond, args)
    if op == "regex":
        search = re.compile(cond.value).search

        def regex(args: Mapping[str, Any] | None) -> bool:
            value = args.get(field) if args else None
            return type(value) is str and search(value) is not None

        return regex

    def plain(args: Mapping[str, Any] | None) -> bool:
        if not args or field not in args:
            return False
        return test(args[field])

    return plain


def condition_matches(cond: Condition, args: Mapping[str, Any] | None) -> bool:
    if cond.field == "*":
        if cond.op == "exists":
            return cond.test(_MISSING if not args else True)
        return any(cond.test(s) for s in _strings(args))
    value = _lookup(args, cond.field)
    if value is _MISSING and cond.op not in ("exists", "not_equals", "not_in", "not_contains"):
        return False
    return cond.test(value)


@dataclasses.dataclass(slots=True, frozen=True)
class SequenceStep:
    """An earlier call in the same session that must have happened for a sequence rule to match."""

    tool: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()


@dataclasses.dataclass(slots=True, frozen=True)
class Rule:
    id: str
    tools: tuple[str, ...]
    decision: DecisionType
    reason: str
    severity: str = "medium"
    hard: bool = False
    all_of: tuple[Condition, ...] = ()
    any_of: tuple[tuple[Condition, ...], ...] = ()
    after: tuple[SequenceStep, ...] = ()
    agent_id: str | None = None
    matches: Callable[[Mapping[str, Any] | None], bool] = dataclasses.field(
        default=lambda args: True, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches", _compile_rule(self.all_of, self.any_of))

    @property
    def risk(self) -> float:
        return SEVERITY_RISK.get(self.severity, 50.0)

    def applies_to(self, tool_name: str) -> bool:
        return tool_matches(self.tools, tool_name)

    def describe(self) -> str:
        parts = [c.describe() for c in self.all_of]
        if self.any_of:
            parts.append(" or ".join("(" + " and ".join(c.describe() for c in g) + ")" for g in self.any_of))
        if self.after:
            parts.append("after " + ", ".join("|".join(s.tool) for s in self.after))
        return " and ".join(parts) or "always"


def _compile_rule(all_of: tuple[Condition, ...],
                  any_of: tuple[tuple[Condition, ...], ...]) -> Callable[[Mapping[str, Any] | None], bool]:
    """`Rule.matches`: every `when` condition, and one of the `any` groups if there are any."""
    required = tuple(compile_condition(c) for c in all_of)
    groups = tuple(tuple(compile_condition(c) for c in group) for group in any_of)
    if len(required) == 1 and not groups:
        return required[0]

    def matches(args: Mapping[str, Any] | None) -> bool:
        for check in required:
            if not check(args):
                return False
        if not groups:
            return True
        for group in groups:
            for check in group:
                if not check(args):
                    break
            else:
                return True
        return False

    return matches


@dataclasses.dataclass(slots=True, frozen=True)
class RateLimit:
    id: str
    tools: tuple[str, ...]
    max_calls: int
    per_seconds: float
    decision: DecisionType
    reason: str
    agent_id: str | None = None


def tool_matches(patterns: tuple[str, ...], tool_name: str) -> bool:
    for pattern in patterns:
        if pattern == tool_name or pattern == "*":
            return True
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(tool_name, pattern):
            return True
    return False


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
_UNSAFE_TO_MERGE = re.compile(r"\\[1-9]|\(\?P[<=]|\(\?\(|\(\?<[^=!]")


def _scoped(pattern: str) -> str | None:
    """`pattern` as a group that keeps its meaning inside an alternation, or None when it cannot be
    merged safely (backreferences and named groups would change meaning or clash)."""
    if _UNSAFE_TO_MERGE.search(pattern):
        return None
    found = _GLOBAL_FLAGS.match(pattern)
    flags, body = (found.group(1), pattern[found.end():]) if found else ("", pattern)
    return f"(?{flags}:{body}\n)" if "x" in flags else f"(?{flags}:{body})"


def _necessary_pattern(rule: Rule) -> tuple[str, str] | None:
    """A (field, regex) that must match (by `search`) for `rule` to match, if the rule has one."""
    for cond in rule.all_of:
        if cond.field == "*" or "." in cond.field:
            continue
        if cond.op == "regex":
            pattern = cond.value
        elif cond.op == "glob":
            pattern = r"\A" + fnmatch.translate(cond.value)
        else:
            continue
        if _scoped(pattern) is not None:
            return cond.field, pattern
    return None


#: `(?i)` + literals, escaped punctuation, `.`, `^`, `$`, `|` and `*+?` only: letters appear only as literals
_FOLDABLE = re.compile(r"\(\?i\)((?:[A-Za-z0-9 _:@/,;=&%#~'\"<>!\-.*+?^$|]|\\[^A-Za-z0-9])*)")


#: a literal character of a pattern without flags other than `(?i)`: letters, digits, safe punctuation, or an
#: escaped ASCII punctuation character (which stands for itself)
_LITERAL_CHAR = re.compile(r"[A-Za-z0-9 _:@/,;=&%#~'\"<>!-]|\\[!-/:-@\[-`{-~]")
#: a character class of letters, digits and `_` only (no ranges, no negation, no escapes)
_SIMPLE_CLASS = re.compile(r"\[([A-Za-z0-9_]+)\]")
_TOKEN = re.compile(r"\\.|\[[A-Za-z0-9_]+\]|.", re.S)
_MAX_EXPANSIONS = 16  # branches a pattern may expand to through its character classes


def _literals(pattern: str) -> tuple[bool, list[tuple[bool, str]]] | None:
    """`pattern` as `(ignore_case, [(anchored, literal), ...])` when it is an alternation of plain literals
    (each optionally anchored with `^`, and with at most a few simple character classes, expanded), else None.

    Then `re.search(pattern, value)` matches exactly when `value` starts with an anchored literal or
    contains an unanchored one; for `(?i)` compare lower-cased on both sides, which agrees with `re`
    when the value is ASCII (the literals always are: the characters that case-fold to ASCII letters
    from outside ASCII, like the Kelvin sign, cannot occur in an ASCII value)."""
    fold = pattern.startswith("(?i)")
    body = pattern[4:] if fold else pattern
    out: list[tuple[bool, str]] = []
    for branch in _split_branches(body):
        anchored = branch[:1] == ["^"]
        tokens = branch[1:] if anchored else branch
        if not tokens:
            return None
        expansions = [""]
        for token in tokens:
            found = _SIMPLE_CLASS.fullmatch(token)
            if found is not None:
                choices = list(dict.fromkeys(found.group(1)))
            elif _LITERAL_CHAR.fullmatch(token):
                choices = [token[-1]]
            else:
                return None
            expansions = [e + c for e in expansions for c in choices]
            if len(expansions) > _MAX_EXPANSIONS:
                return None
        out.extend((anchored, e.lower() if fold else e) for e in expansions)
    return (fold, out) if out else None


def _split_branches(body: str) -> list[list[str]]:
    """Top-level alternatives of a pattern as token lists (an escaped `|` stays a token)."""
    branches: list[list[str]] = [[]]
    for token in _TOKEN.findall(body):
        if token == "|":
            branches.append([])
        else:
            branches[-1].append(token)
    return branches


class _FieldFilter:
    """One argument field's merged patterns, as the tests `Plan.candidates` makes on an ASCII str value.

    Patterns that are alternations of literals become `startswith` / `in` tests (see `_literals`):
    Python's `re` tries every alternative at every position of the value, which is several times slower.
    Python's `re` is also slow on case-insensitive alternations, so the other `(?i)` literal-only patterns
    (`_FOLDABLE`) are kept lower-cased and searched case-sensitively in the lower-cased value: for an
    ASCII value and such a pattern the two agree exactly (the Unicode case folds that differ, like the
    long s U+017F or the Kelvin sign, are not ASCII). Values that are not ASCII use `full`, every
    pattern merged as written."""

    __slots__ = ("field", "folded", "full", "low_prefixes", "low_subs", "prefixes", "raw", "subs")

    def __init__(self, field: str, patterns: list[str]) -> None:
        self.field = field
        self.full = re.compile("|".join(p for p in map(_scoped, patterns) if p is not None)).search
        prefixes: dict[str, None] = {}
        subs: dict[str, None] = {}
        low_prefixes: dict[str, None] = {}
        low_subs: dict[str, None] = {}
        raw: list[str] = []
        folded: list[str] = []
        for pattern in patterns:
            literals = _literals(pattern)
            if literals is not None:
                fold, branches = literals
                for anchored, text in branches:
                    target = (low_prefixes if anchored else low_subs) if fold else (prefixes if anchored else subs)
                    target[text] = None
                continue
            literal = _FOLDABLE.fullmatch(pattern)
            if literal is not None:
                folded.append(f"(?:{literal.group(1).lower()})")
            else:
                raw.append(_scoped(pattern) or "")
        self.prefixes, self.subs = tuple(prefixes), tuple(subs)
        self.low_prefixes, self.low_subs = tuple(low_prefixes), tuple(low_subs)
        self.raw = re.compile("|".join(raw)).search if raw else None
        self.folded = re.compile("|".join(folded)).search if folded else None


Candidates = Callable[[Mapping[str, Any] | None], tuple["Rule", ...]]


def _inline_tests(ns: dict[str, Any], i: int, var: str, tag: str, prefixes: tuple[str, ...],
                  subs: tuple[str, ...], search: Any) -> list[str]:
    """Field `i`'s tests of the text in `var` (as given, or lowercased: `tag` "L"), as source: its prefixes
    (one `startswith`), substrings (`in`) and regex search, each value a global of the function in `ns`."""
    ns[f"{tag}P{i}"], ns[f"{tag}re{i}"] = prefixes, search
    tests = [f"{var}.startswith({tag}P{i})"] if prefixes else []
    for j, text in enumerate(subs):
        ns[f"{tag}S{i}_{j}"] = text
        tests.append(f"{tag}S{i}_{j} in {var}")
    if search is not None:
        tests.append(f"{tag}re{i}({var}) is not None")
    return tests


def _compile_candidates(filters: tuple[_FieldFilter, ...], rules: tuple[Rule, ...],
                        residual: tuple[Rule, ...]) -> Candidates:
    """`Plan.candidates` for these filters, as one generated function: every test inline (`startswith`,
    `in`, a regex search), no loop and no call per field. Nothing from the policy enters the source: field
    names, literals, regexes and rule tuples are names in the function's globals (`F0`, `L0_1`, ...)."""
    ns: dict[str, Any] = {"RULES": rules, "RESIDUAL": residual, "str": str, "type": type, "isinstance": isinstance}
    lines = ["def candidates(args):", "    if args:"] if filters else ["def candidates(args):"]
    for i, f in enumerate(filters):
        ns[f"F{i}"], ns[f"full{i}"] = f.field, f.full
        tests = _inline_tests(ns, i, "v", "", f.prefixes, f.subs, f.raw)
        low = _inline_tests(ns, i, "low", "L", f.low_prefixes, f.low_subs, f.folded)
        lines += [f"        v = args.get(F{i})", "        if type(v) is str and v.isascii():"]
        if tests:
            lines.append(f"            if {' or '.join(tests)}:")
            lines.append("                return RULES")
        if low:
            lines.append("            low = v.lower()")
            lines.append(f"            if {' or '.join(low)}:")
            lines.append("                return RULES")
        lines.append(f"        elif isinstance(v, str) and full{i}(v) is not None:")
        lines.append("            return RULES")
    lines.append("    return RESIDUAL")
    exec("\n".join(lines), ns)
    candidates: Candidates = ns["candidates"]
    return candidates


class Plan:
    """Everything the engine needs about one (agent, tool): its rules, its rate limits, and a prefilter.

    The prefilter merges one necessary regex/glob condition of each rule into one regex per argument
    field: when none of them matches, no rule can match and only the `residual` rules (those without
    such a condition) are evaluated. When one matches, every rule is evaluated as usual, so the
    decision is always exactly what evaluating each rule gives."""

    __slots__ = ("candidates", "has_after", "limits", "out_of_agent_scope", "plain_allow", "prefilter", "residual",
                 "rules")

    def __init__(self, rules: tuple[Rule, ...], limits: tuple[RateLimit, ...], out_of_agent_scope: bool = False,
                 default: DecisionType = DecisionType.ALLOW) -> None:
        self.rules = rules
        self.limits = limits
        #: the policy gives this agent its own approved_scope and the tool is not in it
        self.out_of_agent_scope = out_of_agent_scope
        #: a call (in the request's scope) that no rule matches is allowed: no limits, default allow
        self.plain_allow = not limits and not out_of_agent_scope and default is DecisionType.ALLOW
        self.has_after = any(rule.after for rule in rules)
        by_field: dict[str, list[str]] = {}
        residual: list[Rule] = []
        for rule in rules:
            necessary = _necessary_pattern(rule)
            if necessary is None:
                residual.append(rule)
            else:
                by_field.setdefault(necessary[0], []).append(necessary[1])
        prefilter: list[_FieldFilter] = []
        for field, patterns in by_field.items():
            try:
                prefilter.append(_FieldFilter(field, patterns))
            except re.error:  # cannot merge after all: every rule on this field is evaluated every time
                return self._no_prefilter()
        self.prefilter = tuple(prefilter)
        self.residual = tuple(residual) if prefilter else rules
        #: `candidates(args)`: the rules that may match `args` (a superset of those that do)
        self.candidates = _compile_candidates(self.prefilter, self.rules, self.residual)

    def _no_prefilter(self) -> None:
        self.prefilter = ()
        self.residual = self.rules
        self.candidates = _compile_candidates((), self.rules, self.rules)


@dataclasses.dataclass(slots=True)
class Policy:
    rules: tuple[Rule, ...]
    rate_limits: tuple[RateLimit, ...] = ()
    default: DecisionType = DecisionType.ALLOW
    scope_decision: DecisionType = DecisionType.BLOCK
    scope_severity: str = "high"
    scope_hard: bool = False
    risk_step_up: float = 40.0
    risk_block: float = 80.0
    agent_scopes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    source: str | None = None
    text: str = ""
    _by_tool: dict[tuple[str | None, str], tuple[Rule, ...]] = dataclasses.field(default_factory=dict, repr=False)
    _limits_by_tool: dict[tuple[str | None, str], tuple[RateLimit, ...]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    _plans: dict[tuple[str | None, str], Plan] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def rules_for(self, agent_id: str | None, tool_name: str) -> tuple[Rule, ...]:
        """Rules that apply to this agent and tool, cached: the hot path is a dict lookup."""
        key = (agent_id, tool_name)
        found = self._by_tool.get(key)
        if found is None:
            found = tuple(
                r for r in self.rules if (r.agent_id is None or r.agent_id == agent_id) and r.applies_to(tool_name)
            )
            if len(self._by_tool) < 10_000:
                self._by_tool[key] = found
        return found

    def plan_for(self, agent_id: str | None, tool_name: str) -> Plan:
        """The engine's one lookup per call: rules, limits and prefilter for this agent and tool."""
        key = (agent_id, tool_name)
        found = self._plans.get(key)
        if found is None:
            agent_scope = self.agent_scopes.get(agent_id) if agent_id is not None else None
            found = Plan(self.rules_for(agent_id, tool_name), self.limits_for(agent_id, tool_name),
                         agent_scope is not None and tool_name not in agent_scope, self.default)
            if len(self._plans) < 10_000:
                self._plans[key] = found
        return found

    def limits_for(self, agent_id: str | None, tool_name: str) -> tuple[RateLimit, ...]:
        key = (agent_id, tool_name)
        found = self._limits_by_tool.get(key)
        if found is None:
            found = tuple(
                r for r in self.rate_limits
                if (r.agent_id is None or r.agent_id == agent_id) and tool_matches(r.tools, tool_name)
            )
            if len(self._limits_by_tool) < 10_000:
                self._limits_by_tool[key] = found
        return found

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def to_dict(self) -> Any:
        return yaml.safe_load(self.text) if self.text else {}


# --- parsing ------------------------------------------------------------------------------------


_TOP_KEYS = {"version", "default", "scope_violation", "risk_thresholds", "rules", "rate_limits", "agents", "name",
             "description"}
_RULE_KEYS = {"id", "tool", "tools", "when", "any", "after", "decision", "reason", "severity", "hard",
              "description"}
_LIMIT_KEYS = {"id", "tool", "tools", "max_calls", "per_seconds", "decision", "reason"}


def _decision(doc: _Doc, path: tuple[Any, ...], value: Any) -> DecisionType:
    if isinstance(value, str) and value.strip().lower() in _DECISIONS:
        return _DECISIONS[value.strip().lower()]
    raise doc.error(path, f"decision must be one of allow, step_up, block; got {value!r}")


def _tools(doc: _Doc, path: tuple[Any, ...], entry: Mapping[str, Any]) -> tuple[str, ...]:
    value = entry.get("tool", entry.get("tools"))
    key = "tools" if "tools" in entry else "tool"
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise doc.error((*path, key), "each rule needs `tool:` naming a tool, a glob such as 'db_*', or a list")


def _conditions(doc: _Doc, path: tuple[Any, ...], when: Any) -> tuple[Condition, ...]:
    if not isinstance(when, Mapping):
        raise doc.error(path, "`when` must map argument names to conditions, e.g. when: {path: {glob: '/etc/**'}}")
    out = []
    for field, spec in when.items():
        fpath = (*path, field)
        if not isinstance(field, str) or not field:
            raise doc.error(fpath, f"argument name must be a string; got {field!r}")
        ops = spec if isinstance(spec, Mapping) else {"equals": spec}
        if not ops:
            raise doc.error(fpath, "empty condition; use e.g. {equals: 1} or {exists: true}")
        for op, value in ops.items():
            if op not in _OPERATORS:
                raise doc.error((*fpath, op), f"unknown operator {op!r}; use one of: {', '.join(_OPERATORS)}")
            if op in ("gt", "gte", "lt", "lte") and _number(value) is None:
                raise doc.error((*fpath, op), f"{op} needs a number; got {value!r}")
            if op in ("in", "not_in") and not isinstance(value, list):
                raise doc.error((*fpath, op), f"{op} needs a list; got {value!r}")
            if op in ("regex", "glob") and not isinstance(value, str):
                raise doc.error((*fpath, op), f"{op} needs a string pattern; got {value!r}")
            if op in ("length_gt", "length_lt") and not isinstance(value, int):
                raise doc.error((*fpath, op), f"{op} needs a whole number; got {value!r}")
            try:
                test = _make_test(op, value)
            except re.error as exc:
                raise doc.error((*fpath, op), f"invalid regular expression {value!r}: {exc}") from None
            out.append(Condition(field, op, value, test))
    return tuple(out)


def _rule(doc: _Doc, path: tuple[Any, ...], entry: Any, index: int, agent: str | None) -> Rule:
    if not isinstance(entry, Mapping):
        raise doc.error(path, "each rule must be a mapping with at least tool and decision")
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise doc.error((*path, key), f"unknown rule field {key!r}; allowed: {', '.join(sorted(_RULE_KEYS))}")
    if "decision" not in entry:
        raise doc.error(path, "rule needs `decision:` (allow, step_up or block)")
    rule_id = entry.get("id") or (f"{agent}:rule-{index + 1}" if agent else f"rule-{index + 1}")
    severity = str(entry.get("severity", "medium")).lower()
    if severity not in SEVERITY_RISK:
        raise doc.error((*path, "severity"), f"severity must be one of {', '.join(SEVERITY_RISK)}; got {severity!r}")
    any_groups = entry.get("any") or []
    if not isinstance(any_groups, list):
        raise doc.error((*path, "any"), "`any` must be a list of `when`-style mappings")
    after_raw = entry.get("after") or []
    if isinstance(after_raw, Mapping):
        after_raw = [after_raw]
    if not isinstance(after_raw, list):
        raise doc.error((*path, "after"), "`after` must be a list of {tool: ..., when: ...} steps")
    after = []
    for j, step in enumerate(after_raw):
        spath = (*path, "after", j)
        if isinstance(step, str):
            step = {"tool": step}
        if not isinstance(step, Mapping):
            raise doc.error(spath, "each `after` step needs `tool:` and optionally `when:`")
        after.append(SequenceStep(_tools(doc, spath, step), _conditions(doc, (*spath, "when"), step.get("when", {}))))
    decision = _decision(doc, (*path, "decision"), entry["decision"])
    return Rule(
        id=str(rule_id),
        tools=_tools(doc, path, entry),
        decision=decision,
        reason=str(entry.get("reason") or f"matched policy rule {rule_id}"),
        severity=severity,
        hard=bool(entry.get("hard", False)),
        all_of=_conditions(doc, (*path, "when"), entry.get("when", {})),
        any_of=tuple(_conditions(doc, (*path, "any", k), g) for k, g in enumerate(any_groups)),
        after=tuple(after),
        agent_id=agent,
    )


def _rate_limit(doc: _Doc, path: tuple[Any, ...], entry: Any, index: int, agent: str | None) -> RateLimit:
    if not isinstance(entry, Mapping):
        raise doc.error(path, "each rate limit must be a mapping with tool, max_calls and per_seconds")
    unknown = set(entry) - _LIMIT_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise doc.error((*path, key), f"unknown rate-limit field {key!r}; allowed: {', '.join(sorted(_LIMIT_KEYS))}")
    max_calls = entry.get("max_calls")
    if not isinstance(max_calls, int) or isinstance(max_calls, bool) or max_calls < 1:
        raise doc.error((*path, "max_calls"), f"max_calls must be a whole number ≥ 1; got {max_calls!r}")
    per = _number(entry.get("per_seconds"))
    if per is None or per <= 0:
        raise doc.error((*path, "per_seconds"), f"per_seconds must be a number > 0; got {entry.get('per_seconds')!r}")
    limit_id = entry.get("id") or f"rate-limit-{index + 1}"
    return RateLimit(
        id=str(limit_id),
        tools=_tools(doc, path, entry),
        max_calls=max_calls,
        per_seconds=per,
        decision=_decision(doc, (*path, "decision"), entry.get("decision", "block")),
        reason=str(entry.get("reason") or f"more than {max_calls} calls in {per:g}s"),
        agent_id=agent,
    )


def _list(doc: _Doc, path: tuple[Any, ...], value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(path, f"`{what}` must be a list")
    return value


def _build(doc: _Doc, text: str) -> Policy:
    data = doc.data
    if not isinstance(data, Mapping):
        raise doc.error((), "a policy must be a mapping with `rules:` (see thoth_nb.engine.policy for the format)")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise doc.error((key,), f"unknown top-level field {key!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    version = data.get("version", 1)
    if version != 1:
        raise doc.error(("version",), f"unsupported policy version {version!r}; this thoth_nb reads version 1")
    rules = [_rule(doc, ("rules", i), r, i, None) for i, r in enumerate(_list(doc, ("rules",), data.get("rules"),
                                                                                "rules"))]
    limits = [_rate_limit(doc, ("rate_limits", i), r, i, None)
              for i, r in enumerate(_list(doc, ("rate_limits",), data.get("rate_limits"), "rate_limits"))]
    scopes: dict[str, tuple[str, ...]] = {}
    agents = data.get("agents") or {}
    if not isinstance(agents, Mapping):
        raise doc.error(("agents",), "`agents` must map agent ids to {approved_scope, rules, rate_limits}")
    for agent, spec in agents.items():
        apath = ("agents", agent)
        if not isinstance(spec, Mapping):
            raise doc.error(apath, "each agent entry must be a mapping")
        extra = set(spec) - {"approved_scope", "rules", "rate_limits"}
        if extra:
            key = sorted(map(str, extra))[0]
            raise doc.error((*apath, key), f"unknown agent field {key!r}; allowed: approved_scope, rules, rate_limits")
        if "approved_scope" in spec:
            scope = spec["approved_scope"]
            if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
                raise doc.error((*apath, "approved_scope"), "approved_scope must be a list of tool names")
            scopes[str(agent)] = tuple(scope)
        rules += [_rule(doc, (*apath, "rules", i), r, i, str(agent))
                  for i, r in enumerate(_list(doc, (*apath, "rules"), spec.get("rules"), "rules"))]
        limits += [_rate_limit(doc, (*apath, "rate_limits", i), r, i, str(agent))
                   for i, r in enumerate(_list(doc, (*apath, "rate_limits"), spec.get("rate_limits"), "rate_limits"))]
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise doc.error(("rules", i, "id"), f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    default = _decision(doc, ("default",), data.get("default", "allow"))
    scope_spec = data.get("scope_violation") or {}
    if not isinstance(scope_spec, Mapping):
        raise doc.error(("scope_violation",), "scope_violation must be a mapping like {decision: block}")
    thresholds = data.get("risk_thresholds") or {}
    if not isinstance(thresholds, Mapping):
        raise doc.error(("risk_thresholds",), "risk_thresholds must be a mapping like {step_up: 40, block: 80}")
    step_up_at = _number(thresholds.get("step_up", 40))
    block_at = _number(thresholds.get("block", 80))
    if step_up_at is None or block_at is None or not 0 <= step_up_at <= block_at <= 100:
        raise doc.error(("risk_thresholds",), "risk_thresholds need 0 ≤ step_up ≤ block ≤ 100")
    scope_severity = str(scope_spec.get("severity", "high")).lower()
    if scope_severity not in SEVERITY_RISK:
        raise doc.error(("scope_violation", "severity"), f"severity must be one of {', '.join(SEVERITY_RISK)}")
    return Policy(
        rules=tuple(rules),
        rate_limits=tuple(limits),
        default=default,
        scope_decision=_decision(doc, ("scope_violation", "decision"), scope_spec.get("decision", "block")),
        scope_severity=scope_severity,
        scope_hard=bool(scope_spec.get("hard", False)),
        risk_step_up=step_up_at,
        risk_block=block_at,
        agent_scopes=scopes,
        source=doc.source,
        text=text,
    )


def parse_policy(source: str | Mapping[str, Any], *, name: str | None = None) -> Policy:
    """Parse YAML text (or an already-loaded mapping) into a `Policy`; `PolicyError` says where it is wrong."""
    text = yaml.safe_dump(dict(source), sort_keys=False) if isinstance(source, Mapping) else source
    return _build(_compose(text, name), text)


def load_policy(path: str | Path | None) -> Policy:
    """Load a policy file, or the built-in default when `path` is None."""
    if path is None:
        return parse_policy(DEFAULT_POLICY_YAML, name="<built-in default policy>")
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"policy file not found: {file} (check the path, or omit policy= for the default)") from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {file} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    return parse_policy(text, name=str(file))
