"""Durable state of the enforcer: events, violations, holds, grants, keys, policies.

SQLite by default (WAL, one file under `$THOTH_HOME`), shared safely by the notebook kernel, the CLI
and `thoth-nb serve`. Every row carries `tenant_id` and every query is scoped by it (D9). Schema
changes are named, ordered migrations recorded in `schema_migrations` (simonw/llm's pattern).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from thoth_nb import _json
from thoth_nb._exceptions import ThothConfigError

try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - exercised only without the `fast` extra
    _orjson_dumps = None  # type: ignore[assignment]

__all__ = [
    "HoldConflict",
    "HoldNotFound",
    "SQLiteStore",
    "Store",
    "format_ts",
    "open_store",
    "parse_ts",
    "sqlite_path",
    "utcnow",
]

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_ts(value: dt.datetime | float | None = None) -> str:
    """RFC 3339 UTC with microseconds, fixed width so strings sort in time order."""
    if value is None:
        value = utcnow()
    elif isinstance(value, (int, float)):
        try:
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError):  # a ValueError like any other bad timestamp (a caller's 422)
            raise ValueError(f"timestamp {value!r} is out of range") from None
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime(_TS_FORMAT)


def parse_ts(value: str) -> dt.datetime:
    """Parse RFC 3339 (with Z or an offset); naive values are taken as UTC (PROTOCOL §5)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # year 1 with a positive offset, 9999 with a negative one
        raise ValueError(f"timestamp {value!r} is out of range in UTC") from None


#: the canonical form with a valid time of day (ASCII digits; the date is checked by `_is_date`)
_CANONICAL_TS = re.compile(r"(\d{4}-\d\d-\d\d)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z", re.ASCII)


@functools.lru_cache(maxsize=1024)
def _is_date(text: str) -> bool:
    dt.date.fromisoformat(text)  # raises ValueError for a date that does not exist
    return True


def normalize_ts(value: Any) -> str:
    if type(value) is str:
        canonical = _CANONICAL_TS.fullmatch(value)
        if canonical is not None and _is_date(canonical.group(1)):  # already canonical (the SDK's form)
            return value
    if isinstance(value, dt.datetime):
        return format_ts(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_ts(float(value))
    return format_ts(parse_ts(str(value)))


class HoldNotFound(LookupError):
    pass


class HoldConflict(RuntimeError):
    """The hold was already resolved or has expired."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(f"hold {record['approval_id']} is already {record['status']}")
        self.record = record


Migration = Callable[[sqlite3.Connection], None]


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            tenant_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            agent_id TEXT NOT NULL DEFAULT '',
            user_id TEXT NOT NULL DEFAULT '',
            tool_name TEXT NOT NULL DEFAULT '',
            event_type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            ingested_at TEXT NOT NULL,
            decision TEXT,
            violation_id TEXT,
            chain_index INTEGER NOT NULL,
            hash TEXT NOT NULL,
            previous_hash TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX events_tenant_time ON events (tenant_id, occurred_at);
        CREATE INDEX events_tenant_session ON events (tenant_id, session_id, seq);
        CREATE INDEX events_tenant_agent ON events (tenant_id, agent_id, occurred_at);
        CREATE TABLE violations (
            violation_id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            session_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            decision TEXT NOT NULL,
            observed INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL,
            decision_reason_code TEXT NOT NULL,
            risk_score REAL NOT NULL,
            matched_rule_ids TEXT NOT NULL,
            tool_args TEXT,
            request TEXT
        );
        CREATE INDEX violations_tenant_time ON violations (tenant_id, created_at);
        CREATE TABLE holds (
            approval_id TEXT PRIMARY KEY,
            hold_token TEXT NOT NULL UNIQUE,
            tenant_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            args_hash TEXT NOT NULL,
            tool_args TEXT,
            reason TEXT NOT NULL,
            decision_reason_code TEXT NOT NULL,
            risk_score REAL NOT NULL,
            matched_rule_ids TEXT NOT NULL,
            violation_id TEXT,
            allow_modify INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'pending',
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            resolved_at TEXT,
            reviewer TEXT,
            note TEXT,
            grant_scope TEXT,
            modified_args TEXT
        );
        CREATE INDEX holds_tenant_status ON holds (tenant_id, status, created_at);
        CREATE TABLE grants (
            tenant_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            args_hash TEXT NOT NULL,
            approval_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (tenant_id, session_id, tool_name, args_hash)
        );
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            role TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            key_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE policies (
            tenant_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            etag TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT,
            PRIMARY KEY (tenant_id, version)
        );
        CREATE TABLE tool_inventory (
            tenant_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            description TEXT,
            input_schema TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (tenant_id, agent_id, tool_name)
        );
        """
    )


def _m002_shared_state(db: sqlite3.Connection) -> None:
    """Decision state the engine keeps in the store when several processes decide (`shared_state`)."""
    _script(
        db,
        """
        CREATE TABLE session_state (
            tenant_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            history TEXT NOT NULL DEFAULT '[]',
            violations INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, session_id)
        );
        CREATE TABLE rate_windows (
            tenant_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            limit_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            hits TEXT NOT NULL DEFAULT '[]',
            updated_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, session_id, limit_id, tool_name)
        );
        CREATE TABLE request_dedupe (
            tenant_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            decision TEXT NOT NULL,
            PRIMARY KEY (tenant_id, request_id)
        );
        """
    )


def _m003_volume_indexes(db: sqlite3.Connection) -> None:
    """Per-session counts of violations and holds, and hold expiry. Each events index costs ingest, so the
    dashboard's tenant/session/agent/time reads stay on m001's indexes; on SQLite `db prune` scans events
    (PostgreSQL adds a BRIN index on occurred_at under this same name)."""
    _script(
        db,
        """
        CREATE INDEX violations_tenant_session ON violations (tenant_id, session_id);
        CREATE INDEX holds_tenant_session ON holds (tenant_id, session_id);
        CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending'
        """
    )


def _m004_agent_tool_counts(db: sqlite3.Connection) -> None:
    """Per-agent tool counts for progressive mode's rare-tool score when several processes decide."""
    _script(
        db,
        """
        CREATE TABLE agent_tool_counts (
            tenant_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            tool_name TEXT NOT NULL,
            n INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, agent_id, tool_name)
        )
        """
    )


#: The named migrations, in order. Every store (SQLiteStore, store_pg.PostgresStore) applies exactly
#: these names, each in its own SQL dialect, so `schema_migrations` reads the same on both.
MIGRATION_NAMES: tuple[str, ...] = ("m001_initial", "m002_shared_state", "m003_volume_indexes",
                                    "m004_agent_tool_counts")

MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", _m001_initial),
    ("m002_shared_state", _m002_shared_state),
    ("m003_volume_indexes", _m003_volume_indexes),
    ("m004_agent_tool_counts", _m004_agent_tool_counts),
]
assert tuple(name for name, _ in MIGRATIONS) == MIGRATION_NAMES


def refuse_newer_schema(done: Iterable[str], where: str) -> None:
    """A store a later thoth-nb has migrated is not opened: this version cannot know what those migrations
    changed (a new column, a new constraint), so its writes could break the store."""
    newer = sorted(set(done) - set(MIGRATION_NAMES))
    if newer:
        raise ThothConfigError(f"{where} was upgraded by a newer thoth-nb (migrations {', '.join(newer)} are "
                               "unknown here): upgrade thoth-nb (pip install -U thoth-nb) to use it; "
                               "nothing in it was changed")


@dataclasses.dataclass(slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]


class Store:
    """What the engine needs from storage; `SQLiteStore` and `store_pg.PostgresStore` implement it."""

    url: str
    #: True when several processes decide over this store (PostgreSQL): the engine then keeps rate
    #: windows, session history, violation counts and request dedupe in the store, not in memory.
    shared_state: bool = False

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


_EVENT_COLUMNS = (
    "event_id, tenant_id, session_id, agent_id, user_id, tool_name, event_type, occurred_at, decision, "
    "violation_id, ingested_at, chain_index, hash, previous_hash, body"
)
#: rows per multi-row INSERT: 64 x 15 = 960 parameters, under the 999 of SQLite builds older than 3.32
_INSERT_ROWS = 64


@functools.lru_cache(maxsize=_INSERT_ROWS)
def _insert_events_sql(rows: int) -> str:
    """`INSERT INTO events (...) VALUES (...), (...), ...` for `rows` rows. One `execute` binds them all
    with the GIL held and steps once: `executemany` releases and re-takes the GIL for every row, and beside
    a CPU-bound thread each re-take waits up to a switch interval (5 ms). The earlier
    `INSERT ... SELECT json_extract(...) FROM json_each(?)` kept that property but cost SQLite ~3x the
    CPU (the batch serialised to JSON, then parsed back 15 times per row)."""
    return f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES " + ",".join(["(" + ",".join("?" * 15) + ")"] * rows)


def _body_bytes(body: Mapping[str, Any]) -> bytes:
    """`_json.dumps_bytes(body)`, byte for byte. orjson without OPT_NON_STR_KEYS first: that option costs
    ~40% of encoding an event, and changes nothing where every key is a string (anything else orjson
    refuses here, and `_json.dumps_bytes` encodes it as always)."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(body)
        except TypeError:  # orjson.JSONEncodeError: a non-str key, a type only `_json`'s default handles
            pass
    return _json.dumps_bytes(body)


def _event_row(event: Mapping[str, Any]) -> tuple[str, str, str, str, str, str, str, str, str | None, str | None]:
    metadata = event.get("metadata") or {}
    decision = metadata.get("authorization_decision") if isinstance(metadata, Mapping) else None
    return (
        str(event["event_id"]),
        str(event["tenant_id"]),
        str(event["session_id"]),
        str(event.get("agent_id") or ""),
        str(event.get("user_id") or ""),
        str(event.get("tool_name") or ""),
        str(event.get("event_type") or ""),
        normalize_ts(event.get("occurred_at") or utcnow()),
        decision if isinstance(decision, str) else None,
        event.get("violation_id") or None,
    )


#: page size of a new store's file (see `SQLiteStore.__init__`)
PAGE_SIZE = 16384

#: with a background checkpointer, a writer still checkpoints itself past this many WAL pages (40 MiB)
_BACKSTOP_PAGES = 40 * 1024 * 1024 // PAGE_SIZE


class _Checkpointer:
    """The daemon thread behind `SQLiteStore.checkpoint_in_background`."""

    def __init__(self, path: Path, interval: float, busy_timeout: float) -> None:
        self._stop = threading.Event()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="thoth-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:  # busy or closed under us: the next round (or the backstop) catches up
                continue
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


_open_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _reopen_stores_after_fork() -> None:
    for store in list(_open_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_stores_after_fork)


class SQLiteStore(Store):
    """One SQLite file in WAL mode. A lock serialises this process's writers; WAL and a busy
    timeout let other processes (CLI, server, another kernel) read and write beside it."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self.url = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._inherited: list[sqlite3.Connection] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout)
        except (OSError, sqlite3.OperationalError) as exc:
            raise ThothConfigError(
                f"cannot open the thoth_nb store at {self.path}: {exc}. Set THOTH_HOME to a writable folder."
            ) from None
        self._lock = threading.RLock()
        try:
            self._open_schema()
        except ThothConfigError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise ThothConfigError(f"cannot use the thoth_nb store at {self.path}: {exc}. "
                                       "Set THOTH_HOME to a writable folder.") from None
            raise ThothConfigError(  # corrupt, or not SQLite at all: nothing here writes to it
                f"{self.path} is not a usable thoth_nb store ({exc}): move it aside or restore a backup, "
                "then run again") from None
        self._checkpointer: _Checkpointer | None = None
        _open_stores.add(self)

    def _open_schema(self) -> None:
        """WAL, connection settings and pending migrations; any sqlite3 error here means the file is
        locked, read-only or not a usable database, which `__init__` reports as configuration."""
        # A new store gets 16 KiB pages (an existing one keeps its own: the PRAGMA is then a no-op). A WAL
        # commit writes each dirty page with two syscalls; an ingest batch of 500 events dirtied ~700 4 KiB
        # pages, and those writes were a third of the CPU per event. 16 KiB pages cut them by ~2.5x.
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._configure(self._db)
        self.migrate()

    @staticmethod
    def _configure(db: sqlite3.Connection) -> None:
        """WAL with synchronous=NORMAL: a commit is in the WAL file (the OS's page cache) when COMMIT
        returns, so it survives the process being killed; only an OS crash or power loss before the next
        checkpoint's fsync can lose the last commits. A 16 MiB page cache keeps the events indexes' hot
        pages in memory during ingest (the 2 MiB default re-reads them)."""
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA cache_size=-16384")

    def checkpoint_in_background(self, interval: float = 0.2) -> None:
        """Move WAL checkpoints off the commit path (the server calls this). A checkpoint fsyncs the WAL
        and the database: 20-100 ms on this machine's disk, paid by whichever COMMIT crosses SQLite's
        1000-page threshold. Here a daemon thread with its own connection checkpoints (PASSIVE: it never
        blocks writers) every `interval` s; this connection checkpoints itself only if the WAL outgrows
        10x the usual threshold (the thread fell behind). Durability of a commit is unchanged."""
        with self._lock:
            if self._checkpointer is not None:
                return
            self.defer_checkpoints()
            self._checkpointer = _Checkpointer(self.path, interval, self._busy_timeout)

    def defer_checkpoints(self) -> None:
        """Another connection checkpoints this file (`checkpoint_in_background`, maybe in another process:
        the server's ingest child): this one checkpoints only past the backstop, not on its commits."""
        with self._lock:
            self._db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held it at the fork) and a fresh
        connection (SQLite connections must not cross a fork). The inherited one is kept, never closed:
        closing it could checkpoint and remove the WAL the parent is still using."""
        self._lock = threading.RLock()
        self._inherited.append(self._db)
        with contextlib.suppress(sqlite3.Error):
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=self._busy_timeout)
            self._configure(self._db)
        if self._checkpointer is not None:  # its thread did not survive the fork; keep its connection too
            self._inherited.append(self._checkpointer._db)
            self._checkpointer = None  # the new connection checkpoints itself (SQLite's default)

    # -- plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {row[0] for row in db.execute("SELECT name FROM schema_migrations")}
            refuse_newer_schema(done, f"the thoth_nb store at {self.path}")
            for name, migration in MIGRATIONS:
                if name not in done:
                    migration(db)
                    db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, format_ts()))
                    applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        return [r["name"] for r in self.query("SELECT name FROM schema_migrations ORDER BY name")]

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            self._db.close()

    # -- events ----------------------------------------------------------------------------------

    def ingest_events(
        self, events: Sequence[Any], *, prepare: Callable[[int, Any], Mapping[str, Any]] | None = None
    ) -> IngestResult:
        """Store events idempotently (by event_id) and chain each session's events with SHA-256.

        One transaction, one pass: each event is checked, chained, encoded and hashed, and its row sent
        to SQLite 64 at a time, before the next event is looked at (a batch of parsed events held all at
        once costs ~2x to build and to walk: cold memory). The pass assumes no event_id is stored yet:
        the UNIQUE index finds a stored one, and then the transaction is rolled back and the batch redone
        by `_ingest_checked`, which looks the ids up first (a retried batch: rare, and exact either way).
        Returns after the COMMIT.

        `prepare(index, item)`, when given, turns each item into its event when the pass reaches it (the
        server parses and maps its request's events this way); a ValueError or TypeError it raises rejects
        that item with its message, any other exception aborts the batch with nothing stored.
        """
        if type(events) is not list and type(events) is not tuple:
            events = list(events)  # read by index, and twice if a stored id turns up
        ingested_at = format_ts()
        try:
            with self.transaction() as db:
                return self._ingest_pass(db, events, prepare, ingested_at, set())
        except sqlite3.IntegrityError:
            pass  # an event_id already stored (or a row SQLite refused: the checked pass raises that again)
        return self._ingest_checked(events, prepare, ingested_at)

    def _ingest_checked(self, events: Sequence[Any], prepare: Callable[[int, Any], Mapping[str, Any]] | None,
                        ingested_at: str) -> IngestResult:
        """The pass again, knowing which of the batch's event_ids are stored already."""
        ids: list[str] = []
        for index in range(len(events)):
            try:
                event = events[index] if prepare is None else prepare(index, events[index])
            except (ValueError, TypeError):
                continue
            if isinstance(event, Mapping) and event.get("event_id"):
                ids.append(str(event["event_id"]))
        with self.transaction() as db:
            existing: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                existing.update(r[0] for r in db.execute(
                    f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk))
            return self._ingest_pass(db, events, prepare, ingested_at, existing)

    @staticmethod
    def _ingest_pass(db: sqlite3.Connection, events: Sequence[Any],
                     prepare: Callable[[int, Any], Mapping[str, Any]] | None, ingested_at: str,
                     existing: set[str]) -> IngestResult:
        """Check, chain, encode, hash and insert every event of the batch; `existing`: ids not to store
        (stored ones, then also each id this pass stores, so a repeat within the batch is a duplicate)."""
        rejected: list[dict[str, Any]] = []
        heads: dict[tuple[str, str], tuple[int, str]] = {}
        values: list[Any] = []
        pending = accepted = duplicates = 0
        sha256, dumps, insert_sql = hashlib.sha256, _body_bytes, _insert_events_sql(_INSERT_ROWS)
        for index in range(len(events)):
            try:
                event = events[index] if prepare is None else prepare(index, events[index])
                if type(event) is not dict and not isinstance(event, Mapping):
                    raise ValueError("event must be an object")
                event_id, tenant, session = event.get("event_id"), event.get("tenant_id"), event.get("session_id")
                if not (event_id and tenant and session):
                    missing = [k for k in ("event_id", "tenant_id", "session_id") if not event.get(k)]
                    raise ValueError(f"missing required field(s): {', '.join(missing)}")
                occurred = normalize_ts(event.get("occurred_at") or utcnow())
            except (ValueError, TypeError) as exc:
                rejected.append({"index": index, "error": str(exc)})
                continue
            event_id = str(event_id)
            if event_id in existing:
                duplicates += 1
                continue
            existing.add(event_id)
            key = (str(tenant), str(session))
            head = heads.get(key)
            if head is None:
                last = db.execute(
                    "SELECT chain_index, hash FROM events WHERE tenant_id=? AND session_id=? ORDER BY seq DESC LIMIT 1",
                    key,
                ).fetchone()
                head = (int(last[0]), str(last[1])) if last else (-1, "")
            chain_index, previous = head[0] + 1, head[1]
            # the same dict (and key order) as {**event, "occurred_at": ..., "previous_hash": ...}
            body = event.copy() if type(event) is dict else dict(event)
            body["occurred_at"] = occurred
            body["ingested_at"] = ingested_at
            body["chain_index"] = chain_index
            body["previous_hash"] = previous
            body.pop("hash", None)
            body.pop("signature", None)
            encoded = dumps(body)
            digest = sha256(previous.encode() + encoded).hexdigest()
            heads[key] = (chain_index, digest)
            metadata = event.get("metadata")
            decision = (metadata.get("authorization_decision")
                        if type(metadata) is dict or isinstance(metadata, Mapping) else None)
            values += (
                event_id, key[0], key[1], str(event.get("agent_id") or ""), str(event.get("user_id") or ""),
                str(event.get("tool_name") or ""), str(event.get("event_type") or ""), occurred,
                decision if isinstance(decision, str) else None, event.get("violation_id") or None,
                ingested_at, chain_index, digest, previous, encoded.decode(),
            )
            accepted += 1
            pending += 1
            if pending == _INSERT_ROWS:
                db.execute(insert_sql, values)
                values.clear()
                pending = 0
        if pending:
            db.execute(_insert_events_sql(pending), values)
        return IngestResult(accepted, duplicates, rejected)

    def events(
        self,
        tenant_id: str,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        tool_name: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        where, params = self._filters(
            tenant_id,
            agent_id=agent_id, session_id=session_id, tool_name=tool_name, event_type=event_type,
        )
        if since:
            where.append("occurred_at >= ?")
            params.append(normalize_ts(since))
        if until:
            where.append("occurred_at < ?")
            params.append(normalize_ts(until))
        if after_seq:
            where.append("seq > ?")
            params.append(after_seq)
        sql = f"SELECT seq, hash, body FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for row in self.query(sql, params):
            body = _json.loads(row["body"])
            body["hash"] = row["hash"]
            body["seq"] = row["seq"]
            out.append(body)
        return out

    def count_events(self, tenant_id: str) -> int:
        return int(self.query("SELECT COUNT(*) AS n FROM events WHERE tenant_id=?", (tenant_id,))[0]["n"])

    @staticmethod
    def _filters(tenant_id: str, **equals: str | None) -> tuple[list[str], list[Any]]:
        where = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        for column, value in equals.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return where, params

    def sessions(self, tenant_id: str, *, agent_id: str | None = None, user_id: str | None = None,
                 since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, params = self._filters(tenant_id, agent_id=agent_id, user_id=user_id)
        if since:
            where.append("occurred_at >= ?")
            params.append(normalize_ts(since))
        sql = (
            "SELECT session_id, MIN(agent_id) AS agent_id, MIN(user_id) AS user_id, MIN(occurred_at) AS first_seen, "
            "MAX(occurred_at) AS last_seen, SUM(event_type = 'TOOL_CALL_PRE') AS tool_calls, "
            "SUM(event_type = 'TOOL_CALL_BLOCK') AS blocked "
            f"FROM events WHERE {' AND '.join(where)} GROUP BY session_id ORDER BY last_seen DESC LIMIT {int(limit)}"
        )
        rows = self.query(sql, params)
        # violations and holds from `since` on too: every count of a row covers the same window
        window, bound = (" AND created_at >= ?", [params[-1]]) if since else ("", [])
        counts = {
            r["session_id"]: r["n"]
            for r in self.query(
                f"SELECT session_id, COUNT(*) AS n FROM violations WHERE tenant_id=?{window} GROUP BY session_id",
                (tenant_id, *bound),
            )
        }
        holds = {
            r["session_id"]: r["n"]
            for r in self.query(
                f"SELECT session_id, COUNT(*) AS n FROM holds WHERE tenant_id=?{window} GROUP BY session_id",
                (tenant_id, *bound),
            )
        }
        for row in rows:
            row["violations"] = counts.get(row["session_id"], 0)
            row["stepped_up"] = holds.get(row["session_id"], 0)
            for key in ("tool_calls", "blocked"):
                row[key] = int(row[key] or 0)
        return rows

    # -- violations ------------------------------------------------------------------------------

    def record_violation(self, record: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO violations (violation_id, tenant_id, created_at, session_id, agent_id, user_id, "
                "tool_name, decision, observed, reason, decision_reason_code, risk_score, matched_rule_ids, tool_args, "
                "request) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record["violation_id"], record["tenant_id"], record.get("created_at") or format_ts(),
                    record["session_id"], record["agent_id"], record["user_id"], record["tool_name"],
                    record["decision"], int(bool(record.get("observed"))), record["reason"],
                    record["decision_reason_code"], float(record["risk_score"]),
                    _json.dumps(record.get("matched_rule_ids") or []),
                    _json.dumps(record.get("tool_args")) if record.get("tool_args") is not None else None,
                    _json.dumps(record.get("request")) if record.get("request") is not None else None,
                ),
            )

    def violations(self, tenant_id: str, *, agent_id: str | None = None, session_id: str | None = None,
                   since: str | None = None, violation_id: str | None = None,
                   limit: int = 10_000) -> list[dict[str, Any]]:
        where, params = self._filters(tenant_id, agent_id=agent_id, session_id=session_id,
                                      violation_id=violation_id)
        if since:
            where.append("created_at >= ?")
            params.append(normalize_ts(since))
        rows = self.query(
            f"SELECT * FROM violations WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT {int(limit)}", params
        )
        for row in rows:
            row["matched_rule_ids"] = _json.loads(row["matched_rule_ids"])
            row["tool_args"] = _json.loads(row["tool_args"]) if row["tool_args"] else None
            row["request"] = _json.loads(row["request"]) if row["request"] else None
            row["observed"] = bool(row["observed"])
        return rows

    # -- holds -----------------------------------------------------------------------------------

    def create_hold(self, record: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO holds (approval_id, hold_token, tenant_id, agent_id, user_id, session_id, tool_name, "
                "args_hash, tool_args, reason, decision_reason_code, risk_score, matched_rule_ids, violation_id, "
                "allow_modify, status, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)",
                (
                    record["approval_id"], record["hold_token"], record["tenant_id"], record["agent_id"],
                    record["user_id"], record["session_id"], record["tool_name"], record["args_hash"],
                    _json.dumps(record.get("tool_args")) if record.get("tool_args") is not None else None,
                    record["reason"], record["decision_reason_code"], float(record["risk_score"]),
                    _json.dumps(record.get("matched_rule_ids") or []), record.get("violation_id"),
                    int(bool(record.get("allow_modify"))), record["created_at"], record["expires_at"],
                ),
            )

    @staticmethod
    def _hold_out(row: dict[str, Any]) -> dict[str, Any]:
        row["tool_args"] = _json.loads(row["tool_args"]) if row.get("tool_args") else None
        row["modified_args"] = _json.loads(row["modified_args"]) if row.get("modified_args") else None
        row["matched_rule_ids"] = _json.loads(row["matched_rule_ids"]) if row.get("matched_rule_ids") else []
        row["allow_modify"] = bool(row.get("allow_modify"))
        return row

    def get_hold(self, key: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        """A hold by approval id or hold token, optionally scoped to a tenant."""
        sql = "SELECT * FROM holds WHERE (approval_id = ? OR hold_token = ?)"
        params: list[Any] = [key, key]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        rows = self.query(sql, params)
        return self._hold_out(rows[0]) if rows else None

    def holds(self, tenant_id: str | None, *, status: str = "pending", limit: int = 1000) -> list[dict[str, Any]]:
        self.expire_holds()
        where: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if status != "all":
            where.append("status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.query(f"SELECT * FROM holds {clause} ORDER BY created_at LIMIT {int(limit)}", params)
        return [self._hold_out(r) for r in rows]

    def expire_holds(self, now: str | None = None) -> int:
        stamp = now or format_ts()
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE holds SET status='expired', resolved_at=? WHERE status='pending' AND expires_at <= ?",
                (stamp, stamp),
            )
            return cursor.rowcount

    def resolve_hold(
        self,
        key: str,
        *,
        status: str,
        reviewer: str | None,
        note: str | None = None,
        modified_args: Mapping[str, Any] | None = None,
        grant_scope: str = "once",
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        """Move a pending hold to approved/denied exactly once; HoldConflict if it was not pending."""
        if status not in ("approved", "denied"):
            raise ValueError(f"status must be approved or denied; got {status!r}")
        self.expire_holds()
        now = format_ts()
        with self.transaction() as db:
            sql = "SELECT approval_id, status FROM holds WHERE (approval_id = ? OR hold_token = ?)"
            params: list[Any] = [key, key]
            if tenant_id is not None:
                sql += " AND tenant_id = ?"
                params.append(tenant_id)
            found = db.execute(sql, params).fetchone()
            if found is None:
                raise HoldNotFound(key)
            if found[1] == "pending":
                db.execute(
                    "UPDATE holds SET status=?, reviewer=?, note=?, resolved_at=?, grant_scope=?, modified_args=? "
                    "WHERE approval_id=? AND status='pending'",
                    (status, reviewer, note, now, grant_scope,
                     _json.dumps(modified_args) if modified_args is not None else None, found[0]),
                )
                if status == "approved" and grant_scope == "session" and modified_args is None:
                    db.execute(
                        "INSERT OR IGNORE INTO grants SELECT tenant_id, session_id, tool_name, args_hash, "
                        "approval_id, ? FROM holds WHERE approval_id=?",
                        (now, found[0]),
                    )
        record = self.get_hold(found[0])
        assert record is not None
        if found[1] != "pending":
            raise HoldConflict(record)
        return record

    def has_grant(self, tenant_id: str, session_id: str, tool_name: str, args_hash: str) -> str | None:
        rows = self.query(
            "SELECT approval_id FROM grants WHERE tenant_id=? AND session_id=? AND tool_name=? AND args_hash=?",
            (tenant_id, session_id, tool_name, args_hash),
        )
        return str(rows[0]["approval_id"]) if rows else None

    # -- policies, keys, inventory ---------------------------------------------------------------

    def save_policy(self, tenant_id: str, text: str, etag: str, created_by: str | None = None, *,
                    expected_version: int | None = None) -> int | None:
        """Store the next version; None (nothing stored) when `expected_version` is given and the latest
        version is another by now: the If-Match check of a PUT holds across servers sharing the store."""
        with self.transaction() as db:
            row = db.execute("SELECT MAX(version) FROM policies WHERE tenant_id=?", (tenant_id,)).fetchone()
            if expected_version is not None and int(row[0] or 0) != expected_version:
                return None
            version = int(row[0] or 0) + 1
            db.execute("INSERT INTO policies VALUES (?,?,?,?,?,?)",
                       (tenant_id, version, etag, text, format_ts(), created_by))
        return version

    def policy_versions(self, tenant_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM policies WHERE tenant_id=? ORDER BY version DESC", (tenant_id,))

    def latest_policy(self, tenant_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM policies WHERE tenant_id=? ORDER BY version DESC LIMIT 1", (tenant_id,))
        return rows[0] if rows else None

    def upsert_inventory(self, tenant_id: str, agent_id: str, tools: Sequence[Mapping[str, Any]]) -> int:
        now = format_ts()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO tool_inventory VALUES (?,?,?,?,?,?) ON CONFLICT (tenant_id, agent_id, tool_name) "
                "DO UPDATE SET description=excluded.description, input_schema=excluded.input_schema, "
                "updated_at=excluded.updated_at",
                [
                    (tenant_id, agent_id, str(t.get("name")), str(t.get("description") or "")[:4096],
                     _json.dumps(t.get("input_schema")) if t.get("input_schema") is not None else None, now)
                    for t in tools if t.get("name")
                ],
            )
        return len(tools)

    def inventory(self, tenant_id: str, agent_id: str | None = None) -> list[dict[str, Any]]:
        where, params = self._filters(tenant_id, agent_id=agent_id)
        return self.query(f"SELECT * FROM tool_inventory WHERE {' AND '.join(where)} ORDER BY tool_name", params)


    # -- API keys (D9; used by `thoth-nb serve` and `thoth-nb keys`) ------------------------------

    API_KEY_ROLES = ("agent", "reviewer", "admin")

    @staticmethod
    def hash_api_key(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def create_api_key(self, tenant_id: str, role: str, name: str = "") -> tuple[dict[str, Any], str]:
        """A new key for one tenant and role. Returns (record, secret): only the hash is stored, so the
        secret `thk_...` is shown this once."""
        import secrets

        if role not in self.API_KEY_ROLES:
            raise ValueError(f"role must be one of {', '.join(self.API_KEY_ROLES)}; got {role!r}")
        if not tenant_id:
            raise ValueError("tenant_id must be a non-empty string")
        secret = "thk_" + secrets.token_urlsafe(32)
        record = {
            "key_id": "key_" + secrets.token_hex(8),
            "tenant_id": tenant_id,
            "role": role,
            "name": name,
            "created_at": format_ts(),
            "revoked_at": None,
        }
        with self.transaction() as db:
            db.execute(
                "INSERT INTO api_keys (key_id, tenant_id, role, name, key_hash, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (record["key_id"], tenant_id, role, name, self.hash_api_key(secret), record["created_at"]),
            )
        return record, secret

    def api_key_for(self, secret: str) -> dict[str, Any] | None:
        """The active key record for a presented secret, or None (unknown or revoked)."""
        import hmac

        digest = self.hash_api_key(secret)
        rows = self.query(
            "SELECT key_id, tenant_id, role, name, key_hash, created_at, revoked_at FROM api_keys "
            "WHERE key_hash=?",
            (digest,),
        )
        if not rows or not hmac.compare_digest(str(rows[0]["key_hash"]), digest) or rows[0]["revoked_at"]:
            return None
        row = rows[0]
        row.pop("key_hash")
        return row

    def api_keys(self, tenant_id: str | None = None, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Key records without their hashes; `tenant_id=None` lists every tenant (local CLI only)."""
        where: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self.query(
            f"SELECT key_id, tenant_id, role, name, created_at, revoked_at FROM api_keys {clause} "
            "ORDER BY created_at, key_id",
            params,
        )

    def revoke_api_key(self, key_id: str, tenant_id: str | None = None) -> bool:
        """Revoke a key by id (scoped to a tenant when given); False if no such active key."""
        sql = "UPDATE api_keys SET revoked_at=? WHERE key_id=? AND revoked_at IS NULL"
        params: list[Any] = [format_ts(), key_id]
        if tenant_id is not None:
            sql += " AND tenant_id=?"
            params.append(tenant_id)
        with self.transaction() as db:
            return db.execute(sql, params).rowcount > 0

    def count_api_keys(self, *, active_only: bool = True) -> int:
        sql = "SELECT COUNT(*) AS n FROM api_keys" + (" WHERE revoked_at IS NULL" if active_only else "")
        return int(self.query(sql)[0]["n"])

    def session_summary(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        """One session's row as `sessions()` gives it, or None if the tenant has no event for it."""
        rows = self.query(
            "SELECT session_id, MIN(agent_id) AS agent_id, MIN(user_id) AS user_id, "
            "MIN(occurred_at) AS first_seen, MAX(occurred_at) AS last_seen, "
            "SUM(event_type = 'TOOL_CALL_PRE') AS tool_calls, "
            "SUM(event_type = 'TOOL_CALL_BLOCK') AS blocked, COUNT(*) AS n "
            "FROM events WHERE tenant_id=? AND session_id=? GROUP BY session_id",
            (tenant_id, session_id),
        )
        if not rows:
            return None
        row = rows[0]
        row.pop("n")
        row["tool_calls"] = int(row["tool_calls"] or 0)
        row["blocked"] = int(row["blocked"] or 0)
        row["violations"] = int(self.query(
            "SELECT COUNT(*) AS n FROM violations WHERE tenant_id=? AND session_id=?", (tenant_id, session_id)
        )[0]["n"])
        row["stepped_up"] = int(self.query(
            "SELECT COUNT(*) AS n FROM holds WHERE tenant_id=? AND session_id=?", (tenant_id, session_id)
        )[0]["n"])
        return row

    # -- shared decision state (issue 10; used by the engine only when `shared_state` is true) ---

    def session_step(
        self,
        tenant_id: str,
        session_id: str,
        *,
        history: bool = False,
        keep: int = 128,
        windows: Sequence[tuple[str, str, float, int]] = (),
        now: float | None = None,
    ) -> tuple[list[tuple[str, Any]], list[list[float]]]:
        """One call's session bookkeeping: the session's recorded calls (tool, args), at most `keep`, if
        `history`; and for each window (key, tool, per_seconds, cap) count this call and return the
        window's hits in (now - per_seconds, now], this one included, at most `cap` (the most recent).
        Each window changes atomically, so calls through several processes are all counted."""
        stamp = time.time() if now is None else now
        calls: list[tuple[str, Any]] = []
        hits_out: list[list[float]] = []
        with self.transaction() as db:
            if history:
                row = db.execute("SELECT history FROM session_state WHERE tenant_id=? AND session_id=?",
                                 (tenant_id, session_id)).fetchone()
                calls = [(str(t), a) for t, a in (_json.loads(row[0]) if row else [])[-keep:]]
            for key, tool, per_seconds, cap in windows:
                row = db.execute(
                    "SELECT hits FROM rate_windows WHERE tenant_id=? AND session_id=? AND limit_id=? AND tool_name=?",
                    (tenant_id, session_id, key, tool),
                ).fetchone()
                cutoff = stamp - per_seconds
                hits = sorted([h for h in (_json.loads(row[0]) if row else []) if h > cutoff] + [stamp])[-cap:]
                db.execute(
                    "INSERT INTO rate_windows (tenant_id, session_id, limit_id, tool_name, hits, updated_at) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (tenant_id, session_id, limit_id, tool_name) DO UPDATE SET "
                    "hits=excluded.hits, updated_at=excluded.updated_at",
                    (tenant_id, session_id, key, tool, _json.dumps(hits), stamp),
                )
                hits_out.append(hits)
        return calls, hits_out

    def record_call(self, tenant_id: str, session_id: str, tool_name: str, tool_args: Any, *, keep: int = 128,
                    now: float | None = None) -> None:
        """Append one call to the session's history (the most recent `keep` are kept)."""
        stamp = time.time() if now is None else now
        with self.transaction() as db:
            row = db.execute("SELECT history FROM session_state WHERE tenant_id=? AND session_id=?",
                             (tenant_id, session_id)).fetchone()
            stored = [*(_json.loads(row[0]) if row else []), [tool_name, tool_args]][-keep:]
            db.execute(
                "INSERT INTO session_state (tenant_id, session_id, history, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT (tenant_id, session_id) DO UPDATE SET history=excluded.history, "
                "updated_at=excluded.updated_at",
                (tenant_id, session_id, _json.dumps(stored), stamp),
            )

    def bump_violations(self, tenant_id: str, session_id: str, now: float | None = None) -> int:
        """Count one more violation in the session; returns the count before it (0: the first)."""
        stamp = time.time() if now is None else now
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO session_state (tenant_id, session_id, violations, updated_at) VALUES (?,?,1,?) "
                "ON CONFLICT (tenant_id, session_id) DO UPDATE SET violations=violations+1, "
                "updated_at=excluded.updated_at RETURNING violations",
                (tenant_id, session_id, stamp),
            ).fetchone()
        return int(row[0]) - 1

    def agent_tool_count(self, tenant_id: str, agent_id: str, tool_name: str,
                         now: float | None = None) -> tuple[int, int]:
        """Count one call of `tool_name` by the agent; returns (calls of this tool before it, all the
        agent's calls before it). The agent's total is the row with tool_name ''."""
        stamp = time.time() if now is None else now
        with self.transaction() as db:
            rows = dict(db.execute(
                "INSERT INTO agent_tool_counts (tenant_id, agent_id, tool_name, n, updated_at) VALUES (?,?,?,1,?), "
                "(?,?,'',1,?) ON CONFLICT (tenant_id, agent_id, tool_name) DO UPDATE SET n=n+1, "
                "updated_at=excluded.updated_at RETURNING tool_name, n",
                (tenant_id, agent_id, tool_name, stamp, tenant_id, agent_id, stamp),
            ).fetchall())
        return int(rows[tool_name]) - 1, int(rows[""]) - 1

    def dedupe_get(self, tenant_id: str, request_id: str, max_age: float,
                   now: float | None = None) -> dict[str, Any] | None:
        """The decision stored for a request id within `max_age` seconds, else None."""
        stamp = time.time() if now is None else now
        rows = self.query(
            "SELECT decision FROM request_dedupe WHERE tenant_id=? AND request_id=? AND created_at > ?",
            (tenant_id, request_id, stamp - max_age),
        )
        return _json.loads(rows[0]["decision"]) if rows else None  # type: ignore[no-any-return]

    def dedupe_put(self, tenant_id: str, request_id: str, decision: Mapping[str, Any], max_age: float,
                   now: float | None = None) -> dict[str, Any]:
        """Store a request id's decision unless a fresh one is there; returns the one that stays."""
        stamp = time.time() if now is None else now
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO request_dedupe (tenant_id, request_id, created_at, decision) VALUES (?,?,?,?) "
                "ON CONFLICT (tenant_id, request_id) DO UPDATE SET created_at=excluded.created_at, "
                "decision=excluded.decision WHERE request_dedupe.created_at <= ? RETURNING decision",
                (tenant_id, request_id, stamp, _json.dumps(decision), stamp - max_age),
            ).fetchone()
            if row is None:
                row = db.execute("SELECT decision FROM request_dedupe WHERE tenant_id=? AND request_id=?",
                                 (tenant_id, request_id)).fetchone()
        return _json.loads(row[0])  # type: ignore[no-any-return]

    # -- retention and export (`thoth-nb db prune|export`) ----------------------------------------

    def prune(self, before: dt.datetime | str, *, tenant_id: str | None = None) -> dict[str, int]:
        """Delete what is older than `before`: events (by occurred_at), violations, resolved holds,
        session grants, and idle session state. Pending holds are kept. Returns rows deleted per table."""
        cutoff = normalize_ts(before)
        epoch = parse_ts(cutoff).timestamp()
        scope = " AND tenant_id = ?" if tenant_id is not None else ""
        extra: tuple[Any, ...] = (tenant_id,) if tenant_id is not None else ()
        plan = [
            ("events", f"DELETE FROM events WHERE occurred_at < ?{scope}", (cutoff, *extra)),
            ("violations", f"DELETE FROM violations WHERE created_at < ?{scope}", (cutoff, *extra)),
            ("holds", f"DELETE FROM holds WHERE status <> 'pending' AND created_at < ?{scope}", (cutoff, *extra)),
            ("grants", f"DELETE FROM grants WHERE created_at < ?{scope}", (cutoff, *extra)),
            ("session_state", f"DELETE FROM session_state WHERE updated_at < ?{scope}", (epoch, *extra)),
            ("rate_windows", f"DELETE FROM rate_windows WHERE updated_at < ?{scope}", (epoch, *extra)),
            ("request_dedupe", f"DELETE FROM request_dedupe WHERE created_at < ?{scope}", (epoch, *extra)),
            ("agent_tool_counts", f"DELETE FROM agent_tool_counts WHERE updated_at < ?{scope}", (epoch, *extra)),
        ]
        counts: dict[str, int] = {}
        for table, sql, params in plan:
            with self.transaction() as db:
                counts[table] = db.execute(sql, params).rowcount
        return counts

    EXPORT_COLUMNS = ("seq", "event_id", "tenant_id", "session_id", "agent_id", "user_id", "tool_name",
                      "event_type", "occurred_at", "ingested_at", "decision", "violation_id", "chain_index",
                      "hash", "previous_hash", "body")

    def iter_event_rows(self, tenant_id: str | None = None, *, since: Any = None, until: Any = None,
                        batch: int = 10_000) -> Iterator[list[dict[str, Any]]]:
        """Every stored event row in `seq` order, in batches (for bulk export); `occurred_at` and
        `ingested_at` as UTC datetimes, `body` as the stored JSON text. `tenant_id=None`: all tenants."""
        where = ["seq > ?"]
        params: list[Any] = [0]
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if since is not None:
            where.append("occurred_at >= ?")
            params.append(normalize_ts(since))
        if until is not None:
            where.append("occurred_at < ?")
            params.append(normalize_ts(until))
        sql = (f"SELECT {', '.join(self.EXPORT_COLUMNS)} FROM events WHERE {' AND '.join(where)} "
               f"ORDER BY seq LIMIT {int(batch)}")
        while True:
            rows = self.query(sql, params)
            if not rows:
                return
            for row in rows:
                row["occurred_at"] = parse_ts(row["occurred_at"])
                row["ingested_at"] = parse_ts(row["ingested_at"])
            yield rows
            params[0] = rows[-1]["seq"]


def is_postgres_url(value: str | Path | None) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


def database_url(value: str | Path | None = None) -> str | Path:
    """What a store should open: `value` if given, else `THOTH_DATABASE_URL`, else `THOTH_DB`, else
    the embedded `$THOTH_HOME/thoth.db`."""
    import os

    if value:
        return value
    env = os.environ.get("THOTH_DATABASE_URL")
    if env:
        return env
    from thoth_nb._runtime import store_path

    return store_path()


def open_store(url_or_path: str | Path | None = None) -> Any:
    """Open a store from `sqlite:///path`, a plain path or a `postgresql://` URL (psycopg 3, the
    `postgres` extra); None: `THOTH_DATABASE_URL`, else the embedded SQLite file. Returns a
    `SQLiteStore` or a `store_pg.PostgresStore` (same public methods)."""
    target = database_url(url_or_path)
    if is_postgres_url(target):
        from thoth_nb.engine.store_pg import PostgresStore

        return PostgresStore(str(target))
    return SQLiteStore(sqlite_path(target))


def sqlite_path(target: str | Path) -> Path:
    """The file of a `sqlite:///path` URL or a plain path (`~` expanded)."""
    text = str(target)
    return Path(text[len("sqlite:///") :] if text.startswith("sqlite:///") else text).expanduser()


def monotonic() -> float:
    return time.monotonic()
