"""The baseline governance overhead is measured against: the least work a governed call can do.

The same work as the project's shared reference wrapper (kept here so the benchmarks stand alone):
a bare tool call, and the same call behind a minimal hand-written guard — an args dict, a scope
check, five regex matchers, and a PRE and a POST event appended to a bounded deque.
`POLICY_YAML` is the equivalent thoth_nb policy: the same scope and the same five regexes on the
same argument fields (named fields, not `"*"`, so both sides look at exactly the same strings).
Run `python -m benchmarks.reference` to print the two figures on this machine.
"""

from __future__ import annotations

import collections
import re
import time

__all__ = ["ARGS", "EVENTS", "MATCHERS", "POLICY_YAML", "SCOPE", "bare_call", "read_file", "reference_call"]

SCOPE = frozenset({"read_file", "list_dir", "search", "http_get", "write_file"})
MATCHERS = (
    ("path", re.compile(r"^/etc/")),
    ("path", re.compile(r"\.\./")),
    ("path", re.compile(r"(?i)\.ssh|id_rsa")),
    ("mode", re.compile(r"^[wa]")),
    ("path", re.compile(r"(?i)password|secret|token")),
)
EVENTS: collections.deque[dict[str, object]] = collections.deque(maxlen=100_000)
ARGS = ("/home/user/notes.txt", "r")  # matches no rule: the ALLOW path

POLICY_YAML = """\
version: 1
default: allow
scope_violation: {decision: block, severity: high}
rules:
  - {id: etc, tool: "*", when: {path: {regex: "^/etc/"}}, decision: step_up, reason: system file}
  - {id: traversal, tool: "*", when: {path: {regex: "\\\\.\\\\./"}}, decision: step_up, reason: traversal}
  - {id: ssh, tool: "*", when: {path: {regex: "(?i)\\\\.ssh|id_rsa"}}, decision: step_up, reason: keys}
  - {id: write, tool: "*", when: {mode: {regex: "^[wa]"}}, decision: step_up, reason: writes}
  - {id: secrets, tool: "*", when: {path: {regex: "(?i)password|secret|token"}}, decision: step_up, reason: secrets}
"""
AGENT = {"agent_id": "bench-agent", "tenant_id": "bench", "approved_scope": sorted(SCOPE),
         "enforcement_mode": "step_up"}


def read_file(path: str, mode: str = "r") -> int:
    """The tool: does nothing, so only the guard's cost is measured."""
    return 1


def bare_call(path: str, mode: str = "r") -> int:
    return read_file(path, mode)


def _decide(tool: str, args: dict[str, str]) -> str:
    if tool not in SCOPE:
        return "BLOCK"
    for key, rx in MATCHERS:
        value = args.get(key)
        if value is not None and rx.search(value):
            return "STEP_UP"
    return "ALLOW"


def reference_call(path: str, mode: str = "r") -> int:
    args = {"path": path, "mode": mode}
    decision = _decide("read_file", args)
    EVENTS.append({"type": "TOOL_CALL_PRE", "tool": "read_file", "args": args, "decision": decision,
                   "ts": time.time_ns()})
    if decision != "ALLOW":
        raise PermissionError(decision)
    result = read_file(path, mode)
    EVENTS.append({"type": "TOOL_CALL_POST", "tool": "read_file", "ts": time.time_ns()})
    return result


def per_call_ns(fn: object, calls: int = 1000, batches: int = 500) -> list[float]:
    """Per-call cost in ns, one sample per batch of `calls` (timer resolution is too coarse for one call)."""
    assert callable(fn)
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn(*ARGS)
        samples.append((time.perf_counter_ns() - t0) / calls)
        EVENTS.clear()
    return sorted(samples)


if __name__ == "__main__":
    for name, fn in (("bare", bare_call), ("reference", reference_call)):
        s = per_call_ns(fn)
        print(f"{name:10s} p50 {s[len(s) // 2] / 1000:.2f} us   p99 {s[int(len(s) * 0.99)] / 1000:.2f} us")
