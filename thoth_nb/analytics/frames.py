"""Events, sessions, violations and approvals as pandas DataFrames, from the embedded store or a server.

    df = thoth_nb.events(agent_id="research", since="1h")
    df.thoth.decision_counts()

Dtypes are chosen for auditing: timestamps are tz-aware UTC, repeated labels (agent, tool, decision,
event type, ...) are categoricals, tool arguments are dicts. Speed matters because stores grow to
millions of rows: the embedded path reads only the indexed columns of `events`; big reads go through
ADBC straight into typed Arrow (timestamps parsed and labels dictionary-encoded per worker, so pandas
gets categoricals without a second pass), in a warm reader child process when this process holds the
store open (`_arrow_reader` explains why), and the JSON event bodies are never parsed unless asked. The
child keeps its last big read and, while the store shows it still holds, reads only newer rows the next
time; `%load_ext thoth_nb` starts the child and fills it in the background (`warm_reader`). Big reads
are also kept on disk (`_frame_cache`: `$THOTH_HOME/frames-cache/`, THOTH_FRAME_CACHE=0 to turn off), so
a fresh process maps the last read of the same query instead of decoding it again.
Tool arguments of large frames load on demand with `df.thoth.with_args()` (for the rows still in `df`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thoth_nb import _json

if TYPE_CHECKING:
    import httpx
    import pandas as pd

__all__ = [
    "ARGS_AUTO_LIMIT",
    "ThothAccessor",
    "approvals",
    "events",
    "sessions",
    "violations",
]

#: `events(tool_args=None)` parses tool arguments eagerly up to this many rows; above it they load
#: on demand (`df.thoth.with_args()`), so a million-row frame stays a couple of seconds away.
ARGS_AUTO_LIMIT = 50_000
logger = logging.getLogger("thoth_nb")
_PARALLEL_FROM = 200_000
_PAGE = 500
#: a store read's `limit` when every row is needed (to filter on a column the store cannot filter by)
_ALL = 2**62
#: a disk cache file is used while at most this many seqs came after it (read on top here with sqlite3);
#: past that the fast read of everything is quicker, and rewrites the file
_CACHE_TAIL_MAX = 200_000

EVENT_CATEGORIES = ("agent_id", "user_id", "session_id", "tool_name", "event_type", "decision")
_EVENT_COLUMNS = ("seq", "event_id", "occurred_at", "session_id", "agent_id", "user_id", "tool_name",
                  "event_type", "decision", "violation_id")
_TEXT_COLUMNS = tuple(c for c in _EVENT_COLUMNS if c not in ("seq", "occurred_at", *EVENT_CATEGORIES))
_ARG_FIELDS = ("tool_args", "reason", "risk_score", "duration_ms", "outcome")


_registered = False  # DataFrame.thoth (see `_register`)


def _pd() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError('thoth_nb DataFrames need pandas: pip install "thoth-nb[pandas]"') from None
    if not _registered:
        _register(pandas)
    return pandas


def _pandas_meanwhile() -> None:
    """Start importing pandas on a thread when it is not imported yet (~0.7 s of CPU), so that it
    overlaps a read that mostly waits (on the reader child, on SQLite): a fresh kernel's first `events()`
    pays for the longer of the two, not their sum. The caller's `_pd()` then waits for that import
    (Python's per-module import lock) or repeats it to raise the clear error when it failed."""
    import importlib.util
    import threading

    if "pandas" in sys.modules:
        return
    if importlib.util.find_spec("pandas") is None:
        _pd()  # raises now, before any reading

    def load() -> None:
        try:
            _pd()
        except Exception as exc:  # the caller's own _pd() reports it
            logger.debug("thoth: background pandas import failed (%s)", exc)

    threading.Thread(target=load, name="thoth-nb-import-pandas", daemon=True).start()


# --- shared helpers -----------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|w|week)s?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
          "w": 604800, "week": 604800}


def parse_since(value: Any) -> str | None:
    """A time bound as the store's RFC 3339 text: datetimes, ISO strings, or relative '15m', '2h', '7d'."""
    from thoth_nb.engine.store import format_ts, parse_ts

    if value is None or value == "":
        return None
    if isinstance(value, str):
        match = _RELATIVE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
            return format_ts(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
        try:
            return format_ts(parse_ts(value))
        except ValueError:
            raise ValueError(f"cannot read the time {value!r}: use ISO 8601 (2026-01-31T12:00Z) or '30m', '2h', '7d'"
                             ) from None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, (dt.datetime, int, float)):
        return format_ts(value)
    raise TypeError(f"since/until must be a datetime, an ISO string or '2h'; got {type(value).__name__}")


def default_tenant(tenant_id: str | None = None) -> str:
    """The tenant to read: explicit, $THOTH_TENANT_ID, `configure()` defaults, the last instrumented
    agent's, else "local" (the notebook default)."""
    if tenant_id:
        return tenant_id
    env = os.environ.get("THOTH_TENANT_ID")
    if env:
        return env
    from thoth_nb import _instrument, _runtime

    configured = _instrument._defaults.get("tenant_id")
    if configured:
        return str(configured)
    governors = _runtime.governors()
    if governors:
        return governors[-1].config.tenant_id
    return "local"


def _server(api_url: str | None) -> str | None:
    url = api_url or os.environ.get("THOTH_API_URL")
    return url.rstrip("/") if url else None


def _utc(pd: Any, values: Any) -> Any:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601").astype("datetime64[us, UTC]")


def _finish(pd: Any, frame: Any, *, categories: Iterable[str] = (), times: Iterable[str] = ()) -> Any:
    for column in times:
        if column in frame:
            frame[column] = _utc(pd, frame[column].tolist()).array if len(frame) else pd.array(
                [], dtype="datetime64[us, UTC]")
    for column in categories:
        if column in frame:
            frame[column] = frame[column].astype("category")
    return frame


# --- events -------------------------------------------------------------------------------------


def events(
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    tool_name: str | None = None,
    event_type: str | None = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
    tenant_id: str | None = None,
    tool_args: bool | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    store: Any = None,
    transport: httpx.BaseTransport | None = None,
) -> pd.DataFrame:
    """Recorded events, oldest first, one row per event (PRE, POST, BLOCK).

    Columns: seq, event_id, occurred_at (UTC), session_id, agent_id, user_id, tool_name, event_type,
    decision (on POST/BLOCK rows), violation_id; with tool arguments also tool_args (dicts), reason,
    risk_score, duration_ms, outcome. `tool_args=None` loads them when at most `ARGS_AUTO_LIMIT` rows
    match, True always, False never (then `df.thoth.with_args()` adds them for the rows you keep).
    With `api_url` (or $THOTH_API_URL) the rows come from a server's GET /v1/events. `store` may be a
    store object or the path of a store file (from an analysis process: see `_adbc` on THOTH_ADBC).
    Big reads (no limit, ~200k rows or more) are kept in `$THOTH_HOME/frames-cache/` and used again,
    also by a fresh process, while the store shows the same rows (newer rows are read on top); not
    for relative time bounds ("1h"); THOTH_FRAME_CACHE=0 turns it off (`_frame_cache`).
    """
    _pandas_meanwhile()
    tenant = default_tenant(tenant_id)
    filters = {"agent_id": agent_id, "session_id": session_id, "tool_name": tool_name, "event_type": event_type}
    server = _server(api_url)
    if server is not None and store is None:
        pd = _pd()
        items = _fetch_all(server, "/v1/events", {"tenant_id": tenant, **filters, "since": parse_since(since),
                                                  "until": parse_since(until)}, limit, api_key, transport)
        return _events_from_items(pd, items, tenant)  # type: ignore[no-any-return]
    from thoth_nb import _runtime

    if store is None:
        _runtime.flush(timeout=5.0)
        store = _runtime.local_store()
    where = ["tenant_id = ?"]
    params: list[Any] = [tenant]
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    for op, bound in ((">=", parse_since(since)), ("<", parse_since(until))):
        if bound is not None:
            where.append(f"occurred_at {op} ?")
            params.append(bound)
    path = Path(store) if isinstance(store, (str, os.PathLike)) else Path(store.path)
    relative = any(isinstance(v, str) and _RELATIVE.match(v) for v in (since, until))
    table = _read_events(path, where, params, limit, cache=not relative)
    frame = _events_frame(_pd(), table)
    frame.attrs["thoth"] = {"source": "store", "path": str(path), "tenant_id": tenant, "tool_args": False}
    if tool_args or (tool_args is None and len(frame) <= ARGS_AUTO_LIMIT):
        frame = frame.thoth.with_args()
    return frame  # type: ignore[no-any-return]


def _event_sql(where: Sequence[str], limit: int | None) -> str:
    # occurred_at stays text here: Arrow parses the store's fixed-width RFC 3339 about 10x cheaper than
    # SQLite's unixepoch() (measured: 0.04 s against 0.4 s CPU for a million rows)
    columns = ", ".join(_EVENT_COLUMNS)
    sql = f"SELECT {columns} FROM events NOT INDEXED WHERE {' AND '.join(where)} ORDER BY seq"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def _adbc() -> Any:
    """The in-process ADBC reader when asked for (THOTH_ADBC=1); it is only used for a store file this
    process does not hold open (see `_arrow_reader` for why)."""
    if os.environ.get("THOTH_ADBC", "").lower() not in ("1", "true", "yes", "on") or not _adbc_importable():
        return None
    from thoth_nb.analytics import _arrow_reader

    return _arrow_reader


def _read_events(path: Path, where: list[str], params: list[Any], limit: int | None, *, cache: bool = True) -> Any:
    """The matching rows as a typed pyarrow Table (ADBC) or a list of column lists (stdlib sqlite3).

    Big reads (no limit, at least `_PARALLEL_FROM` rows) come from the disk cache (`_frame_cache`) when
    it holds them, else go through ADBC, one query per seq range on its own connection and thread
    (SQLite decodes rows while the GIL is released): in this process for a store file nothing here
    holds open and THOTH_ADBC=1, else in the warm reader child; then they are written to the cache."""
    lo, hi = _seq_span(path)
    big = limit is None and hi - lo >= _PARALLEL_FROM
    cached = _Cached.open(path, where, params, hi) if big and cache else None
    adbc = _adbc()
    in_process = adbc is not None and not _open_here(path)
    child = big and not in_process and _adbc_importable()
    if child and (cached is None or not cached.has_file()):
        _READER.start()  # it will read: let it start while the cache is checked (and pandas imports)
    if cached is not None:
        table = cached.read()
        if table is not None:
            return table
    queries = _big_read(where, params, lo, hi)["queries"] if big else [(_event_sql(where, limit), list(params))]
    if in_process:
        return _cache_after(cached, _read_adbc(adbc, path, queries))
    if child:
        try:
            return _cache_after(cached, _READER.read(path, queries, times=("occurred_at",),
                                                     categories=EVENT_CATEGORIES,
                                                     snapshot=_snapshot_spec(where, params, hi)))
        except ReaderError as exc:
            logger.warning("thoth: fast read failed (%s); reading with sqlite3", exc)
    return _read_sqlite3(path, where, params, limit)


def keep_cache(store: str | os.PathLike[str], tenant_id: str, *, min_rows: int | None = None) -> int:
    """Bring the disk cache file of `events(tenant_id=...)` (no filter, `_frame_cache`) up to the store's
    last row, so that the first read of a fresh kernel maps it instead of decoding every row. Run by the
    frame keeper (`_frame_keeper`), a process of its own that holds nothing open, so the full read (when
    there is no usable file) uses ADBC here. Returns the rows the file holds; 0 when the store is small
    (fewer than `min_rows`, default: as big as reads get cached: read fast anyway), the cache is off,
    pyarrow/ADBC are missing, or this process holds the store open."""
    from thoth_nb.analytics import _frame_cache

    path = Path(store)
    if not _frame_cache.enabled() or not _adbc_importable() or _open_here(path):
        return 0
    lo, hi = _seq_span(path)
    if hi - lo < (_PARALLEL_FROM if min_rows is None else min_rows):
        return 0
    where, params = ["tenant_id = ?"], [tenant_id]
    cached = _Cached.open(path, where, params, hi)
    if cached is None:
        return 0
    table = cached.read(refresh=True)
    if table is None:
        from thoth_nb.analytics import _arrow_reader

        table = _cache_after(cached, _read_adbc(_arrow_reader, path, _big_read(where, params, lo, hi)["queries"]))
    _frame_cache.wait()
    return int(table.num_rows)


def _cache_after(cached: _Cached | None, table: Any) -> Any:
    if cached is not None:
        cached.write(table)
    return table


class _Cached:
    """One big read against the disk cache (`_frame_cache`): the cached rows plus those added since, or
    None (then the caller reads, and `write` keeps what it read). `mark` is the store's mark at `hi`,
    taken before anything is read."""

    def __init__(self, path: Path, where: list[str], params: list[Any], hi: int, key: str) -> None:
        self.path, self.where, self.params, self.hi, self.key = path, where, params, hi, key
        self.mark: list[Any] | None = None

    @classmethod
    def open(cls, path: Path, where: list[str], params: list[Any], hi: int) -> _Cached | None:
        from thoth_nb.analytics import _frame_cache

        if not where or where[0] != "tenant_id = ?" or not _frame_cache.enabled():
            return None
        try:
            key = _frame_cache.key(path, _event_sql([*where, "seq > ?", "seq <= ?"], None), params,
                                   ("occurred_at",), EVENT_CATEGORIES)
        except OSError:
            return None
        return cls(path, where, params, hi, key)

    def has_file(self) -> bool:
        from thoth_nb.analytics import _frame_cache

        return _frame_cache.file_for(self.key).is_file()

    def read(self, *, refresh: bool = False) -> Any:
        """The rows from the cache file plus the store's newer ones, or None (no valid file, or too many
        new rows to read here: the caller's read is faster and refreshes the file). `refresh`: rewrite
        the file whenever rows were added (the keeper), not only when many were."""
        from thoth_nb.analytics import _frame_cache

        loaded = _frame_cache.load(self.key)
        if loaded is None and len(self.where) == 1:
            return None  # nothing to check; `write` takes the mark from the rows the caller reads
        upto = int(loaded[1]["upto"]) if loaded is not None else self.hi
        try:
            then, self.mark = _frame_cache.marks(self.path, self.params[0], min(upto, self.hi), self.hi)
        except sqlite3.Error:
            return None
        if loaded is None:
            return None
        table, meta = loaded
        target = _frame_cache.file_for(self.key)
        if upto > self.hi or then != meta["mark"] or not _cache_schema_ok(table):
            _frame_cache.drop(target)  # rows deleted since (retention), another store, another layout
            return None
        if self.hi - upto >= _CACHE_TAIL_MAX:
            return None
        cached_rows = table.num_rows
        try:
            if self.hi > upto:
                tail = _arrow_tail(self.path, self.where, self.params, upto, self.hi)
                if tail is None:
                    return None
                if tail.num_rows:
                    import pyarrow as pa

                    table = pa.concat_tables([table, tail], promote_options="permissive").unify_dictionaries()
                    if table.column(0).num_chunks > 16:
                        table = table.combine_chunks().unify_dictionaries()
        except Exception as exc:  # a tail that does not fit the file: read afresh (and rewrite it)
            logger.debug("thoth: frame cache not used (%s)", exc)
            return None
        added = table.num_rows - cached_rows
        if added >= _frame_cache.REFRESH_ROWS or (added and (refresh or added * 10 >= cached_rows)):
            self.write(table)
        return table

    def write(self, table: Any) -> None:
        """Keep `table` (the rows up to `hi`, read after `mark` was taken) as the key's file. A read of
        all the tenant's rows (no filter) without a mark is its own: the count and seq sum of its rows, the
        event id of its last, and the migrations (exact even when a deletion raced the read; `_frame_cache`
        describes the mark)."""
        from thoth_nb.analytics import _frame_cache
        from thoth_nb.analytics._arrow_reader import seq_mark

        if isinstance(table, list) or not _cache_schema_ok(table):
            return
        if self.mark is None and len(self.where) == 1:
            try:
                with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as conn:
                    migrations = conn.execute(_MIGRATIONS_SQL).fetchone()[0]
                conn.close()
            except sqlite3.Error:
                return
            last = table.column("event_id")[-1].as_py() if table.num_rows else None
            self.mark = [*seq_mark(table), migrations, last]
        if self.mark is not None:
            _frame_cache.save_later(self.key, table, self.hi, self.mark)


def _cache_schema_ok(table: Any) -> bool:
    """Whether a table has the columns and types of a typed big read (what the cache may hold)."""
    import pyarrow as pa

    if table.column_names != list(_EVENT_COLUMNS):
        return False
    for name in _EVENT_COLUMNS:
        kind = table.schema.field(name).type
        if name == "seq":
            ok = pa.types.is_int64(kind)
        elif name == "occurred_at":
            ok = kind == pa.timestamp("us", tz="UTC")
        elif name in EVENT_CATEGORIES:
            ok = kind == pa.dictionary(pa.int32(), pa.string())
        else:
            ok = pa.types.is_string(kind) or pa.types.is_null(kind)
        if not ok:
            return False
    return True


def _arrow_tail(path: Path, where: list[str], params: list[Any], after: int, upto: int) -> Any:
    """The rows in (after, upto] as a table typed like a big read's (stdlib sqlite3, then Arrow); None
    when their times are not in the store's own format."""
    import pyarrow as pa

    from thoth_nb.analytics._arrow_reader import _typed

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(_event_sql([*where, "seq > ?", "seq <= ?"], None), [*params, after, upto]).fetchall()
    finally:
        conn.close()
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in _EVENT_COLUMNS]
    table = pa.table([pa.array(c, type=pa.int64() if n == "seq" else None) for n, c in zip(_EVENT_COLUMNS, columns,
                                                                                           strict=True)],
                     names=list(_EVENT_COLUMNS))
    table = _typed(table, ("occurred_at",), EVENT_CATEGORIES)
    if not pa.types.is_timestamp(table.schema.field("occurred_at").type):
        return None
    return table


def _seq_span(path: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as probe:
        # two subqueries: SQLite reads min() or max() off the rowid b-tree only when it is alone (both in
        # one SELECT scan the table: ~0.2 s per million rows)
        lo, hi = probe.execute("SELECT COALESCE((SELECT MIN(seq) FROM events), 0), "
                               "COALESCE((SELECT MAX(seq) FROM events), 0)").fetchone()
    probe.close()
    return int(lo), int(hi)


def _ranges(lo: int, hi: int) -> list[tuple[int, int]]:
    """(after, upto] seq ranges of a big read, one per worker (each on its own connection and thread).

    More ranges than CPUs: a fresh kernel's first read of a million rows on 2 CPUs took a median 1.85 s
    with 8 ranges against 2.17 s with 2 (7 cold reads each, alternated), and its reader child less CPU
    (each range's Arrow buffers and dictionary hash tables are smaller). The child's threads also keep
    their share of the CPUs while this process imports pandas beside them."""
    parts = min(16, max(8, os.cpu_count() or 2))
    bounds = [lo - 1 + (hi - lo + 1) * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


_WARM_SQL = "SELECT count(*) FROM events NOT INDEXED WHERE seq > ? AND seq <= ?"
#: the reader child's snapshot marks (`_arrow_reader.Snapshot`): count and sum of seq of the tenant's rows up
#: to the snapshot's seq (?3) and up to this read's (?2), in one walk of the tenant's index entries, and
#: the migrations applied to the store
_MARK_SQL = ("SELECT a.n, a.s, a.n + b.n, a.s + b.s, (SELECT count(*) FROM schema_migrations) "
             "FROM (SELECT count(*) AS n, coalesce(sum(seq), 0) AS s FROM events WHERE tenant_id = ?1 AND +seq <= ?3)"
             " AS a, (SELECT count(*) AS n, coalesce(sum(seq), 0) AS s FROM events NOT INDEXED "
             "WHERE seq > ?3 AND seq <= ?2 AND tenant_id = ?1) AS b")


_MIGRATIONS_SQL = "SELECT count(*) FROM schema_migrations"


def _snapshot_spec(where: list[str], params: list[Any], hi: int) -> dict[str, Any] | None:
    """What the reader child needs to keep this big read as its snapshot and trust it next time."""
    if not where or where[0] != "tenant_id = ?":
        return None
    return {"sql": _event_sql([*where, "seq > ?", "seq <= ?"], None), "params": list(params), "upto": hi,
            "mark": [_MARK_SQL, [params[0]]], "plain": len(where) == 1, "migrations": _MIGRATIONS_SQL}


def _big_read(where: list[str], params: list[Any], lo: int, hi: int) -> dict[str, Any]:
    ranged = _event_sql([*where, "seq > ?", "seq <= ?"], None)
    return {"queries": [(ranged, [*params, a, b]) for a, b in _ranges(lo, hi)], "times": ["occurred_at"],
            "categories": list(EVENT_CATEGORIES), "snapshot": _snapshot_spec(where, params, hi)}


def warm_reader(store: Any = None) -> bool:
    """Get the reader child ready for the first big `events()` read of a store, without waiting for it.

    `%load_ext thoth_nb` calls this for the local store: a first `events()` of a million rows otherwise
    pays for starting Python with pyarrow and ADBC in the child (~1 s), for the store's pages (mapped
    afresh, or read from disk when the OS has dropped them) and for decoding every row (~2 s of CPU).
    Here the child starts and does the default read (`events()` of the default tenant, no filters) into
    its snapshot (`_arrow_reader.Snapshot`) while the user does something else, so that first call reads
    only the rows added since; with THOTH_WARM_READER=pages it only walks the pages of each worker's seq
    range (`_arrow_reader.warm`: no row decoded, no snapshot memory). A read that comes while the child
    is still starting makes it skip the warm-up; one that comes during it waits for it and uses it.
    Does nothing (False) for a small or missing store, without pyarrow/ADBC, for a server
    (THOTH_API_URL), when THOTH_WARM_READER=0, or when the disk cache holds a file of the default read
    (`_frame_cache`: the first read maps it here, the child would not be used). Costs, when the store
    is big: the child's CPU in the background (~3 s per million rows) and the snapshot's memory in the
    child (~90 MB per million)."""
    if os.environ.get("THOTH_WARM_READER", "").lower() in ("0", "false", "no", "off"):
        return False
    if store is None and _server(None) is not None:
        return False
    if store is None:
        from thoth_nb import _runtime

        store = _runtime.store_path()
    path = Path(store) if isinstance(store, (str, os.PathLike)) else Path(store.path)
    if not path.is_file() or not _adbc_importable():
        return False
    try:
        lo, hi = _seq_span(path)
    except sqlite3.Error:
        return False
    if hi - lo < _PARALLEL_FROM:
        return False
    cached = _Cached.open(path, ["tenant_id = ?"], [default_tenant()], hi)
    if cached is not None and _prefetch():
        from thoth_nb.analytics import _frame_cache

        if _frame_cache.file_for(cached.key).is_file():
            return False  # the first read maps the cache file here: no child to warm
    prefetch = _big_read(["tenant_id = ?"], [default_tenant()], lo, hi) if _prefetch() else None
    return _READER.warm(path, [(_WARM_SQL, [a, b]) for a, b in _ranges(lo, hi)], prefetch=prefetch)


def _prefetch() -> bool:
    return os.environ.get("THOTH_WARM_READER", "").lower() != "pages"


def _adbc_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("adbc_driver_sqlite") is not None


def _read_adbc(adbc: Any, path: Path, queries: list[tuple[str, list[Any]]]) -> Any:
    return adbc.read(str(path), queries, times=("occurred_at",), categories=EVENT_CATEGORIES)


class ReaderError(RuntimeError):
    """The reader child could not read (not installed properly, crashed, or the query failed)."""


class _ReaderProcess:
    """A reader child kept warm between reads (`python -P _arrow_reader.py`): starting Python with
    pyarrow and ADBC costs about a second, more than reading a million rows. It reads with ADBC's own
    SQLite, in its own process, so this process's sqlite3 locks on the store are never touched. Tables
    come back as Arrow IPC files on /dev/shm (when present) that this process memory-maps, then deletes.
    The child ends when its stdin closes: at exit here, or when this process dies."""

    def __init__(self, script: Path | None = None) -> None:
        import threading

        self._script = script or Path(__file__).with_name("_arrow_reader.py")
        self._lock = threading.Lock()
        self._proc: Any = None
        self._pid = 0
        self._dir: Path | None = None
        self._registered = False  # the atexit hook that stops the child
        self._pending = 0  # replies of warm jobs not read yet (they come before the next read's)
        self.last_reply: dict[str, Any] = {}  # the child's reply to the last read (rows, reused)

    def read(self, path: Path, queries: list[tuple[str, list[Any]]], *, times: Sequence[str] = (),
             categories: Sequence[str] = (), snapshot: dict[str, Any] | None = None) -> Any:
        """The rows of `queries` as a pyarrow Table; ReaderError when the child cannot give them. A child
        that died since the last read (killed, out of memory) is started again once."""
        import uuid

        import pyarrow as pa

        job: dict[str, Any] = {"path": str(path), "queries": queries, "times": list(times),
                               "categories": list(categories), "snapshot": snapshot}
        with self._lock:
            for attempt in (1, 2):
                try:
                    proc = self._start()
                except OSError as exc:
                    raise ReaderError(f"cannot start the reader process: {exc}") from None
                assert self._dir is not None
                out = job["out"] = str(self._dir / f"{uuid.uuid4().hex}.arrow")
                try:
                    proc.stdin.write(_json.dumps(job) + "\n")
                    proc.stdin.flush()
                    line = self._skip_warm_replies(proc)
                    if line:
                        line = proc.stdout.readline()
                except (OSError, ValueError):
                    line = ""
                if not line:
                    why = self._stderr_tail()
                    self._stop()
                    if attempt == 1 and not why:
                        continue
                    raise ReaderError(f"the reader process ended: {why or 'no output'}")
                try:
                    reply = _json.loads(line)
                    self.last_reply = reply
                    if not reply.get("ok"):
                        raise ReaderError(str(reply.get("error")))
                    with pa.memory_map(out) as source:  # buffers keep the mapping after close and unlink
                        return pa.ipc.open_file(source).read_all()
                finally:
                    Path(out).unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def warm(self, path: Path, queries: list[tuple[str, list[Any]]], *,
             prefetch: dict[str, Any] | None = None) -> bool:
        """Start the child if it is not running and queue a warm job (`_arrow_reader.warm`, or the
        `prefetch` read kept as the child's snapshot) without waiting for it; False when a read holds
        the child or it cannot start (the read will try)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            proc = self._start()
            job = {"path": str(path), "queries": queries, "warm": True, "prefetch": prefetch}
            proc.stdin.write(_json.dumps(job) + "\n")
            proc.stdin.flush()
            self._pending += 1
            return True
        except (OSError, ValueError):
            self._stop()
            return False
        finally:
            self._lock.release()

    def start(self) -> None:
        """Start the child now without waiting for it (its Python, pyarrow and ADBC take ~0.4 s of its own
        CPU), so that it starts while this process does something else before its first read."""
        if not self._lock.acquire(blocking=False):
            return  # a read or warm-up holds the child: it is running
        try:
            self._start()
        except OSError:
            self._stop()  # the read will try again and report why
        finally:
            self._lock.release()

    def _skip_warm_replies(self, proc: Any) -> str:
        """Read past the replies of queued warm jobs (waiting for the child to finish them: the read
        that follows needs the same pages); "" when the child ended, else "ok"."""
        while self._pending:
            if not proc.stdout.readline():
                return ""
            self._pending -= 1
        return "ok"

    def _start(self) -> Any:
        import subprocess
        import tempfile

        if self._proc is not None and self._proc.poll() is None and self._pid == os.getpid():
            return self._proc
        if self._pid != os.getpid():  # a forked copy of this object: the child belongs to the parent
            self._proc, self._dir = None, None
        self._stop()
        shm = Path("/dev/shm")
        self._dir = Path(tempfile.mkdtemp(prefix="thoth-read-",
                                          dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
        with open(self._dir / "stderr.log", "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-P", str(self._script)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                                          close_fds=True)
        self._pid = os.getpid()
        if not self._registered:
            import atexit

            atexit.register(self.close)
            self._registered = True
        return self._proc

    def _stderr_tail(self) -> str:
        try:
            return (self._dir / "stderr.log").read_text(errors="replace").strip()[-300:] if self._dir else ""
        except OSError:
            return ""

    def _stop(self) -> None:
        import shutil
        import subprocess

        proc, self._proc = self._proc, None
        warming, self._pending = self._pending, 0
        if proc is not None and self._pid == os.getpid():
            try:
                proc.stdin.close()
                if warming:  # a warm-up may still be reading: it only reads, so nothing is lost by not waiting
                    proc.kill()
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            for stream in (proc.stdout,):
                stream.close()
        if self._dir is not None and self._pid == os.getpid():
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def close(self) -> None:
        """Stop the child (it is started again by the next big read)."""
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        """The running child's process id, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None


_READER = _ReaderProcess()


def _open_here(path: Path) -> bool:
    """Whether this process has the file open: a store it opened, or any descriptor on the file
    (/proc/self/fd, where there is one: it also sees stores opened by hand, outside `_runtime`)."""
    from thoth_nb import _runtime

    target = path.resolve()
    if any(store.path.resolve() == target for store in list(_runtime._stores.values())):
        return True
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return False
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) == str(target):
                return True
        except OSError:
            continue
    return False


def _read_sqlite3(path: Path, where: list[str], params: list[Any], limit: int | None) -> list[list[Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(_event_sql(where, limit), params).fetchall()
    finally:
        conn.close()
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in _EVENT_COLUMNS]


def _events_frame(pd: Any, table: Any) -> Any:
    if isinstance(table, list):
        data: dict[str, Any] = dict(zip(_EVENT_COLUMNS, table, strict=True))
        frame = pd.DataFrame(data)
        frame["occurred_at"] = _utc(pd, data["occurred_at"]).array
        frame["seq"] = frame["seq"].astype("int64")
        for column in EVENT_CATEGORIES:
            frame[column] = frame[column].astype("category")
        if not len(frame):  # no value to infer text from: pandas makes empty columns float64 (no `.str`)
            for column in _TEXT_COLUMNS:
                frame[column] = frame[column].astype(str)
        return frame
    import pyarrow as pa

    # the readers type columns on the way; a time column in another text format is parsed here
    columns = {}
    for name in table.column_names:
        col = table[name]
        if name == "occurred_at" and not pa.types.is_timestamp(col.type):
            col = pa.array(_utc(pd, col.to_pylist()).array)
        elif name in EVENT_CATEGORIES and not pa.types.is_dictionary(col.type):
            col = col.cast(pa.string()).dictionary_encode()
        elif name == "seq" and not pa.types.is_int64(col.type):
            col = col.cast(pa.int64())  # no rows: nothing to infer the type from
        elif name in _TEXT_COLUMNS and not pa.types.is_string(col.type) and col.null_count == len(col):
            # a text column without a single value in this read (no violation yet): ADBC has no type to
            # infer (int64: pandas float NaN); sqlite3 gives object None, as a null column does
            col = pa.nulls(len(col)) if len(col) else pa.array([], pa.string())
        columns[name] = col
    return pa.table(columns).to_pandas(self_destruct=True, split_blocks=True)


def _events_from_items(pd: Any, items: list[dict[str, Any]], tenant: str) -> Any:
    rows = []
    for item in items:
        meta = item.get("metadata") or {}
        rows.append({
            "seq": item.get("seq"),
            "event_id": item.get("event_id"),
            "occurred_at": item.get("occurred_at"),
            "session_id": item.get("session_id"),
            "agent_id": item.get("agent_id") or "",
            "user_id": item.get("user_id") or "",
            "tool_name": item.get("tool_name") or "",
            "event_type": item.get("event_type"),
            "decision": meta.get("authorization_decision"),
            "violation_id": item.get("violation_id") or meta.get("violation_id"),
            "tool_args": meta.get("tool_args"),
            "reason": meta.get("reason"),
            "risk_score": meta.get("risk_score"),
            "duration_ms": meta.get("duration_ms"),
            "outcome": meta.get("outcome"),
        })
    frame = pd.DataFrame(rows, columns=[*_EVENT_COLUMNS, *_ARG_FIELDS])
    frame["seq"] = frame["seq"].astype("Int64")
    for column in ("risk_score", "duration_ms"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame = _finish(pd, frame, categories=(*EVENT_CATEGORIES, "outcome"), times=("occurred_at",))
    frame.attrs["thoth"] = {"source": "server", "tenant_id": tenant, "tool_args": True}
    return frame


def _load_args(path: str, tenant: str, seqs: list[int]) -> dict[int, list[Any]]:
    """Tool arguments and decision details of the given events, one JSON parse per row in SQLite."""
    paths = ", ".join(f"'$.metadata.{f}'" for f in _ARG_FIELDS)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out: dict[int, list[Any]] = {}
    try:
        if not seqs:
            return out
        span = seqs[-1] - seqs[0] + 1 if seqs == sorted(seqs) else None
        if span is not None and span <= 2 * len(seqs):
            # mostly contiguous: one rowid range scan beats a list of a million ids (`+tenant_id` keeps
            # SQLite on the rowid instead of a tenant index)
            rows = conn.execute(
                f"SELECT seq, json_extract(body, {paths}) FROM events WHERE seq BETWEEN ? AND ? AND +tenant_id = ?",
                (seqs[0], seqs[-1], tenant))
        else:
            rows = conn.execute(
                f"SELECT seq, json_extract(body, {paths}) FROM events WHERE seq IN (SELECT value FROM json_each(?)) "
                "AND +tenant_id = ?", (_json.dumps(seqs), tenant))
        loads = _json.loads
        for seq, packed in rows:
            out[seq] = loads(packed) if packed else [None] * len(_ARG_FIELDS)
    finally:
        conn.close()
    return out


# --- sessions, violations, approvals ------------------------------------------------------------


def sessions(
    *,
    agent_id: str | None = None,
    user_id: str | None = None,
    since: Any = None,
    limit: int = 1000,
    tenant_id: str | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    store: Any = None,
    transport: httpx.BaseTransport | None = None,
) -> pd.DataFrame:
    """One row per session, most recent first: who, when, how many calls, blocks, holds, violations.
    With `since`, a row describes the session from then on: its events, violations and holds since."""
    pd = _pd()
    tenant = default_tenant(tenant_id)
    server = _server(api_url)
    if server is not None and store is None:
        rows = _fetch_all(server, "/v1/sessions", {"tenant_id": tenant, "agent_id": agent_id, "user_id": user_id,
                                                   "since": parse_since(since)}, limit, api_key, transport)
    else:
        rows = _store(store).sessions(tenant, agent_id=agent_id, user_id=user_id, since=parse_since(since),
                                      limit=limit)
    columns = ["session_id", "agent_id", "user_id", "first_seen", "last_seen", "tool_calls", "blocked",
               "stepped_up", "violations"]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("tool_calls", "blocked", "stepped_up", "violations"):
        frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("int64")
    frame = _finish(pd, frame, categories=("agent_id", "user_id"), times=("first_seen", "last_seen"))
    frame["duration"] = frame["last_seen"] - frame["first_seen"]
    frame.attrs["thoth"] = {"kind": "sessions", "tenant_id": tenant}
    return frame  # type: ignore[no-any-return]


def violations(
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    tool_name: str | None = None,
    since: Any = None,
    limit: int = 10_000,
    tenant_id: str | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    store: Any = None,
    transport: httpx.BaseTransport | None = None,
) -> pd.DataFrame:
    """Every recorded violation (blocks, holds, observe-mode would-be blocks), most recent first."""
    pd = _pd()
    tenant = default_tenant(tenant_id)
    server = _server(api_url)
    # neither the store nor the server filters by tool: read them all, filter here, then keep `limit`
    fetch = limit if tool_name is None else None
    if server is not None and store is None:
        rows = _fetch_all(server, "/v1/violations", {"tenant_id": tenant, "agent_id": agent_id,
                                                     "session_id": session_id, "since": parse_since(since)},
                          fetch, api_key, transport)
    else:
        rows = _store(store).violations(tenant, agent_id=agent_id, session_id=session_id,
                                        since=parse_since(since), limit=_ALL if fetch is None else fetch)
    columns = ["violation_id", "created_at", "session_id", "agent_id", "user_id", "tool_name", "decision",
               "observed", "reason", "decision_reason_code", "risk_score", "matched_rule_ids", "tool_args"]
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    if tool_name is not None:
        frame = frame[frame["tool_name"] == tool_name].head(limit).reset_index(drop=True)
    frame["observed"] = frame["observed"].fillna(False).astype(bool)
    frame["risk_score"] = pd.to_numeric(frame["risk_score"]).astype("float64")
    frame = _finish(pd, frame, categories=("agent_id", "user_id", "tool_name", "decision", "decision_reason_code"),
                    times=("created_at",))
    frame.attrs["thoth"] = {"kind": "violations", "tenant_id": tenant}
    return frame  # type: ignore[no-any-return]


def approvals(
    status: str = "all",
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    tool_name: str | None = None,
    since: Any = None,
    limit: int = 1000,
    tenant_id: str | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    store: Any = None,
    transport: httpx.BaseTransport | None = None,
) -> pd.DataFrame:
    """Step-up holds and what became of them (pending, approved, denied, expired), oldest first; `since`
    keeps holds created from then on."""
    pd = _pd()
    if status not in ("pending", "approved", "denied", "expired", "all"):
        raise ValueError("status must be pending, approved, denied, expired or all")
    tenant = default_tenant(tenant_id)
    server = _server(api_url)
    bound = parse_since(since)
    filters = {"agent_id": agent_id, "session_id": session_id, "tool_name": tool_name}
    # the store and the server filter holds by status only: with other filters read them all, filter here,
    # then keep `limit` (filtering the `limit` oldest holds lost the newer ones that match)
    narrowed = bound is not None or any(v is not None for v in filters.values())
    fetch = None if narrowed else limit
    if server is not None and store is None:
        rows = _fetch_all(server, "/v1/approvals", {"tenant_id": tenant, "status": status}, fetch, api_key,
                          transport)
    else:
        rows = _store(store).holds(tenant, status=status, limit=_ALL if fetch is None else fetch)
    columns = ["approval_id", "hold_token", "status", "created_at", "expires_at", "resolved_at", "session_id",
               "agent_id", "user_id", "tool_name", "tool_args", "reason", "risk_score", "reviewer", "note",
               "violation_id"]
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for column, value in filters.items():
        if value is not None:
            frame = frame[frame[column] == value]
    frame = frame.reset_index(drop=True)
    frame["risk_score"] = pd.to_numeric(frame["risk_score"]).astype("float64")
    frame = _finish(pd, frame, categories=("status", "agent_id", "user_id", "tool_name"),
                    times=("created_at", "expires_at", "resolved_at"))
    if bound is not None:
        frame = frame[frame["created_at"] >= pd.Timestamp(bound)]
    frame = frame.head(limit).reset_index(drop=True)
    frame.attrs["thoth"] = {"kind": "approvals", "tenant_id": tenant}
    return frame  # type: ignore[no-any-return]


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from thoth_nb import _runtime

    _runtime.flush(timeout=5.0)
    return _runtime.local_store()


# --- server (PROTOCOL §11) ----------------------------------------------------------------------


def _fetch_all(server: str, path: str, params: Mapping[str, Any], limit: int | None, api_key: str | None,
               transport: httpx.BaseTransport | None) -> list[dict[str, Any]]:
    """Follow `next_cursor` pages of a §11 list endpoint until `limit` rows or the end."""
    import httpx

    from thoth_nb._transports.http import error_message
    from thoth_nb._version import __version__

    key = api_key or os.environ.get("THOTH_API_KEY")
    headers = {"User-Agent": f"thoth-nb/{__version__}", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    query = {k: v for k, v in params.items() if v is not None}
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=server, headers=headers, transport=transport, timeout=30.0, trust_env=False) as client:
        cursor: str | None = None
        while True:
            page = _PAGE if limit is None else max(1, min(_PAGE, limit - len(out)))
            response = client.get(path, params={**query, "limit": page, **({"cursor": cursor} if cursor else {})})
            if response.status_code in (401, 403):
                from thoth_nb._exceptions import ThothConfigError

                raise ThothConfigError(f"{server}{path} refused the request (status={response.status_code}): "
                                       f"{error_message(response)}; pass api_key= or set THOTH_API_KEY")
            if response.status_code >= 400:
                raise RuntimeError(f"GET {server}{path} failed (status={response.status_code}): "
                                   f"{error_message(response)}")
            data = response.json()
            items = data.get("items", []) if isinstance(data, dict) else data
            out.extend(items)
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor or not items or (limit is not None and len(out) >= limit):
                break
    return out[:limit] if limit is not None else out


# --- the DataFrame.thoth accessor ---------------------------------------------------------------


class ThothAccessor:
    """`df.thoth`: audit steps over frames from `events()` (and `violations()` where it makes sense)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._df = frame

    def _need(self, *columns: str) -> None:
        missing = [c for c in columns if c not in self._df.columns]
        if missing:
            raise AttributeError(f"df.thoth needs the column(s) {', '.join(missing)}: use a frame from "
                                 "thoth_nb.events() (or violations())")

    def with_args(self) -> pd.DataFrame:
        """This events frame plus tool_args, reason, risk_score, duration_ms and outcome (read now)."""
        df = self._df
        info = dict(df.attrs.get("thoth") or {})
        if info.get("tool_args") or "tool_args" in df.columns:
            return df
        if info.get("source") != "store":
            raise ValueError("with_args() needs a frame from thoth_nb.events() on the embedded store")
        pd = _pd()
        self._need("seq")
        seqs = [int(s) for s in df["seq"].tolist()]
        found = _load_args(info["path"], info["tenant_id"], seqs)
        empty = [None] * len(_ARG_FIELDS)
        values = [found.get(s, empty) for s in seqs]
        out = df.copy()
        for index, name in enumerate(_ARG_FIELDS):
            column = [v[index] for v in values]
            if name in ("risk_score", "duration_ms"):
                out[name] = pd.array(column, dtype="float64") if column else pd.array([], dtype="float64")
            elif name == "outcome":
                out[name] = pd.Categorical(column)
            else:
                out[name] = pd.Series(column, index=out.index, dtype=object)
        info["tool_args"] = True
        out.attrs["thoth"] = info
        return out

    def timeline(self, session_id: str | None = None) -> pd.DataFrame:
        """One session's events in order, with the time since the session's first event."""
        self._need("session_id", "occurred_at")
        df = self._df
        if session_id is None:
            present = df["session_id"].dropna().unique()
            if len(present) > 1:
                raise ValueError(f"this frame has {len(present)} sessions; pass timeline(session_id=...)")
            session_id = str(present[0]) if len(present) else None  # a frame filtered to nothing: no rows
        rows = df[df["session_id"] == session_id] if session_id is not None else df.iloc[:0]
        rows = rows.sort_values(["occurred_at", *(["seq"] if "seq" in df else [])])
        rows = rows.reset_index(drop=True)
        rows.insert(1, "elapsed", rows["occurred_at"] - rows["occurred_at"].iloc[0] if len(rows) else [])
        keep = [c for c in ("occurred_at", "elapsed", "agent_id", "event_type", "tool_name", "decision", "reason",
                            "tool_args", "risk_score", "duration_ms", "violation_id") if c in rows.columns]
        return rows[keep]

    def decision_counts(self, by: str | None = None) -> Any:
        """How often each decision was taken (one per completed or blocked call); `by="agent_id"` cross-tabs."""
        self._need("decision")
        pd = _pd()
        df = self._df[self._df["decision"].notna()]
        if by is None:
            counts = df["decision"].value_counts()
            return counts[counts > 0].rename("calls")
        self._need(by)
        return pd.crosstab(df[by], df["decision"]).loc[lambda t: t.sum(axis=1) > 0]

    def top_blocked_tools(self, n: int = 10) -> pd.Series:
        """The tools blocked most often."""
        self._need("tool_name", "decision")
        df = self._df
        blocked = df[df["decision"] == "BLOCK"]
        if "observed" in df.columns:
            blocked = blocked[~blocked["observed"]]
        counts = blocked["tool_name"].value_counts()
        result: pd.Series = counts[counts > 0].head(n).rename("blocked")
        return result

    def calls_by_user(self) -> pd.DataFrame:
        """Per user: governed calls (one per decision), allowed, blocked, sessions, distinct tools."""
        self._need("user_id", "decision", "tool_name", "session_id")
        df = self._df[self._df["decision"].notna()]
        decision = df["decision"].astype(str)
        frame = df.assign(_allowed=decision.isin(["ALLOW", "MODIFY"]), _blocked=decision.eq("BLOCK"))
        grouped = frame.groupby("user_id", observed=True)
        result: pd.DataFrame = grouped.agg(
            calls=("decision", "size"),
            allowed=("_allowed", "sum"),
            blocked=("_blocked", "sum"),
            sessions=("session_id", "nunique"),
            tools=("tool_name", "nunique"),
        ).sort_values("calls", ascending=False)
        return result.astype("int64")


    def card(self, row: int = 0) -> Any:
        """Row `row` of a violations or sessions frame as a card with `_repr_html_` (notebooks) and a
        plain repr (terminals)."""
        from thoth_nb.notebook.reprs import SessionView, ViolationView

        kind = (self._df.attrs.get("thoth") or {}).get("kind")
        record = {str(k): v for k, v in self._df.iloc[row].to_dict().items()}
        if kind == "violations" or (kind is None and "created_at" in record and "violation_id" in record):
            return ViolationView(record)
        if kind == "sessions" or (kind is None and "first_seen" in record):
            return SessionView(record)
        raise ValueError("card() shows rows of thoth_nb.violations() or thoth_nb.sessions()")


def _register(pd: Any) -> None:
    """Register `DataFrame.thoth` (once, when pandas is first needed here or already imported)."""
    global _registered
    from pandas.api.extensions import register_dataframe_accessor

    if not isinstance(getattr(pd.DataFrame, "thoth", None), type) and "thoth" not in getattr(
            pd.DataFrame, "_accessors", set()):
        register_dataframe_accessor("thoth")(ThothAccessor)
    _registered = True


if "pandas" in sys.modules:  # else `_pd()` registers it: importing this module stays cheap
    _register(_pd())
