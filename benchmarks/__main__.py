"""`python -m benchmarks [--smoke] [--only GROUP] [--markdown benchmarks/RESULTS.md]`."""

from benchmarks.runner import main

raise SystemExit(main())
