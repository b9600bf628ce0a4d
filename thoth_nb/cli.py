"""`thoth-nb`: demo | holds | approve | deny | events | policy check, plus serve and keys (server extra)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))[:60]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, ""))[:60].ljust(widths[c]) for c in columns))


def cmd_holds(args: argparse.Namespace) -> int:
    from thoth_nb._approvals import holds

    try:
        rows = holds(args.status, api_url=args.api_url, api_key=args.api_key)
    except (LookupError, RuntimeError) as exc:
        print(f"thoth-nb: {exc}", file=sys.stderr)
        return 1
    for row in rows:
        row["args"] = json.dumps(row.get("tool_args"), default=str)
    _print_table(rows, ["approval_id", "status", "agent_id", "tool_name", "args", "reason", "expires_at"])
    return 0


def _resolve(args: argparse.Namespace, approve: bool) -> int:
    from thoth_nb._approvals import resolve

    modified = None
    if getattr(args, "modified_args", None):
        try:
            modified = json.loads(args.modified_args)
        except ValueError as exc:
            modified = exc
        if not isinstance(modified, dict):
            print(f"thoth-nb: --modified-args must be a JSON object such as '{{\"to\": \"a@b.c\"}}' "
                  f"({modified if isinstance(modified, ValueError) else type(modified).__name__})", file=sys.stderr)
            return 2
    try:
        record = resolve(args.hold, approve=approve, reviewer=args.reviewer, note=args.note,
                         scope=getattr(args, "scope", "once"), modified_args=modified,
                         api_url=args.api_url, api_key=args.api_key)
    except (LookupError, RuntimeError, ValueError) as exc:
        print(f"thoth-nb: {exc}", file=sys.stderr)
        return 1
    print(f"{record['approval_id']} {record['status']} by {record.get('reviewer')}: {record['tool_name']}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _resolve(args, True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _resolve(args, False)


def cmd_events(args: argparse.Namespace) -> int:
    from thoth_nb._runtime import local_store

    rows = local_store().events(args.tenant, agent_id=args.agent, session_id=args.session, limit=args.limit)
    for row in rows:
        row["decision"] = row.get("metadata", {}).get("authorization_decision", "")
    _print_table(rows, ["occurred_at", "agent_id", "tool_name", "event_type", "decision"])
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from thoth_nb._exceptions import PolicyError
    from thoth_nb.engine.policy import load_policy

    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(f"thoth-nb: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok ({len(policy.rules)} rules, {len(policy.rate_limits)} rate limits)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from thoth_nb._demo import run_demo

    return run_demo(approve_after=args.approve_after, quiet=args.quiet)


def _add_server_commands(sub: Any) -> None:
    try:
        from thoth_nb.cli_server import add_server_commands
    except ImportError:
        return
    add_server_commands(sub)


def _add_db_commands(sub: Any) -> None:
    try:
        from thoth_nb.cli_db import add_db_commands
    except ImportError:
        return
    add_db_commands(sub)


def _add_bench_command(sub: Any) -> None:
    try:
        from thoth_nb.cli_bench import add_bench_command
    except ImportError:
        return
    add_bench_command(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thoth-nb", description="Govern AI agents' tool calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    def resolver(name: str, fn: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("hold", help="approval id (apr_...) or hold token (hold_...)")
        p.add_argument("--reviewer", help="who decides (default: your user name)")
        p.add_argument("--note")
        p.add_argument("--api-url", help="a thoth-nb server (default: THOTH_API_URL, else the embedded store)")
        p.add_argument("--api-key", help="a reviewer or admin key (default: THOTH_API_KEY)")
        p.set_defaults(fn=fn)
        return p

    demo = sub.add_parser("demo", help="run an offline scripted agent through allow, step-up and block")
    demo.add_argument("--approve-after", type=float, default=0.5, help="seconds before the scripted reviewer approves")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(fn=cmd_demo)

    approve = resolver("approve", cmd_approve, "approve a held tool call")
    approve.add_argument("--scope", choices=["once", "session"], default="once",
                         help="session: also allow the same tool with the same arguments for the rest of the session")
    approve.add_argument("--modified-args", help="JSON object: run the call with these arguments instead")
    resolver("deny", cmd_deny, "deny a held tool call")

    holds = sub.add_parser("holds", help="list held tool calls")
    holds.add_argument("--status", default="pending", choices=["pending", "approved", "denied", "expired", "all"])
    holds.add_argument("--api-url")
    holds.add_argument("--api-key")
    holds.set_defaults(fn=cmd_holds)

    events = sub.add_parser("events", help="list recorded events of the embedded store")
    events.add_argument("--tenant", default="local")
    events.add_argument("--agent")
    events.add_argument("--session")
    events.add_argument("--limit", type=int, default=50)
    events.set_defaults(fn=cmd_events)

    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file (reports line and field)")
    check.add_argument("file", type=Path)
    check.set_defaults(fn=cmd_policy_check)

    _add_server_commands(sub)
    _add_bench_command(sub)
    _add_db_commands(sub)
    from thoth_nb.cli_audit import add_audit_commands  # stdlib only: always available

    add_audit_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. A configuration error (the store cannot be opened, is damaged or unwritable;
    THOTH_HOME is not a folder) is one line on stderr and exit 2 whichever command hit it, not a traceback."""
    from thoth_nb._exceptions import ThothConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except ThothConfigError as exc:
        print(f"thoth-nb: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
