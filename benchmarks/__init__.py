"""thoth_nb benchmarks: every performance figure the issues name, measured against a baseline in the same run.

`python -m benchmarks` (or `thoth-nb bench`) runs everything and prints one table (figure, value, baseline,
ratio, target, pass/fail), writing the same table to `benchmarks/results/latest.json`. `--smoke` runs
tiny sizes in seconds (the test suite does, so the runner cannot rot). Not part of the wheel.
"""

from __future__ import annotations

from benchmarks._core import Result, Sizes

__all__ = ["Result", "Sizes"]
