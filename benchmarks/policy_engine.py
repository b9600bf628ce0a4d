"""Figure 4: thoth_nb's rule engine vs Cedar (`cedarpy`) on an equivalent 20-rule policy.

The rules use operators both languages have (glob ~ `like`, contains ~ `like "*x*"`, equals, `>`),
so the two policies decide exactly the same; every request's decision is compared before timing.
Cedar has no STEP_UP, so step-up rules are `forbid` policies whose `@id` says step_up; a Deny whose
reasons include a block rule (or no permit: out of scope) is BLOCK. Cedar gets its parsed
`PolicySet` and `Entities` handles built once (re-parsing per call costs ~8x more).
Ours is the engine's policy verdict (scope + rules + rate limits), the part `Engine.decide` runs
before applying the enforcement mode; no storage is touched on either side.
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks._core import Result, Sizes, interleaved, median

GROUP = "policy"

SCOPE = ["read_file", "write_file", "http_get", "run_sql", "send_email"]
# id, tool, field, op, value, decision
RULES: list[tuple[str, str, str, str, Any, str]] = [
    ("etc", "read_file", "path", "glob", "/etc/*", "block"),
    ("ssh", "read_file", "path", "contains", ".ssh", "block"),
    ("traversal", "read_file", "path", "contains", "../", "block"),
    ("secret-read", "read_file", "path", "contains", "secret", "step_up"),
    ("write-etc", "write_file", "path", "glob", "/etc/*", "block"),
    ("write-usr", "write_file", "path", "glob", "/usr/*", "block"),
    ("write-big", "write_file", "size", "gt", 1_000_000, "step_up"),
    ("write-script", "write_file", "path", "glob", "*.sh", "step_up"),
    ("http-private", "http_get", "url", "glob", "http://10.*", "block"),
    ("http-loopback", "http_get", "url", "glob", "http://127.*", "block"),
    ("http-metadata", "http_get", "url", "contains", "169.254.169.254", "block"),
    ("http-plain", "http_get", "url", "glob", "http://*", "step_up"),
    ("sql-drop", "run_sql", "query", "contains", "DROP TABLE", "block"),
    ("sql-delete", "run_sql", "query", "glob", "DELETE FROM *", "step_up"),
    ("sql-truncate", "run_sql", "query", "contains", "TRUNCATE", "block"),
    ("sql-users", "run_sql", "table", "equals", "users", "step_up"),
    ("mail-external", "send_email", "to", "glob", "*@external.com", "step_up"),
    ("mail-bulk", "send_email", "recipients", "gt", 50, "step_up"),
    ("mail-attachment", "send_email", "has_attachment", "equals", True, "step_up"),
    ("mail-ceo", "send_email", "to", "equals", "ceo@corp.com", "block"),
]

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("read_file", {"path": "/home/u/notes.txt"}),
    ("read_file", {"path": "/etc/passwd"}),
    ("read_file", {"path": "/home/u/.ssh/id_rsa"}),
    ("read_file", {"path": "/srv/../etc/shadow"}),
    ("read_file", {"path": "/srv/app/secret.txt"}),
    ("write_file", {"path": "/tmp/out.txt", "size": 100}),
    ("write_file", {"path": "/usr/bin/ls", "size": 10}),
    ("write_file", {"path": "/tmp/big.bin", "size": 5_000_000}),
    ("write_file", {"path": "/tmp/run.sh", "size": 10}),
    ("http_get", {"url": "https://example.com/"}),
    ("http_get", {"url": "http://10.0.0.1/admin"}),
    ("http_get", {"url": "http://example.com/"}),
    ("http_get", {"url": "https://169.254.169.254/latest"}),
    ("run_sql", {"query": "SELECT 1", "table": "orders"}),
    ("run_sql", {"query": "DROP TABLE orders", "table": "orders"}),
    ("run_sql", {"query": "DELETE FROM orders WHERE id=1", "table": "orders"}),
    ("run_sql", {"query": "SELECT * FROM users", "table": "users"}),
    ("send_email", {"to": "bob@corp.com", "recipients": 1, "has_attachment": False}),
    ("send_email", {"to": "x@external.com", "recipients": 1, "has_attachment": False}),
    ("send_email", {"to": "all@corp.com", "recipients": 500, "has_attachment": False}),
    ("send_email", {"to": "ceo@corp.com", "recipients": 1, "has_attachment": True}),
    ("delete_file", {"path": "/tmp/x"}),  # out of scope
]


def thoth_policy_yaml() -> str:
    lines = ["version: 1", "default: allow", "scope_violation: {decision: block, severity: high}", "rules:"]
    for rid, tool, field, op, value, decision in RULES:
        lines.append(f"  - {{id: {rid}, tool: {tool}, when: {{{field}: {{{op}: {json.dumps(value)}}}}}, "
                     f"decision: {decision}, severity: {'high' if decision == 'block' else 'medium'}}}")
    return "\n".join(lines) + "\n"


def _cedar_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def cedar_policy_text() -> str:
    out = ['@id("scope")\npermit(principal, action == Action::"call", resource)\n'
           '  when { context.scope.contains(context.tool) };']
    for rid, tool, field, op, value, _decision in RULES:
        access = f"context.args.{field}"
        if op == "glob":
            test = f"{access} like {json.dumps(value)}"
        elif op == "contains":
            test = f"{access} like {json.dumps('*' + value + '*')}"
        elif op == "gt":
            test = f"{access} > {value}"
        else:
            test = f"{access} == {_cedar_literal(value)}"
        out.append(f'@id("{rid}")\nforbid(principal, action == Action::"call", resource == Tool::"{tool}")\n'
                   f"  when {{ context.args has {field} && {test} }};")
    return "\n".join(out) + "\n"


def bench_policy_vs_cedar(sizes: Sizes) -> list[Result]:
    try:
        import cedarpy
    except ImportError:
        return [Result.na(GROUP, "policy evaluation vs cedarpy", "cedarpy not installed (pip install "
                          "'thoth-nb[bench]')", "≥ 10x faster")]
    from thoth_nb.engine.decide import Engine
    from thoth_nb.engine.policy import parse_policy
    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.testing import isolated_home

    decisions_of = {rid: decision for rid, _t, _f, _o, _v, decision in RULES}
    policy_set = cedarpy.PolicySet.from_str(cedar_policy_text())
    entities = cedarpy.Entities.from_json_str("[]")
    cedar_requests = [
        {"principal": 'Agent::"bench-agent"', "action": 'Action::"call"', "resource": f'Tool::"{tool}"',
         "context": {"tool": tool, "scope": SCOPE, "args": args}}
        for tool, args in REQUESTS
    ]

    def cedar_decision(result: Any) -> str:
        if result.allowed:
            return "ALLOW"
        ids = result.diagnostics.id_annotations_by_reason.values()
        if result.diagnostics.errors:
            raise RuntimeError(f"cedar evaluation errors: {result.diagnostics.errors}")
        if not ids or any(decisions_of.get(i) == "block" for i in ids):
            return "BLOCK"
        return "STEP_UP"

    with isolated_home() as home:
        store = SQLiteStore(home / "policy-bench.db")
        policy = parse_policy(thoth_policy_yaml(), name="bench")
        engine = Engine(store, policy)
        state = engine._session("bench", "s")
        bodies = [{"tenant_id": "bench", "agent_id": "bench-agent", "session_id": "s", "tool_name": tool,
                   "tool_args": args, "approved_scope": SCOPE, "enforcement_mode": "block"} for tool, args in REQUESTS]
        verdict = engine._policy_verdict

        def ours(body: dict[str, Any]) -> str:
            v = verdict(policy, body, state, "bench-agent", body["tool_name"], body["tool_args"])
            return "ALLOW" if v is None else v.decision.value

        mismatches = [(b["tool_name"], b["tool_args"], ours(b), cedar_decision(cedarpy.is_authorized(c, policy_set,
                                                                                                  entities)))
                      for b, c in zip(bodies, cedar_requests, strict=True)]
        wrong = [m for m in mismatches if m[2] != m[3]]
        if wrong:
            raise RuntimeError(f"thoth_nb and cedar disagree: {wrong}")
        kinds = sorted({m[2] for m in mismatches})
        n = len(bodies)
        reps = max(1, sizes.policy_decisions // n // 10)

        def time_ours() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(reps):
                for b in bodies:
                    verdict(policy, b, state, "bench-agent", b["tool_name"], b["tool_args"])
            return (time.perf_counter_ns() - t0) / (reps * n) / 1000

        is_authorized = cedarpy.is_authorized

        def time_cedar() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(reps):
                for c in cedar_requests:
                    is_authorized(c, policy_set, entities)
            return (time.perf_counter_ns() - t0) / (reps * n) / 1000

        def time_cedar_batch() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(reps):
                cedarpy.is_authorized_batch(cedar_requests, policy_set, entities)
            return (time.perf_counter_ns() - t0) / (reps * n) / 1000

        samples = interleaved({"ours": time_ours, "cedar": time_cedar, "batch": time_cedar_batch}, 10)
        store.close()
    mine, theirs, batch = median(samples["ours"]), median(samples["cedar"]), median(samples["batch"])
    speedup = theirs / mine
    return [
        Result(GROUP, "policy decision, 20 rules: thoth_nb engine", mine, "µs/decision", theirs,
               "cedarpy is_authorized, cached PolicySet/Entities", mine / theirs, "≥ 10x faster than cedar",
               speedup >= 10,
               f"{speedup:.1f}x faster; {n} requests ({', '.join(kinds)}) decided identically first; "
               f"cedarpy is_authorized_batch: {batch:.1f} µs/decision ({batch / mine:.1f}x ours)"),
    ]


BENCHES = [bench_policy_vs_cedar]
