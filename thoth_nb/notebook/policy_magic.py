"""`%%thoth_policy`: policy tests in a cell (thoth_nb.analytics.policy_tests does the deciding).

    %%thoth_policy policy.yaml
    - {tool: read_file, args: {path: secrets/a.env}, expect: block}
    - {tool: read_file, args: {path: notes.md}, expect: allow}
    - name: exfiltration after a secret read
      tool: send_email
      args: {to: someone@elsewhere.test}
      before: [{tool: read_file, args: {path: secrets/a.env}}]
      expect: block

The cell body is YAML: a list of cases, or a mapping with `cases:` and optionally `policy:` (a path
or the policy itself, inline). Without a policy on the line or in the body the cases run against
the policy in force (`%thoth policy load`, else the last embedded agent's, else $THOTH_HOME's or the
built-in default). The cell shows one row per case and prints a one-line summary; `--strict` makes
a failing case fail the cell (an AssertionError), so "Run all" stops at a broken policy.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

__all__ = ["MAGIC_NAME", "register", "thoth_policy", "unregister"]

MAGIC_NAME = "thoth_policy"


class _Parser(MagicArgumentParser):  # type: ignore[misc]
    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


def _parser() -> _Parser:
    # IPython's help formatter adds the first `%` of the usage line itself
    p = _Parser(prog="%thoth_policy", description="Check expected decisions for example calls (YAML cases in "
                                                    "the cell) against a policy.")  # type: ignore[no-untyped-call]
    p.add_argument("policy", nargs="?", help="policy YAML file (default: the policy in force)")
    p.add_argument("--mode", type=str.lower, choices=("policy", "observe", "step_up", "block", "progressive"),
                   help="check enforcement in this mode (default: the policy's own verdict)")
    p.add_argument("--strict", action="store_true", help="fail the cell when a case fails")
    p.add_argument("--tenant", dest="tenant_id", help="tenant whose policy is in force")
    return p


def _current_policy(tenant_id: str | None) -> Any:
    """The policy the notebook's agents are decided by (what `%thoth dashboard` shows in Policies)."""
    from thoth_nb.notebook import state
    from thoth_nb.notebook.dashboard import Workbench

    loaded = getattr(state.magics, "policy", "") if state.magics is not None else ""
    return Workbench(tenant_id=tenant_id, policy=loaded or None).policy()


def thoth_policy(line: str, cell: str) -> Any:
    """`%%thoth_policy [POLICY] [--mode M] [--strict]`: run the YAML cases of the cell against a policy."""
    import shlex

    import yaml

    from thoth_nb._exceptions import PolicyError
    from thoth_nb.analytics.policy_tests import policy_test, summary
    from thoth_nb.analytics.replay import load_candidate

    try:
        args = _parser().parse_args(shlex.split(line))
    except ValueError as exc:
        raise UsageError(f"cannot read the options: {exc}") from None
    try:
        body = yaml.safe_load(cell) if cell.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"the cell is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if body is None:
        raise UsageError("the cell has no cases; write a YAML list like\n- {tool: read_file, args: {path: a}, "
                         "expect: allow}")
    source: Any = args.policy
    if isinstance(body, dict) and "cases" in body:
        if body.get("policy") is not None:
            if source is not None:
                raise UsageError("give the policy on the magic line or as `policy:` in the cell, not both")
            source = body["policy"]
        cases = body["cases"]
    else:
        cases = body
    try:
        if isinstance(source, str) and "\n" not in source:
            source = os.path.expanduser(source)
        policy = load_candidate(source) if source is not None else _current_policy(args.tenant_id)
        result = policy_test(policy, cases, mode=args.mode)
    except (PolicyError, ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    line_out = summary(result)
    print(("✓ " if result["passed"].all() else "✗ ") + line_out)
    if args.strict and not result["passed"].all():
        raise AssertionError(line_out)
    return result


def register(ipython: Any) -> None:
    """Add `%%thoth_policy` to the shell (called by `%load_ext thoth_nb`)."""
    ipython.register_magic_function(thoth_policy, magic_kind="cell", magic_name=MAGIC_NAME)


def unregister(ipython: Any) -> None:
    """Remove `%%thoth_policy` (called by `%unload_ext thoth_nb`)."""
    manager = getattr(ipython, "magics_manager", None)
    if manager is not None:
        manager.magics.get("cell", {}).pop(MAGIC_NAME, None)
