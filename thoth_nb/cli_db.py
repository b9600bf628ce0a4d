"""`thoth-nb db upgrade | prune --older-than 90d | export --parquet FILE` for either store.

The store is `--db` (a SQLite path or a `postgresql://` URL), else `THOTH_DATABASE_URL`, else the
embedded `$THOTH_HOME/thoth.db`. Kept out of cli.py so the CLI imports nothing it does not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["add_db_commands", "export_parquet", "open_existing_store", "parse_age"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m`, `2w`, `45s` (or a bare number of days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise ValueError(f"age must look like 90d, 12h, 30m, 2w or 45s; got {text!r}")
    try:
        return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "d"])
    except OverflowError:
        raise ValueError(f"age {text!r} is longer than dates go back; give a smaller --older-than") from None


def open_existing_store(value: str | None) -> Any:
    """The store a read or maintenance command works on (`--db`, else THOTH_DATABASE_URL, THOTH_DB, the
    embedded file). A SQLite file must exist already: opening creates one, so `audit verify --db` of a
    mistyped path reported a new empty store "intact" and `keys list` answered "(none)"."""
    from thoth_nb._exceptions import ThothConfigError
    from thoth_nb.engine.store import database_url, is_postgres_url, open_store, sqlite_path

    target = database_url(value or None)
    if not is_postgres_url(target):
        path = sqlite_path(target)
        if not path.is_file():
            what = "is a directory, not a thoth_nb store" if path.is_dir() else "does not exist"
            raise ThothConfigError(f"{path} {what}: check --db (or THOTH_DATABASE_URL, THOTH_DB, THOTH_HOME); "
                                   "`thoth-nb db upgrade --db PATH` creates a new store")
    return open_store(target)


def _open(args: argparse.Namespace) -> Any:
    return open_existing_store(args.db)


def _fail(message: str) -> int:
    print(f"thoth-nb: {message}", file=sys.stderr)
    return 2


def _label(store: Any) -> str:
    return repr(store) if store.url.startswith("postgres") else str(getattr(store, "path", store.url))


def _sqlite_migrations(path: Path) -> set[str]:
    """Migration names already recorded in a SQLite file (none if it does not exist yet)."""
    import sqlite3

    if not path.expanduser().exists():
        return set()
    db = sqlite3.connect(path.expanduser())
    try:
        return {row[0] for row in db.execute("SELECT name FROM schema_migrations")}
    except sqlite3.DatabaseError:
        return set()
    finally:
        db.close()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply pending named migrations (opening a store migrates; this reports what ran)."""
    from thoth_nb._exceptions import ThothConfigError
    from thoth_nb.engine.store import MIGRATION_NAMES, database_url, is_postgres_url

    target = database_url(args.db or None)
    try:
        if is_postgres_url(target):
            from thoth_nb.engine.store_pg import PostgresStore

            store: Any = PostgresStore(str(target), migrate=False)
        else:
            from thoth_nb.engine.store import SQLiteStore, sqlite_path

            path = sqlite_path(target)
            before = _sqlite_migrations(path)
            store = SQLiteStore(path)  # opening a SQLite store applies pending migrations
    except ThothConfigError as exc:
        return _fail(str(exc))
    try:
        try:  # (a fresh PostgreSQL schema has no schema_migrations before this)
            applied = store.migrate()
        except ThothConfigError as exc:  # a later thoth-nb upgraded this store
            return _fail(str(exc))
        done = store.migrations()
        if not is_postgres_url(target):
            applied = [name for name in done if name not in before]
    finally:
        store.close()
    print(f"{_label(store)}: {len(done)}/{len(MIGRATION_NAMES)} migrations applied"
          + (f" (now: {', '.join(applied)})" if applied else " (up to date)"))
    return 0


def cmd_db_prune(args: argparse.Namespace) -> int:
    from thoth_nb._exceptions import ThothConfigError

    try:
        age = parse_age(args.older_than)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        cutoff = dt.datetime.now(dt.UTC) - age
    except OverflowError:
        return _fail(f"age {args.older_than!r} is longer than dates go back; give a smaller --older-than")
    try:
        store = _open(args)
    except ThothConfigError as exc:
        return _fail(str(exc))
    started = time.perf_counter()
    try:
        counts = store.prune(cutoff, tenant_id=args.tenant)
    finally:
        store.close()
    total = sum(counts.values())
    detail = ", ".join(f"{table} {n}" for table, n in counts.items() if n)
    print(f"pruned {total} rows older than {cutoff:%Y-%m-%dT%H:%M:%SZ} in {time.perf_counter() - started:.1f}s"
          + (f" ({detail})" if detail else ""))
    return 0


def _arrow_schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("seq", pa.int64()), ("event_id", pa.string()), ("tenant_id", pa.string()), ("session_id", pa.string()),
        ("agent_id", pa.string()), ("user_id", pa.string()), ("tool_name", pa.string()),
        ("event_type", pa.string()), ("occurred_at", ts), ("ingested_at", ts), ("decision", pa.string()),
        ("violation_id", pa.string()), ("chain_index", pa.int32()), ("hash", pa.string()),
        ("previous_hash", pa.string()), ("body", pa.string()),
    ])


def export_parquet(store: Any, path: str | Path, *, tenant_id: str | None = None, since: Any = None,
                   until: Any = None, batch: int = 50_000, compression: str = "zstd") -> int:
    """Write the store's events to one Parquet file (one row group per batch; `body` is the JSON text
    that was hashed). Returns the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    names = schema.names
    written = 0
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory; give a file name such as {target / 'events.parquet'}")
    partial = target.with_name(target.name + ".partial")
    batches: Iterable[list[dict[str, Any]]] = store.iter_event_rows(tenant_id, since=since, until=until, batch=batch)
    try:
        with pq.ParquetWriter(partial, schema, compression=compression) as writer:
            for rows in batches:
                columns = [[row[name] for row in rows] for name in names]
                writer.write_table(pa.Table.from_arrays([pa.array(c, type=f.type)
                                                         for c, f in zip(columns, schema, strict=True)],
                                                        schema=schema))
                written += len(rows)
        partial.replace(target)
    except BaseException:  # disk full, permissions, interrupted: no half-written file is left behind
        partial.unlink(missing_ok=True)
        raise
    return written


def cmd_db_export(args: argparse.Namespace) -> int:
    from thoth_nb._exceptions import ThothConfigError

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return _fail("Parquet export needs pyarrow: pip install 'thoth-nb[pandas]'")
    from thoth_nb.engine.store import parse_ts

    for flag, value in (("--since", args.since), ("--until", args.until)):
        try:
            if value is not None:
                parse_ts(value)
        except ValueError:
            return _fail(f"{flag} must be an RFC 3339 time such as 2026-01-01T00:00:00Z; got {value!r}")
    try:
        store = _open(args)
    except ThothConfigError as exc:
        return _fail(str(exc))
    started = time.perf_counter()
    try:
        n = export_parquet(store, args.parquet, tenant_id=args.tenant, since=args.since, until=args.until)
    except OSError as exc:
        return _fail(f"could not write {args.parquet}: {exc}")
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    print(f"exported {n} events to {args.parquet} in {elapsed:.1f}s")
    return 0


def add_db_commands(subparsers: Any) -> None:
    """Register `db upgrade|prune|export` on an argparse subparsers object; each sets `fn`."""
    db = subparsers.add_parser("db", help="store maintenance: migrations, retention, Parquet export")
    dsub = db.add_subparsers(dest="db_command", required=True)
    db_help = "a SQLite path or postgresql:// URL (default: THOTH_DATABASE_URL, else $THOTH_HOME/thoth.db)"

    upgrade = dsub.add_parser("upgrade", help="apply the named schema migrations")
    upgrade.add_argument("--db", help=db_help)
    upgrade.set_defaults(fn=cmd_db_upgrade)

    prune = dsub.add_parser("prune", help="delete events, violations, resolved holds and idle state older than AGE")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h, 2w")
    prune.add_argument("--tenant", help="only this tenant (default: all)")
    prune.add_argument("--db", help=db_help)
    prune.set_defaults(fn=cmd_db_prune)

    export = dsub.add_parser("export", help="bulk-export events for analysis")
    export.add_argument("--parquet", required=True, type=Path, metavar="FILE")
    export.add_argument("--tenant", help="only this tenant (default: all)")
    export.add_argument("--since", help="RFC 3339 time (inclusive)")
    export.add_argument("--until", help="RFC 3339 time (exclusive)")
    export.add_argument("--db", help=db_help)
    export.set_defaults(fn=cmd_db_export)
