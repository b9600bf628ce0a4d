"""Read rows of a SQLite file straight into typed Arrow with ADBC, and the warm reader process that does it.

adbc-driver-sqlite bundles its own SQLite library. Two SQLite libraries in one process do not share their
POSIX-lock bookkeeping: closing an ADBC connection drops the locks this process's `sqlite3` connections
hold on the same file ("disk I/O error" on their next read, and a WAL file at risk). So `frames.py` imports
this module in-process only for store files nothing here holds open; for a store the process does hold
open it runs this file as a script, a reader child that stays up between reads (starting Python with
pyarrow and ADBC costs about a second, more than the read itself).

The script imports only pyarrow and the low-level ADBC driver (not its DB-API module, which pulls in pandas),
never thoth_nb: it runs by path with `python -P`, so nothing from the parent's package is imported there.
Protocol: one JSON job per stdin line -> one JSON reply per stdout line; the table goes to the Arrow IPC file
the job names (on /dev/shm when there is one), which the parent memory-maps. A job with "warm" reads nothing
back: it opens the connections a later read uses and runs its (cheap) queries through them, so the pages of
the file are in the OS page cache and mapped in this process before the user asks (see `warm`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

if __name__ == "__main__":
    # The reader child uses no numpy, but pyarrow imports it when it can: 0.13 s, and its BLAS threads
    # start and spin, ~0.17 s of CPU in all, taken from the first read of a fresh kernel on 2 CPUs.
    # pyarrow 16+ works without it; an older one that insists gets it back.
    sys.modules["numpy"] = None  # type: ignore[assignment]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        del sys.modules["numpy"]

import pyarrow as pa
import pyarrow.compute as pc

#: Rows per Arrow batch from the driver: its default (1024) makes ~1000 chunks per million rows, each
#: with its own dictionary to merge later; large batches read ~25% faster (CPU, measured 4k to 1M rows).
BATCH_ROWS = 1 << 20
_DICT = pa.dictionary(pa.int32(), pa.string())


def file_identity(path: str) -> tuple[int, int]:
    import os

    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


class Connections:
    """Open ADBC connections of the reader child, one per (file, worker), kept between reads: a fresh
    connection maps the file afresh and pays its page faults again (~0.2 s of a million-row read).
    A file replaced at the same path (another inode) gets new connections. Only the child keeps
    connections; in-process reads close theirs at once (see the module docstring)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], tuple[tuple[int, int], Any, Any]] = {}

    def get(self, path: str, worker: int) -> Any:
        identity = file_identity(path)
        found = self._open.get((path, worker))
        if found is not None and found[0] == identity:
            return found[2]
        if found is not None:
            _close(found[1], found[2])
        db, conn = _connect(path)
        self._open[(path, worker)] = (identity, db, conn)
        return conn

    def close(self) -> None:
        for _, db, conn in self._open.values():
            _close(db, conn)
        self._open.clear()


def read(path: str, queries: Sequence[tuple[str, Sequence[Any]]], *, times: Sequence[str] = (),
         categories: Sequence[str] = (), connections: Connections | None = None) -> pa.Table:
    """The concatenated results of `queries` (one connection and thread each), typed on the way: `times`
    columns (RFC 3339 text) as timestamp[us, UTC], `categories` dictionary-encoded (pandas categoricals
    without a second pass). A time column in another text format stays text (the caller parses it).
    With `connections` (the reader child) connections stay open for the next read."""
    def one(worker: int) -> pa.Table:
        sql, params = queries[worker]
        if connections is not None:
            return _typed(_query(connections.get(path, worker), sql, params), times, categories)
        db, conn = _connect(path)
        try:
            return _typed(_query(conn, sql, params), times, categories)
        finally:
            _close(db, conn)

    if len(queries) == 1:
        return one(0)
    with ThreadPoolExecutor(len(queries), thread_name_prefix="thoth-nb-read") as pool:
        tables = list(pool.map(one, range(len(queries))))
    return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()


class Snapshot:
    """The last big read of the reader child, kept so the next read of the same rows reads only the rows
    added since (a million rows without decoding them again: ~2 s of CPU).

    Exact because of what the store guarantees: `events.seq` is AUTOINCREMENT and never written by
    hand, and rows are never updated, so the rows at or below a seq can only disappear (retention). The
    mark of a snapshot - count and sum of seq of the tenant's rows at or below its seq, and the
    migrations applied - is taken before its read (a deletion racing the read leaves a mark that no
    longer matches, so it errs on reading afresh) and checked again before the snapshot is used; any
    difference, another file at the path, or another query (SQL and every parameter: tenant, filters,
    time bounds) reads everything afresh. One snapshot is kept, for the last query.

    `spec`: {"sql": ranged SQL of the read, "params": its parameters before the (after, upto] range,
    "upto": the last seq of this read, "mark": [mark SQL, [tenant]]}; the mark SQL takes ?1 tenant,
    ?2 this read's upto, ?3 the snapshot's, and returns (count, sum) at ?3, (count, sum) at ?2, and
    anything else that must not change."""

    def __init__(self) -> None:
        self._last: tuple[tuple[Any, ...], int, list[Any], pa.Table] | None = None
        #: (connection, its PRAGMA data_version) taken before the snapshot's read: unchanged at the next
        #: read means no connection of any process committed to the file since, so the snapshot holds as
        #: it is, without the mark's walk of the tenant's index entries (~0.3 s per million rows)
        self._version: tuple[Any, int] | None = None
        self.reused = 0  # rows of the last read that came from the snapshot

    def read(self, path: str, queries: Sequence[tuple[str, Sequence[Any]]], spec: dict[str, Any], *,
             times: Sequence[str], categories: Sequence[str], connections: Connections) -> pa.Table:
        """The rows of `queries` (the seq ranges of spec's SQL up to spec["upto"]), as the snapshot plus
        the rows after it when the snapshot still holds, else read in full."""
        sql, params, upto = spec["sql"], list(spec["params"]), int(spec["upto"])
        key = (path, file_identity(path), sql, json.dumps([params, list(times), list(categories)]))
        last, self._last = self._last, None
        usable = last is not None and last[0] == key and last[1] <= upto
        since = last[1] if last is not None and usable else upto
        mark_sql, mark_params = spec["mark"][0], list(spec["mark"][1])
        self.reused = 0
        conn = connections.get(path, 0)
        version = (conn, _data_version(conn))
        untouched, self._version = version == self._version, version
        if last is not None and usable and last[1] == upto and untouched:
            self._last = last
            self.reused = last[3].num_rows
            return last[3]
        if not usable and spec.get("plain"):
            # nothing to check: the mark of what is read comes from the rows themselves (all the tenant's
            # rows up to `upto`: their count and seq sum), which skips a walk of the index before the read
            # and is exact even when a deletion races it
            table = read(path, queries, times=times, categories=categories, connections=connections)
            migrations = _query(connections.get(path, 0), spec["migrations"], []).to_pylist()[0]
            self._last = (key, upto, [*seq_mark(table), *migrations.values()], table)
            return table
        try:
            row = list(_query(connections.get(path, 0), mark_sql, [*mark_params, upto, since]).to_pylist()[0].values())
        except Exception:  # a store without what the mark reads: no snapshot, plain reads
            return read(path, queries, times=times, categories=categories, connections=connections)
        then, now = [row[0], row[1], *row[4:]], row[2:]
        table = None
        if last is not None and usable and then == last[2]:
            table = last[3]
            self.reused = table.num_rows
            if upto > since:  # (a tail without rows adds nothing; its columns may be untyped)
                tail = read(path, [(sql, [*params, since, upto])], times=times, categories=categories,
                            connections=connections)
                if tail.num_rows:
                    table = pa.concat_tables([table, tail], promote_options="permissive").unify_dictionaries()
                if table.num_columns and table.column(0).num_chunks > 16:
                    table = table.combine_chunks().unify_dictionaries()
        if table is None:
            table = read(path, queries, times=times, categories=categories, connections=connections)
        self._last = (key, upto, now, table)
        return table


def _data_version(conn: Any) -> int:
    return int(_query(conn, "PRAGMA data_version", []).column(0)[0].as_py())


def seq_mark(table: pa.Table) -> list[int]:
    """[count, sum of seq] of a read's rows: the mark of the rows it covers when it read all of them."""
    if not table.num_rows:
        return [0, 0]
    return [table.num_rows, int(pc.sum(table.column("seq")).as_py())]


def warm(path: str, queries: Sequence[tuple[str, Sequence[Any]]], connections: Connections) -> None:
    """Run `queries` (one per worker, each on the connection that worker's reads use) and drop the results.

    The parent sends one `SELECT count(*) ... WHERE seq > ? AND seq <= ?` per worker range: SQLite walks
    the leaf pages of that rowid range without decoding a column (~0.15 s CPU per million rows) and,
    through the connection's mmap, leaves each page read from disk and mapped. A first read in a fresh
    reader otherwise pays for both, on top of starting Python with pyarrow and ADBC: measured 0.35-0.45 s
    CPU of page faults per million rows with the file already in the page cache, ~5 s more with it on disk.
    """
    def one(worker: int) -> None:
        sql, params = queries[worker]
        _query(connections.get(path, worker), sql, params)

    if len(queries) == 1:
        one(0)
        return
    with ThreadPoolExecutor(len(queries), thread_name_prefix="thoth-nb-warm") as pool:
        list(pool.map(one, range(len(queries))))


def _connect(path: str) -> tuple[Any, Any]:
    import adbc_driver_manager as dm
    import adbc_driver_sqlite

    db = adbc_driver_sqlite.connect(path)
    try:
        conn = dm.AdbcConnection(db)
    except BaseException:
        db.close()
        raise
    for pragma in ("PRAGMA busy_timeout=10000",  # parallel readers may meet the WAL writer
                   "PRAGMA mmap_size=8589934592"):  # scan through mmap: fewer copies, ~15% faster
        with dm.AdbcStatement(conn) as stmt:
            stmt.set_sql_query(pragma)
            stmt.execute_update()
    return db, conn


def _close(db: Any, conn: Any) -> None:
    try:
        conn.close()
    finally:
        db.close()


def _query(conn: Any, sql: str, params: Sequence[Any]) -> pa.Table:
    import adbc_driver_manager as dm

    with dm.AdbcStatement(conn) as stmt:
        stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        stmt.set_sql_query(sql)
        if params:
            names = [f"p{i}" for i in range(len(params))]
            stmt.bind(*_export(pa.record_batch([pa.array([p]) for p in params], names=names)))
        stream, _ = stmt.execute_query()
        return pa.RecordBatchReader._import_from_c(stream.address).read_all()


def _export(batch: pa.RecordBatch) -> tuple[Any, Any]:
    import adbc_driver_manager as dm

    array, schema = dm.ArrowArrayHandle(), dm.ArrowSchemaHandle()
    batch._export_to_c(array.address, schema.address)
    return array, schema


def _typed(table: pa.Table, times: Sequence[str], categories: Sequence[str]) -> pa.Table:
    columns = []
    for name in table.column_names:
        column = table[name]
        if name in times and not pa.types.is_timestamp(column.type):
            try:
                column = pc.cast(column, pa.timestamp("us", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # not the store's own format: left as text for the caller's slower parser
        elif name in categories and not pa.types.is_dictionary(column.type):
            column = column.cast(pa.string()).dictionary_encode()
        elif column.null_count == len(column) and pa.types.is_int64(column.type):
            # no value to infer a type from (no rows in this range, or a column NULL throughout): the
            # driver says int64, which would not concatenate with another range's text
            column = pa.nulls(len(column))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def jobs(fd: int = 0) -> Iterator[tuple[bytes, bool]]:
    """(line, another job already waiting) for each line on `fd`, until it closes. Read unbuffered, so
    "waiting" is exact: (part of) a later line already read here, or bytes in the pipe."""
    import os
    import select

    pending = b""
    while True:
        while b"\n" not in pending:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        yield line, bool(pending) or bool(select.select([fd], [], [], 0)[0])


def _read_job(job: dict[str, Any], connections: Connections, snapshot: Snapshot) -> pa.Table:
    queries = [(q[0], q[1]) for q in job["queries"]]
    times, categories = job.get("times", ()), job.get("categories", ())
    if job.get("snapshot"):
        return snapshot.read(job["path"], queries, job["snapshot"], times=times, categories=categories,
                             connections=connections)
    return read(job["path"], queries, times=times, categories=categories, connections=connections)


def serve() -> None:
    """The reader child: one job per stdin line until stdin closes. A warm job with a read already
    waiting behind it is skipped: the read pays for the same pages itself. A warm job with a "prefetch"
    read does that read (keeping it as the snapshot for the read the user is likely to ask for first)
    instead of only walking the pages."""
    connections = Connections()
    snapshot = Snapshot()
    for line, waiting in jobs():
        reply: dict[str, Any]
        try:
            job = json.loads(line)
            if job.get("warm"):
                if not waiting and job.get("prefetch"):
                    _read_job({"path": job["path"], **job["prefetch"]}, connections, snapshot)
                elif not waiting:
                    warm(job["path"], [(q[0], q[1]) for q in job["queries"]], connections)
                reply = {"ok": True, "rows": 0, "skipped": waiting}
            else:
                table = _read_job(job, connections, snapshot)
                with pa.OSFile(job["out"], "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
                reply = {"ok": True, "rows": table.num_rows, "reused": snapshot.reused if job.get("snapshot") else 0}
        except Exception as exc:  # reported to the parent, which falls back to sqlite3
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    connections.close()


if __name__ == "__main__":
    serve()
