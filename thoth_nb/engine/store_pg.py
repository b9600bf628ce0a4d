"""The enforcer's store on PostgreSQL (psycopg 3), for several `thoth-nb serve` replicas (issue 10).

`PostgresStore` has the public methods of `SQLiteStore` with the same meaning and the same row shapes
(timestamps are the same fixed-width RFC 3339 strings), so the engine and the server do not care which
one they hold. Differences that matter for replicas:

* `shared_state` is true: the engine keeps rate windows, session history, violation counts and
  request-id dedupe in this store (`session_step`, `bump_violations`, `dedupe_*`; each one atomic
  upsert), so every replica decides from the same state.
* Event ingest is idempotent under concurrent retries: each batch holds its sessions' advisory locks
  (which serialise each session's SHA-256 chain across replicas) and the unique index on event_id
  rejects a stored id; such a batch is redone with its ids looked up first, counting them as
  duplicates.
* The events table keeps `occurred_at`/`ingested_at` as `timestamptz` (a BRIN index serves retention)
  and the event body as the exact JSON text that was hashed.

Migrations have the same names as SQLite's (`store.MIGRATION_NAMES`), run under an advisory lock so
replicas starting together do not race. Connections come from a small built-in pool (autocommit;
explicit transactions where several statements must be atomic).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from thoth_nb import _json
from thoth_nb._exceptions import ThothConfigError
from thoth_nb.engine.store import (
    MIGRATION_NAMES,
    HoldConflict,
    HoldNotFound,
    IngestResult,
    SQLiteStore,
    Store,
    _event_row,
    format_ts,
    normalize_ts,
    parse_ts,
    refuse_newer_schema,
)

__all__ = ["PostgresStore"]

logger = logging.getLogger("thoth_nb.store")

_MIGRATION_LOCK = 0x7468_6F74_6800_0001  # "thoth" + 1: one migrator at a time across replicas

_M001 = """
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    tool_name TEXT NOT NULL DEFAULT '',
    event_type TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
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
    risk_score DOUBLE PRECISION NOT NULL,
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
    risk_score DOUBLE PRECISION NOT NULL,
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
)
"""

_M002 = """
CREATE TABLE session_state (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    history TEXT[] NOT NULL DEFAULT '{}',
    violations INTEGER NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE TABLE rate_windows (
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    limit_id TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    hits DOUBLE PRECISION[] NOT NULL DEFAULT '{}',
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, session_id, limit_id, tool_name)
);
CREATE TABLE request_dedupe (
    tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    decision TEXT NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
)
"""

_M003 = """
CREATE INDEX events_time ON events USING brin (occurred_at);
CREATE INDEX violations_tenant_session ON violations (tenant_id, session_id);
CREATE INDEX holds_tenant_session ON holds (tenant_id, session_id);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending'
"""

_M004 = """
CREATE TABLE agent_tool_counts (
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    n BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, tool_name)
)
"""

#: Same names, same order as SQLite's migrations (store.MIGRATION_NAMES); PostgreSQL dialect.
PG_MIGRATIONS: dict[str, str] = {"m001_initial": _M001, "m002_shared_state": _M002, "m003_volume_indexes": _M003,
                                 "m004_agent_tool_counts": _M004}
assert tuple(PG_MIGRATIONS) == MIGRATION_NAMES

_EVENT_COLUMNS = ("event_id", "tenant_id", "session_id", "agent_id", "user_id", "tool_name", "event_type",
                  "occurred_at", "decision", "violation_id", "ingested_at", "chain_index", "hash", "previous_hash",
                  "body")


_SEP = "\x1f"
#: Rows a seq cursor may pass: committed before every transaction still running began (so no lower seq
#: can commit after them), or ingested over 5 s ago (a stuck transaction elsewhere delays the tail at most
#: that long). seq comes from an identity, allocated at insert, not at commit: without this, a page read
#: while two replicas ingest could end past a row that commits a moment later, and the next page skip it.
_SETTLED = ("(ingested_at < now() - interval '5 seconds' OR age(xmin) > "
            "age(((pg_snapshot_xmin(pg_current_snapshot())::text::bigint %% 4294967296)::text::xid)))")
#: Binary COPY: no text escaping on either side; the types match the events table's columns.
_COPY_EVENTS = f"COPY events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
#: The body is sent as UTF-8 bytes (dumped as bytea): in a binary COPY a text field is exactly those
#: bytes, and this skips decoding the JSON to str and encoding it back.
_COPY_TYPES = ("text",) * 7 + ("timestamptz", "text", "text", "timestamptz", "int4", "text", "text", "bytea")
#: Each of a batch's sessions' chain head (chain_index and hash of its last event).
_CHAIN_HEADS = (
    "SELECT s.tenant_id, s.session_id, e.chain_index, e.hash "
    "FROM unnest(%s::text[], %s::text[]) AS s(tenant_id, session_id) "
    "CROSS JOIN LATERAL (SELECT chain_index, hash FROM events WHERE events.tenant_id = s.tenant_id "
    "AND events.session_id = s.session_id ORDER BY seq DESC LIMIT 1) AS e"
)
#: Which of a batch's ids are stored already; `{ids}` is the id list as an array expression.
_STORED_IDS = "SELECT event_id FROM events WHERE event_id = ANY({ids})"
#: A batch that meets a unique violation (an id stored already, or sent for another session at the same
#: moment) is redone from the start, looking its ids up first, this many times at most.
_INGEST_ATTEMPTS = 5
#: After a batch that held stored duplicates (a client retrying), this many next batches look their ids
#: up before the COPY instead of letting the unique index find them (which costs the batch twice).
_LOOKUP_AFTER_DUPLICATES = 8


#: Claim a request id (pending: decision ''), unless a fresh row is there; take over a pending claim
#: when asked. Returns whether this statement claimed it and, if not, the stored decision ('' while the
#: holder is still deciding; NULL if the holder's row committed after this statement's snapshot).
_DEDUPE_CLAIM = (
    "WITH claim AS (INSERT INTO request_dedupe AS r (tenant_id, request_id, created_at, decision) "
    "VALUES (%s, %s, %s, '') ON CONFLICT (tenant_id, request_id) DO UPDATE SET created_at = excluded.created_at, "
    "decision = '' WHERE r.created_at <= %s OR (r.decision = '' AND %s) RETURNING 1) "
    "SELECT EXISTS (SELECT 1 FROM claim) AS claimed, (SELECT decision FROM request_dedupe "
    "WHERE tenant_id = %s AND request_id = %s AND created_at > %s) AS decision"
)

_WINDOW_UPSERT = (
    "INSERT INTO rate_windows AS w (tenant_id, session_id, limit_id, tool_name, hits, updated_at) "
    "VALUES (%s, %s, %s, %s, ARRAY[%s]::float8[], %s) "
    "ON CONFLICT (tenant_id, session_id, limit_id, tool_name) DO UPDATE SET "
    "hits = ARRAY(SELECT h FROM (SELECT h FROM unnest(w.hits || excluded.hits) AS h "
    "WHERE h > %s ORDER BY h DESC LIMIT %s) AS recent ORDER BY h), "
    "updated_at = excluded.updated_at RETURNING hits"
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ThothConfigError(
            "a postgresql:// store needs psycopg 3: pip install 'thoth-nb[postgres]'"
        ) from None
    return psycopg


def _lock_key(tenant_id: str, session_id: str) -> int:
    """A signed 64-bit advisory lock key for one session's event chain."""
    digest = hashlib.blake2b(f"{tenant_id}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _ts(value: Any) -> Any:
    """timestamptz columns back to the fixed-width strings SQLite returns."""
    return format_ts(value) if isinstance(value, dt.datetime) else value


def _moment(stamp: str) -> dt.datetime:
    """A canonical timestamp (`normalize_ts`'s fixed-width UTC form) as an aware datetime, for binary COPY."""
    return dt.datetime.fromisoformat(stamp)


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


class _Pool:
    """A few autocommit connections shared by threads; a broken connection is dropped, not reused."""

    def __init__(self, url: str, size: int, connect_timeout: float, settings: str = "") -> None:
        self.url = url
        self.size = size
        self.connect_timeout = connect_timeout
        self.settings = settings  # extra `-c name=value` server settings for these connections
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> Any:
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        extra: dict[str, Any] = {}
        if self.settings:
            from psycopg.conninfo import conninfo_to_dict

            extra["options"] = f"{conninfo_to_dict(self.url).get('options') or ''} {self.settings}".strip()
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                               connect_timeout=max(1, int(self.connect_timeout)), **extra)
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        if self._closed:
            raise ThothConfigError("this PostgreSQL store is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                create = self._count < self.size
                if create:
                    self._count += 1
            if create:
                try:
                    conn = self._connect()
                except BaseException:
                    with self._lock:
                        self._count -= 1
                    raise
            else:
                conn = self._idle.get(timeout=60)
        try:
            yield conn
        finally:
            from psycopg.pq import TransactionStatus

            if self._closed or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(Exception):
                    conn.close()
                with self._lock:
                    self._count -= 1
            else:
                self._idle.put(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                conn.close()


#: NOTIFY channel of hold resolutions; the payload is the approval id (waiters re-read their own hold).
HOLD_CHANNEL = "thoth_holds"


class _HoldListener:
    """One LISTEN connection per store: every NOTIFY on `HOLD_CHANNEL` (a hold resolved or expired by any
    replica, committed) calls the subscribers from this thread. A lost connection is re-opened with
    backoff and the subscribers are called once after it, since notifications sent meanwhile are lost;
    waiters also keep a slow re-read of the store as a fallback."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            token = self._next
            self._next += 1
            self._callbacks[token] = callback
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="thoth-hold-listener", daemon=True)
                self._thread.start()
        self._ready.wait(self.connect_timeout)  # LISTEN is active before the caller's first re-read

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return unsubscribe

    def _fire(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one broken subscriber must not silence the others
                logger.exception("thoth: a hold wake-up subscriber failed")

    def _run(self) -> None:
        psycopg = _psycopg()
        backoff = 0.2
        reconnected = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True,
                                     connect_timeout=max(1, int(self.connect_timeout))) as conn:
                    conn.execute(f"LISTEN {HOLD_CHANNEL}")
                    self._ready.set()
                    backoff = 0.2
                    if reconnected:
                        self._fire()
                    while not self._stop.is_set():  # the timeout only bounds how long close() waits
                        for _ in conn.notifies(timeout=0.5):
                            self._fire()
            except Exception as exc:
                if self._stop.is_set():
                    return
                logger.warning("thoth: hold listener lost its PostgreSQL connection (%s); retrying", exc)
                reconnected = True
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)


class PostgresStore(Store):
    """The store on PostgreSQL: the same public methods and row shapes as `SQLiteStore`."""

    shared_state = True
    #: how long a request id's claim may stay unfilled before a waiting duplicate decides itself
    _dedupe_claim_seconds = 5.0
    API_KEY_ROLES = SQLiteStore.API_KEY_ROLES
    EXPORT_COLUMNS = SQLiteStore.EXPORT_COLUMNS
    hash_api_key = staticmethod(SQLiteStore.hash_api_key)
    _hold_out = staticmethod(SQLiteStore._hold_out)

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 10.0, migrate: bool = True,
                 hold_notifications: bool = True) -> None:
        if url.startswith("postgresql+psycopg://"):
            url = "postgresql://" + url[len("postgresql+psycopg://"):]
        self.url = url
        self._pool = _Pool(url, pool_size, connect_timeout)
        # Decision state (rate windows, session history, counts, dedupe) is rewritten on every call and
        # is worth less than a WAL flush each time: these connections commit asynchronously (a crash of
        # PostgreSQL itself may forget the last few hundred ms of counts; events, holds, violations and
        # keys always go through the synchronous pool).
        self._state_pool = _Pool(url, pool_size, connect_timeout, "-c synchronous_commit=off")
        self._listener = _HoldListener(url, connect_timeout) if hold_notifications else None
        self._lookup_batches = 0  # next batches that look their ids up first (see ingest_events)
        try:
            with self._pool.connection() as conn:
                # event bodies (~2 KB of JSON) are TOAST-compressed on insert: lz4 costs PostgreSQL a
                # fraction of the default pglz's CPU, and ingest is bound by that CPU (benchmarks/pg_scale.py)
                lz4 = conn.execute("SELECT 'lz4' = ANY(enumvals) AS ok FROM pg_settings "
                                   "WHERE name = 'default_toast_compression'").fetchone()
                if lz4 and lz4["ok"]:
                    self._pool.settings = "-c default_toast_compression=lz4"
                    conn.execute("SET default_toast_compression = lz4")
        except ThothConfigError:
            raise
        except Exception as exc:
            raise ThothConfigError(f"cannot connect to the thoth_nb store at {_redact_url(url)}: {exc}") from None
        if migrate:
            try:
                self.migrate()
            except ThothConfigError:
                self.close()
                raise

    def __repr__(self) -> str:
        return f"PostgresStore({_redact_url(self.url)!r})"

    # -- plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection inside one transaction (committed on success, rolled back on error)."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled autocommit connection (each statement its own transaction)."""
        with self._pool.connection() as conn:
            yield conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts. Accepts SQLite-style `?` placeholders (translated) or psycopg's `%s`."""
        if "?" in sql and "%s" not in sql:
            sql = sql.replace("%", "%%").replace("?", "%s")
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, tuple(params))
            return list(cursor.fetchall()) if cursor.description else []

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {row["name"] for row in db.execute("SELECT name FROM schema_migrations").fetchall()}
            refuse_newer_schema(done, f"the thoth_nb store at {_redact_url(self.url)}")
            for name in MIGRATION_NAMES:
                if name not in done:
                    for statement in PG_MIGRATIONS[name].split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (name, format_ts()))
                    applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        return [r["name"] for r in self.query("SELECT name FROM schema_migrations ORDER BY name")]

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._pool.close()
        self._state_pool.close()

    def subscribe_holds(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call `callback` (from a listener thread) whenever any replica resolves or expires a hold, so
        long-polls resume at once instead of at their next re-read. Returns the unsubscribe function, or
        None if this store was opened with `hold_notifications=False` (then keep re-reading fast)."""
        if self._listener is None:
            return None
        return self._listener.subscribe(callback)

    # -- events ----------------------------------------------------------------------------------

    def ingest_events(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        """Store events idempotently (by event_id) and chain each session's events with SHA-256.

        Concurrent batches for the same session (two replicas, a retry racing the original) take the
        session's advisory lock in a fixed order, so chains never fork and a duplicate is seen. A batch
        costs four round trips (BEGIN + locks + chain heads pipelined, the binary COPY's two, COMMIT) and is
        acknowledged only after its synchronous commit. The unique index on event_id is the duplicate
        check: a batch holding an id stored already (or committed meanwhile for another session) fails
        it, is rolled back and redone with its ids looked up first, which then counts them as duplicates.
        Since a client that retries sends many such batches, the next few batches look up first too."""
        rejected: list[dict[str, Any]] = []
        parsed: list[tuple[tuple[Any, ...], Mapping[str, Any]]] = []
        for index, event in enumerate(events):
            try:
                if type(event) is not dict and not isinstance(event, Mapping):  # skip the ABC check for dicts
                    raise ValueError("event must be an object")
                if not (event.get("event_id") and event.get("tenant_id") and event.get("session_id")):
                    missing = [k for k in ("event_id", "tenant_id", "session_id") if not event.get(k)]
                    raise ValueError(f"missing required field(s): {', '.join(missing)}")
                parsed.append((_event_row(event), event))
            except (ValueError, TypeError, KeyError) as exc:
                rejected.append({"index": index, "error": str(exc)})
        if not parsed:
            return IngestResult(0, 0, rejected)
        errors = _psycopg().errors
        retry = (errors.UniqueViolation, errors.DeadlockDetected)
        lookup = self._lookup_batches > 0
        for attempt in range(_INGEST_ATTEMPTS):
            try:
                accepted, duplicates = self._ingest_locked(parsed, lookup=lookup)
                break
            except retry:
                # an id of this batch is stored already, or went in for another session (other locks)
                # and has committed now; or two such batches each waited for an id the other holds and
                # this one was picked to give way: redo the batch, looking its ids up first
                if attempt == _INGEST_ATTEMPTS - 1:
                    raise
                lookup = True
        if duplicates:
            self._lookup_batches = _LOOKUP_AFTER_DUPLICATES
        elif lookup and self._lookup_batches > 0:
            self._lookup_batches -= 1
        return IngestResult(accepted, duplicates, rejected)

    def _ingest_locked(self, parsed: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]], *,
                       lookup: bool) -> tuple[int, int]:
        """One transaction: lock the batch's sessions, read their chain heads (and, with `lookup`, which
        ids are stored), chain the new events in one pass, COPY them in. Returns (accepted, duplicates);
        without `lookup` a stored id raises UniqueViolation (the transaction is rolled back)."""
        ingested_at = format_ts()
        ingested_moment = _moment(ingested_at)
        sessions = sorted({(p[0][1], p[0][2]) for p in parsed})
        keys = sorted({_lock_key(t, s) for t, s in sessions})
        stored: Any = None
        with self._pool.connection() as db:
            try:
                with db.pipeline():  # one round trip: the locks are taken before the queries' snapshot
                    db.execute("BEGIN")
                    db.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (keys,))
                    chain = db.execute(_CHAIN_HEADS, ([t for t, _ in sessions], [s for _, s in sessions]))
                    if lookup:
                        ids = [p[0][0] for p in parsed]
                        if any(_SEP in i for i in ids):
                            stored = db.execute(_STORED_IDS.format(ids="%s::text[]"), (ids,))
                        else:  # one joined string: far cheaper to send than a 500-element array parameter
                            stored = db.execute(_STORED_IDS.format(ids="string_to_array(%s, chr(31))"),
                                                (_SEP.join(ids),))
                heads: dict[tuple[str, str], tuple[int, str]] = {
                    (r["tenant_id"], r["session_id"]): (int(r["chain_index"]), str(r["hash"])) for r in chain}
                existing: set[str] = {r["event_id"] for r in stored} if stored is not None else set()
                fresh: list[tuple[tuple[Any, ...], Mapping[str, Any]]] = []
                for row, event in parsed:
                    if row[0] not in existing:
                        existing.add(row[0])
                        fresh.append((row, event))
                if fresh:
                    self._copy_chained(db, fresh, heads, ingested_at, ingested_moment)
                db.execute("COMMIT")
            except BaseException:
                if not db.closed:
                    with contextlib.suppress(Exception):
                        db.execute("ROLLBACK")
                raise
        return len(fresh), len(parsed) - len(fresh)

    @staticmethod
    def _copy_chained(db: Any, fresh: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]],
                      heads: dict[tuple[str, str], tuple[int, str]], ingested_at: str,
                      ingested_moment: dt.datetime) -> None:
        """COPY the events in, each chained to its session's head. Rows stream out while the chain is
        computed, so PostgreSQL inserts (on another CPU) while this process still hashes: the batch costs
        max(client, server), not the sum. The body goes out as the very bytes that were hashed."""
        sha256 = hashlib.sha256
        dumps_bytes = _json.dumps_bytes
        with db.cursor() as cursor, cursor.copy(_COPY_EVENTS) as copy:
            copy.set_types(_COPY_TYPES)
            write_row = copy.write_row
            for row, event in fresh:
                key = (row[1], row[2])
                previous_index, previous_hash = heads.get(key, (-1, ""))
                body = dict(event)
                body["occurred_at"] = row[7]
                body["ingested_at"] = ingested_at
                body["chain_index"] = index = previous_index + 1
                body["previous_hash"] = previous_hash
                body.pop("hash", None)
                body.pop("signature", None)
                encoded = dumps_bytes(body)  # == _json.dumps(body).encode(): the bytes audit verify hashes
                digest = sha256(previous_hash.encode() + encoded).hexdigest()
                heads[key] = (index, digest)
                violation = row[9]
                write_row((*row[:7], _moment(row[7]), row[8],
                           violation if violation is None or type(violation) is str else str(violation),
                           ingested_moment, index, digest, previous_hash, encoded))

    @staticmethod
    def _filters(tenant_id: str, **equals: str | None) -> tuple[list[str], list[Any]]:
        where = ["tenant_id = %s"]
        params: list[Any] = [tenant_id]
        for column, value in equals.items():
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        return where, params

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
            tenant_id, agent_id=agent_id, session_id=session_id, tool_name=tool_name, event_type=event_type,
        )
        if since:
            where.append("occurred_at >= %s")
            params.append(parse_ts(normalize_ts(since)))
        if until:
            where.append("occurred_at < %s")
            params.append(parse_ts(normalize_ts(until)))
        if after_seq:
            where.append("seq > %s")
            params.append(after_seq)
        if limit is not None or after_seq:
            where.append(_SETTLED)  # pages by seq: never hand out a seq while a lower one may still commit
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
        return int(self.query("SELECT COUNT(*) AS n FROM events WHERE tenant_id=%s", (tenant_id,))[0]["n"])

    _SESSION_COLUMNS = (
        "SELECT session_id, MIN(agent_id) AS agent_id, MIN(user_id) AS user_id, MIN(occurred_at) AS first_seen, "
        "MAX(occurred_at) AS last_seen, COUNT(*) FILTER (WHERE event_type = 'TOOL_CALL_PRE') AS tool_calls, "
        "COUNT(*) FILTER (WHERE event_type = 'TOOL_CALL_BLOCK') AS blocked "
    )

    def sessions(self, tenant_id: str, *, agent_id: str | None = None, user_id: str | None = None,
                 since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, params = self._filters(tenant_id, agent_id=agent_id, user_id=user_id)
        if since:
            where.append("occurred_at >= %s")
            params.append(parse_ts(normalize_ts(since)))
        sql = (self._SESSION_COLUMNS + f"FROM events WHERE {' AND '.join(where)} GROUP BY session_id "
               f"ORDER BY last_seen DESC LIMIT {int(limit)}")
        rows = self.query(sql, params)
        if not rows:
            return rows
        ids = [r["session_id"] for r in rows]
        # violations and holds from `since` on too: every count of a row covers the same window
        window, bound = (" AND created_at >= %s", [normalize_ts(since)]) if since else ("", [])  # TEXT here
        counts = {r["session_id"]: r["n"] for r in self.query(
            f"SELECT session_id, COUNT(*) AS n FROM violations WHERE tenant_id=%s AND session_id = ANY(%s){window} "
            "GROUP BY session_id", (tenant_id, ids, *bound))}
        holds = {r["session_id"]: r["n"] for r in self.query(
            f"SELECT session_id, COUNT(*) AS n FROM holds WHERE tenant_id=%s AND session_id = ANY(%s){window} "
            "GROUP BY session_id", (tenant_id, ids, *bound))}
        for row in rows:
            row["first_seen"] = _ts(row["first_seen"])
            row["last_seen"] = _ts(row["last_seen"])
            row["violations"] = int(counts.get(row["session_id"], 0))
            row["stepped_up"] = int(holds.get(row["session_id"], 0))
            for key in ("tool_calls", "blocked"):
                row[key] = int(row[key] or 0)
        return rows

    def session_summary(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        """One session's row as `sessions()` gives it, or None if the tenant has no event for it."""
        rows = self.query(self._SESSION_COLUMNS + "FROM events WHERE tenant_id=%s AND session_id=%s "
                          "GROUP BY session_id", (tenant_id, session_id))
        if not rows:
            return None
        row = rows[0]
        row["first_seen"] = _ts(row["first_seen"])
        row["last_seen"] = _ts(row["last_seen"])
        row["tool_calls"] = int(row["tool_calls"] or 0)
        row["blocked"] = int(row["blocked"] or 0)
        row["violations"] = int(self.query(
            "SELECT COUNT(*) AS n FROM violations WHERE tenant_id=%s AND session_id=%s", (tenant_id, session_id)
        )[0]["n"])
        row["stepped_up"] = int(self.query(
            "SELECT COUNT(*) AS n FROM holds WHERE tenant_id=%s AND session_id=%s", (tenant_id, session_id)
        )[0]["n"])
        return row

    # -- violations ------------------------------------------------------------------------------

    def record_violation(self, record: Mapping[str, Any]) -> None:
        with self._connection() as db:
            db.execute(
                "INSERT INTO violations (violation_id, tenant_id, created_at, session_id, agent_id, user_id, "
                "tool_name, decision, observed, reason, decision_reason_code, risk_score, matched_rule_ids, tool_args, "
                "request) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
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
            where.append("created_at >= %s")
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
        with self._connection() as db:
            db.execute(
                "INSERT INTO holds (approval_id, hold_token, tenant_id, agent_id, user_id, session_id, tool_name, "
                "args_hash, tool_args, reason, decision_reason_code, risk_score, matched_rule_ids, violation_id, "
                "allow_modify, status, created_at, expires_at) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'pending',%s,%s)",
                (
                    record["approval_id"], record["hold_token"], record["tenant_id"], record["agent_id"],
                    record["user_id"], record["session_id"], record["tool_name"], record["args_hash"],
                    _json.dumps(record.get("tool_args")) if record.get("tool_args") is not None else None,
                    record["reason"], record["decision_reason_code"], float(record["risk_score"]),
                    _json.dumps(record.get("matched_rule_ids") or []), record.get("violation_id"),
                    int(bool(record.get("allow_modify"))), record["created_at"], record["expires_at"],
                ),
            )

    def get_hold(self, key: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        """A hold by approval id or hold token, optionally scoped to a tenant."""
        sql = "SELECT * FROM holds WHERE (approval_id = %s OR hold_token = %s)"
        params: list[Any] = [key, key]
        if tenant_id is not None:
            sql += " AND tenant_id = %s"
            params.append(tenant_id)
        rows = self.query(sql, params)
        return self._hold_out(rows[0]) if rows else None

    def holds(self, tenant_id: str | None, *, status: str = "pending", limit: int = 1000) -> list[dict[str, Any]]:
        self.expire_holds()
        where: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = %s")
            params.append(tenant_id)
        if status != "all":
            where.append("status = %s")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.query(f"SELECT * FROM holds {clause} ORDER BY created_at LIMIT {int(limit)}", params)
        return [self._hold_out(r) for r in rows]

    def expire_holds(self, now: str | None = None) -> int:
        stamp = now or format_ts()
        with self._connection() as db:
            expired = db.execute(
                "WITH done AS (UPDATE holds SET status='expired', resolved_at=%s WHERE status='pending' "
                "AND expires_at <= %s RETURNING approval_id) "
                f"SELECT count(pg_notify('{HOLD_CHANNEL}', approval_id)) AS n FROM done",
                (stamp, stamp),
            ).fetchone()
            return int(expired["n"]) if expired else 0

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
        """Move a pending hold to approved/denied exactly once (row lock); HoldConflict if it was not pending."""
        if status not in ("approved", "denied"):
            raise ValueError(f"status must be approved or denied; got {status!r}")
        self.expire_holds()
        now = format_ts()
        with self.transaction() as db:
            sql = "SELECT approval_id, status FROM holds WHERE (approval_id = %s OR hold_token = %s)"
            params: list[Any] = [key, key]
            if tenant_id is not None:
                sql += " AND tenant_id = %s"
                params.append(tenant_id)
            found = db.execute(sql + " FOR UPDATE", params).fetchone()
            if found is None:
                raise HoldNotFound(key)
            if found["status"] == "pending":
                db.execute(
                    "UPDATE holds SET status=%s, reviewer=%s, note=%s, resolved_at=%s, grant_scope=%s, "
                    "modified_args=%s WHERE approval_id=%s AND status='pending'",
                    (status, reviewer, note, now, grant_scope,
                     _json.dumps(modified_args) if modified_args is not None else None, found["approval_id"]),
                )
                db.execute("SELECT pg_notify(%s, %s)", (HOLD_CHANNEL, found["approval_id"]))  # sent on commit
                if status == "approved" and grant_scope == "session" and modified_args is None:
                    db.execute(
                        "INSERT INTO grants SELECT tenant_id, session_id, tool_name, args_hash, approval_id, %s "
                        "FROM holds WHERE approval_id=%s ON CONFLICT DO NOTHING",
                        (now, found["approval_id"]),
                    )
        record = self.get_hold(found["approval_id"])
        assert record is not None
        if found["status"] != "pending":
            raise HoldConflict(record)
        return record

    def has_grant(self, tenant_id: str, session_id: str, tool_name: str, args_hash: str) -> str | None:
        rows = self.query(
            "SELECT approval_id FROM grants WHERE tenant_id=%s AND session_id=%s AND tool_name=%s AND args_hash=%s",
            (tenant_id, session_id, tool_name, args_hash),
        )
        return str(rows[0]["approval_id"]) if rows else None

    # -- policies, keys, inventory ---------------------------------------------------------------

    def save_policy(self, tenant_id: str, text: str, etag: str, created_by: str | None = None, *,
                    expected_version: int | None = None) -> int | None:
        """As `SQLiteStore.save_policy`: None when the latest version is no longer `expected_version`."""
        with self.transaction() as db:
            # one writer per tenant at a time, so two replicas never take the same version number
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(tenant_id, "\x00policies"),))
            row = db.execute("SELECT MAX(version) AS v FROM policies WHERE tenant_id=%s", (tenant_id,)).fetchone()
            if expected_version is not None and int(row["v"] or 0) != expected_version:
                return None
            version = int(row["v"] or 0) + 1
            db.execute("INSERT INTO policies VALUES (%s,%s,%s,%s,%s,%s)",
                       (tenant_id, version, etag, text, format_ts(), created_by))
        return version

    def policy_versions(self, tenant_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM policies WHERE tenant_id=%s ORDER BY version DESC", (tenant_id,))

    def latest_policy(self, tenant_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM policies WHERE tenant_id=%s ORDER BY version DESC LIMIT 1", (tenant_id,))
        return rows[0] if rows else None

    def upsert_inventory(self, tenant_id: str, agent_id: str, tools: Sequence[Mapping[str, Any]]) -> int:
        now = format_ts()
        rows = {}
        for t in tools:
            if t.get("name"):  # the last entry for a name wins, as SQLite's row-by-row upsert does
                rows[str(t.get("name"))] = (
                    tenant_id, agent_id, str(t.get("name")), str(t.get("description") or "")[:4096],
                    _json.dumps(t.get("input_schema")) if t.get("input_schema") is not None else None, now)
        if rows:
            with self.transaction() as db, db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO tool_inventory VALUES (%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (tenant_id, agent_id, tool_name) DO UPDATE SET description=excluded.description, "
                    "input_schema=excluded.input_schema, updated_at=excluded.updated_at",
                    list(rows.values()),
                )
        return len(tools)

    def inventory(self, tenant_id: str, agent_id: str | None = None) -> list[dict[str, Any]]:
        where, params = self._filters(tenant_id, agent_id=agent_id)
        return self.query(f"SELECT * FROM tool_inventory WHERE {' AND '.join(where)} ORDER BY tool_name", params)

    # -- API keys --------------------------------------------------------------------------------

    def create_api_key(self, tenant_id: str, role: str, name: str = "") -> tuple[dict[str, Any], str]:
        """A new key for one tenant and role. Returns (record, secret): only the hash is stored."""
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
        with self._connection() as db:
            db.execute(
                "INSERT INTO api_keys (key_id, tenant_id, role, name, key_hash, created_at) "
                "VALUES (%s,%s,%s,%s,%s,%s)",
                (record["key_id"], tenant_id, role, name, self.hash_api_key(secret), record["created_at"]),
            )
        return record, secret

    def api_key_for(self, secret: str) -> dict[str, Any] | None:
        """The active key record for a presented secret, or None (unknown or revoked)."""
        import hmac

        digest = self.hash_api_key(secret)
        rows = self.query(
            "SELECT key_id, tenant_id, role, name, key_hash, created_at, revoked_at FROM api_keys WHERE key_hash=%s",
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
            where.append("tenant_id = %s")
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
        sql = "UPDATE api_keys SET revoked_at=%s WHERE key_id=%s AND revoked_at IS NULL"
        params: list[Any] = [format_ts(), key_id]
        if tenant_id is not None:
            sql += " AND tenant_id=%s"
            params.append(tenant_id)
        with self._connection() as db:
            return int(db.execute(sql, params).rowcount) > 0

    def count_api_keys(self, *, active_only: bool = True) -> int:
        sql = "SELECT COUNT(*) AS n FROM api_keys" + (" WHERE revoked_at IS NULL" if active_only else "")
        return int(self.query(sql)[0]["n"])

    # -- shared decision state -------------------------------------------------------------------

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
        """As `SQLiteStore.session_step`: each window is one atomic upsert (row lock), so calls through
        several replicas are all counted; the statements go out in one pipelined round trip."""
        stamp = time.time() if now is None else now
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if history:
            statements.append(("SELECT history FROM session_state WHERE tenant_id=%s AND session_id=%s",
                               (tenant_id, session_id)))
        for key, tool, per_seconds, cap in windows:
            statements.append((_WINDOW_UPSERT, (tenant_id, session_id, key, tool, stamp, stamp, stamp - per_seconds,
                                                cap)))
        with self._state_pool.connection() as db:
            if len(statements) == 1:  # the common case: one round trip, no pipeline bookkeeping
                results = [db.execute(*statements[0]).fetchone()]
            else:
                with db.pipeline():
                    cursors = [db.execute(sql, params) for sql, params in statements]
                results = [c.fetchone() for c in cursors]
        calls: list[tuple[str, Any]] = []
        if history:
            row = results.pop(0)
            stored = row["history"][-keep:] if row else []
            calls = [(str(t), a) for t, a in (_json.loads(item) for item in stored)]
        return calls, [list(r["hits"]) for r in results]

    def record_call(self, tenant_id: str, session_id: str, tool_name: str, tool_args: Any, *, keep: int = 128,
                    now: float | None = None) -> None:
        """Append one call to the session's history in one atomic upsert (the most recent `keep` stay)."""
        stamp = time.time() if now is None else now
        with self._state_pool.connection() as db:
            db.execute(
                "INSERT INTO session_state AS s (tenant_id, session_id, history, updated_at) "
                "VALUES (%s, %s, ARRAY[%s]::text[], %s) ON CONFLICT (tenant_id, session_id) DO UPDATE SET "
                "history = (s.history || excluded.history)[greatest(1, cardinality(s.history) + 2 - %s):], "
                "updated_at = excluded.updated_at",
                (tenant_id, session_id, _json.dumps([tool_name, tool_args]), stamp, keep),
            )

    def bump_violations(self, tenant_id: str, session_id: str, now: float | None = None) -> int:
        """Count one more violation in the session; returns the count before it (0: the first)."""
        stamp = time.time() if now is None else now
        with self._state_pool.connection() as db:
            row = db.execute(
                "INSERT INTO session_state AS s (tenant_id, session_id, violations, updated_at) VALUES (%s, %s, 1, %s) "
                "ON CONFLICT (tenant_id, session_id) DO UPDATE SET violations = s.violations + 1, "
                "updated_at = excluded.updated_at RETURNING violations",
                (tenant_id, session_id, stamp),
            ).fetchone()
        return int(row["violations"]) - 1

    def agent_tool_count(self, tenant_id: str, agent_id: str, tool_name: str,
                         now: float | None = None) -> tuple[int, int]:
        """As `SQLiteStore.agent_tool_count`: one atomic upsert of the tool's row and the agent's total
        (locked in that order, the total last, so concurrent calls cannot deadlock)."""
        stamp = time.time() if now is None else now
        with self._state_pool.connection() as db:
            rows = {r["tool_name"]: r["n"] for r in db.execute(
                "INSERT INTO agent_tool_counts AS c (tenant_id, agent_id, tool_name, n, updated_at) "
                "VALUES (%s, %s, %s, 1, %s), (%s, %s, '', 1, %s) ON CONFLICT (tenant_id, agent_id, tool_name) "
                "DO UPDATE SET n = c.n + 1, updated_at = excluded.updated_at RETURNING tool_name, n",
                (tenant_id, agent_id, tool_name, stamp, tenant_id, agent_id, stamp),
            ).fetchall()}
        return int(rows[tool_name]) - 1, int(rows[""]) - 1

    def dedupe_get(self, tenant_id: str, request_id: str, max_age: float,
                   now: float | None = None) -> dict[str, Any] | None:
        """The decision stored for a request id within `max_age` seconds; None when there is none, and
        then the caller holds the id's claim and must decide and `dedupe_put`. Meanwhile the same id
        arriving through any replica waits here for that decision instead of deciding again (one hold,
        one rate-limit count). A claim not filled within `_dedupe_claim_seconds` (its holder failed)
        passes to the next caller that waited that long."""
        stamp = time.time() if now is None else now
        deadline = time.monotonic() + self._dedupe_claim_seconds
        pause = 0.002
        take_over = False
        while True:
            with self._state_pool.connection() as db:
                row = db.execute(_DEDUPE_CLAIM, (tenant_id, request_id, stamp, stamp - max_age, take_over,
                                                 tenant_id, request_id, stamp - max_age)).fetchone()
            if row["claimed"]:
                return None
            if row["decision"]:
                return _json.loads(row["decision"])  # type: ignore[no-any-return]
            # another caller holds the claim (or committed it after this statement's snapshot): wait
            take_over = time.monotonic() >= deadline
            time.sleep(pause)
            pause = min(0.05, pause * 2)

    def dedupe_release(self, tenant_id: str, request_id: str) -> None:
        """Drop this caller's unfilled claim (its decision failed), so a waiting or later duplicate
        decides at once instead of after the claim time."""
        with self._state_pool.connection() as db:
            db.execute("DELETE FROM request_dedupe WHERE tenant_id=%s AND request_id=%s AND decision=''",
                       (tenant_id, request_id))

    def dedupe_put(self, tenant_id: str, request_id: str, decision: Mapping[str, Any], max_age: float,
                   now: float | None = None) -> dict[str, Any]:
        """Fill this caller's claim with its decision (or store it anew); if another caller's decision
        is there already (this claim was taken over), that one stays and is returned."""
        stamp = time.time() if now is None else now
        with self._state_pool.connection() as db:
            row = db.execute(
                "INSERT INTO request_dedupe AS r (tenant_id, request_id, created_at, decision) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (tenant_id, request_id) DO UPDATE SET created_at=excluded.created_at, "
                "decision=excluded.decision WHERE r.decision = '' OR r.created_at <= %s RETURNING decision",
                (tenant_id, request_id, stamp, _json.dumps(decision), stamp - max_age),
            ).fetchone()
            if row is None:
                row = db.execute("SELECT decision FROM request_dedupe WHERE tenant_id=%s AND request_id=%s",
                                 (tenant_id, request_id)).fetchone()
        return _json.loads(row["decision"])  # type: ignore[no-any-return]

    # -- retention and export --------------------------------------------------------------------

    def prune(self, before: dt.datetime | str, *, tenant_id: str | None = None,
              chunk: int = 50_000) -> dict[str, int]:
        """As `SQLiteStore.prune`; events go in chunks of `chunk` rows so no transaction grows huge."""
        cutoff = normalize_ts(before)
        moment = parse_ts(cutoff)
        epoch = moment.timestamp()
        scope = " AND tenant_id = %s" if tenant_id is not None else ""
        extra: tuple[Any, ...] = (tenant_id,) if tenant_id is not None else ()
        counts: dict[str, int] = {"events": 0}
        with self._connection() as db:
            while True:
                n = int(db.execute(
                    f"DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE occurred_at < %s{scope} "
                    f"LIMIT {int(chunk)})", (moment, *extra)).rowcount)
                counts["events"] += n
                if n < chunk:
                    break
            for table, sql, params in (
                ("violations", f"DELETE FROM violations WHERE created_at < %s{scope}", (cutoff, *extra)),
                ("holds", f"DELETE FROM holds WHERE status <> 'pending' AND created_at < %s{scope}",
                 (cutoff, *extra)),
                ("grants", f"DELETE FROM grants WHERE created_at < %s{scope}", (cutoff, *extra)),
                ("session_state", f"DELETE FROM session_state WHERE updated_at < %s{scope}", (epoch, *extra)),
                ("rate_windows", f"DELETE FROM rate_windows WHERE updated_at < %s{scope}", (epoch, *extra)),
                ("request_dedupe", f"DELETE FROM request_dedupe WHERE created_at < %s{scope}", (epoch, *extra)),
                ("agent_tool_counts", f"DELETE FROM agent_tool_counts WHERE updated_at < %s{scope}",
                 (epoch, *extra)),
            ):
                counts[table] = int(db.execute(sql, params).rowcount)
        return counts

    def iter_event_rows(self, tenant_id: str | None = None, *, since: Any = None, until: Any = None,
                        batch: int = 10_000) -> Iterator[list[dict[str, Any]]]:
        """As `SQLiteStore.iter_event_rows` (keyset pages by seq; datetimes for the time columns)."""
        where = ["seq > %s"]
        params: list[Any] = [0]
        if tenant_id is not None:
            where.append("tenant_id = %s")
            params.append(tenant_id)
        if since is not None:
            where.append("occurred_at >= %s")
            params.append(parse_ts(normalize_ts(since)))
        if until is not None:
            where.append("occurred_at < %s")
            params.append(parse_ts(normalize_ts(until)))
        where.append(_SETTLED)
        sql = (f"SELECT {', '.join(self.EXPORT_COLUMNS)} FROM events WHERE {' AND '.join(where)} "
               f"ORDER BY seq LIMIT {int(batch)}")
        while True:
            rows = self.query(sql, params)
            if not rows:
                return
            for row in rows:
                row["occurred_at"] = row["occurred_at"].astimezone(dt.UTC)
                row["ingested_at"] = row["ingested_at"].astimezone(dt.UTC)
            yield rows
            params[0] = rows[-1]["seq"]
