"""`python -m thoth_nb ...` is `thoth-nb ...`."""

from thoth_nb.cli import main

raise SystemExit(main())
