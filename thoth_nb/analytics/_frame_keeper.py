"""The frame keeper: `python -m thoth_nb.analytics._frame_keeper STORE TENANT...` brings the disk cache
of each tenant's `events()` (`_frame_cache`) up to the store's last row, then exits.

The emitter and `thoth-nb serve` on SQLite start it (`thoth_nb._frames_upkeep`, by module name: the core
imports nothing from analytics) after every `KEEP_EVERY` events they stored into a SQLite store, and at
shutdown when they stored at least `KEEP_AT_EXIT` since the last time. So a store written by thoth_nb has
its columnar copy ready when a notebook opens it: the first `events()` of a fresh kernel maps a file and
reads the newest rows on top (~0.7 s per million rows) instead of decoding every row (~2.2 s). A keeper
that finds the store grew while it ran goes over it again (at most `_PASSES` times).

It runs at low priority (nice 10), one at a time per store (an flock next to the cache files: a keeper
that finds another running leaves the work to it), and nothing it does can change the store: it reads
with ADBC in this process (which holds the store open nowhere else) and writes only cache files, each
checked against the store before any reader uses it. THOTH_FRAME_KEEPER=0 (or THOTH_FRAME_CACHE=0)
keeps it from being started.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from thoth_nb._config import frame_keeper_enabled

#: passes over the tenants at most, while the store keeps growing under the keeper
_PASSES = 3


@contextlib.contextmanager
def _only_keeper(store: Path) -> Iterator[bool]:
    """True while this process holds the store's keeper lock; False when another keeper does."""
    import fcntl

    from thoth_nb.analytics import _frame_cache

    base = _frame_cache.folder()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:16]
    fd = os.open(base / f".keeper-{name}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def keep(store: Path, tenants: Sequence[str], *, min_rows: int | None = None) -> dict[str, int]:
    """Rows each tenant's cache file holds after this run (`frames.keep_cache`); {} when another keeper
    holds the store."""
    from thoth_nb.analytics.frames import _seq_span, keep_cache

    with _only_keeper(store) as mine:
        if not mine:
            return {}
        kept: dict[str, int] = {}
        for _ in range(_PASSES):  # rows stored meanwhile (a writer's shutdown skips starting a keeper
            hi = _seq_span(store)[1]  # while this one runs): catch up with them before leaving
            kept = {tenant: keep_cache(store, tenant, min_rows=min_rows) for tenant in tenants}
            if _seq_span(store)[1] == hi:
                break
        return kept


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m thoth_nb.analytics._frame_keeper",
                                     description="Bring the DataFrame disk cache of a store up to date.")
    parser.add_argument("store", type=Path, help="the SQLite store file")
    parser.add_argument("tenants", nargs="+", metavar="tenant", help="tenants whose events() to keep")
    parser.add_argument("--min-rows", type=int, default=None,
                        help="skip stores with fewer rows (default: the size from which reads are cached)")
    args = parser.parse_args(argv)
    if not frame_keeper_enabled():
        return 0
    with contextlib.suppress(OSError):
        os.nice(10)  # background upkeep: the user's work comes first
    if not args.store.is_file():
        print(f"thoth-nb frame keeper: no store at {args.store}", file=sys.stderr)
        return 2
    try:
        kept = keep(args.store, args.tenants, min_rows=args.min_rows)
    except Exception as exc:  # nothing depends on it: a reader falls back to reading the store
        print(f"thoth-nb frame keeper: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(" ".join(f"{tenant}={rows}" for tenant, rows in kept.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
