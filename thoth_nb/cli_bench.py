"""`thoth-nb bench`: run the benchmarks from a source checkout (the `benchmarks/` package is not in the wheel)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_bench_command"]


def _runner() -> Any:
    try:
        from benchmarks import runner
    except ImportError:
        return None
    return runner


def cmd_bench(args: argparse.Namespace) -> int:
    runner = _runner()
    if runner is None:
        print("thoth-nb: the benchmarks live in the source tree: run `thoth-nb bench` (or `python -m benchmarks`) "
              "from a checkout of thoth_nb", file=sys.stderr)
        return 2
    result: int = runner.run_cli(args)
    return result


def add_bench_command(sub: Any) -> None:
    """Register `bench` on the CLI's subparsers (called from thoth_nb.cli)."""
    parser = sub.add_parser("bench", help="run the benchmarks (from a source checkout) and print the table")
    runner = _runner()
    if runner is not None:
        runner.add_arguments(parser)
    parser.set_defaults(fn=cmd_bench)
