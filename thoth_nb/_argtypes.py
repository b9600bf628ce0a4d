"""argparse `type=` converters shared by the CLI and the `%thoth` magics (IPython parses magics with argparse)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["whole_number"]


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int from `low` to `high` (no upper bound when None); anything else is an argparse error naming the
    range, so the parser prints the option and what it takes."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}-{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {value}")
        return value

    return parse
