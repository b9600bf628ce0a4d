"""Big `events()` reads kept on disk as Arrow IPC files, so a fresh process's first read is fast.

A full read of a million rows costs a fresh process ~4-5 s (starting the reader child, decoding every
row); mapping a file written by an earlier process and converting it costs well under one. Files live in
`$THOTH_HOME/frames-cache/` (folder 0700, files 0600), one per read key: the store file (resolved path,
device and inode), the exact SQL and every parameter (tenant, filters, time bounds). The file name is a
hash of the key; the full key is in the schema metadata and compared on load.

A file is trusted only while the store shows its rows are still the ones it holds, checked in this process
with the stdlib sqlite3 (read-only, one walk of the tenant's index entries): the count and sum of seq of
the tenant's rows at or below the file's last seq, the event id of the last of them and the migrations
applied. Exact because `events.seq` is AUTOINCREMENT and event rows are never updated, only deleted
(retention): the rows at or below a seq can only disappear, which changes the count. The mark is taken
before the read it describes, so a deletion racing the read leaves a mark that no longer matches (it errs
on reading afresh). Anything off - no match, another key, another schema, a corrupt or truncated file -
and the file is deleted and the rows read as without it. Rows added after the file are read on top.

pyarrow only here (never ADBC: this runs in the process that holds the store open). THOTH_FRAME_CACHE=0
turns it off (nothing read or written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: bump when what a file holds changes meaning (columns, typing)
FORMAT = 1
#: keys kept (the most recently used); older files are deleted
KEEP = 3
#: a hit rewrites its file when this many rows (or a tenth of the file's) came from the store on top
REFRESH_ROWS = 50_000
_META = b"thoth_nb.frame_cache"
#: count, sum and last of seq of the tenant's rows at or below ?3 (the file's last seq) - one walk of the
#: tenant's entries in an index that leads with tenant_id (`+seq`: not the rowid range, which would read
#: every row of the table) - and in (?3, ?2] (the rows after it, up to this read's: a rowid range, few rows),
#: in one statement (one snapshot of the store); the migrations; the event ids of the two last rows
MARK_SQL = (
    "SELECT a.n, a.s, b.n, b.s, (SELECT count(*) FROM schema_migrations), "
    "(SELECT event_id FROM events WHERE seq = a.l), (SELECT event_id FROM events WHERE seq = coalesce(b.l, a.l)) "
    "FROM (SELECT count(*) AS n, coalesce(sum(seq), 0) AS s, max(seq) AS l FROM events "
    "WHERE tenant_id = ?1 AND +seq <= ?3) AS a, "
    "(SELECT count(*) AS n, coalesce(sum(seq), 0) AS s, max(seq) AS l FROM events NOT INDEXED "
    "WHERE seq > ?3 AND seq <= ?2 AND tenant_id = ?1) AS b")


def enabled() -> bool:
    """Off with THOTH_FRAME_CACHE=0 (or false/no/off); needs pyarrow."""
    if os.environ.get("THOTH_FRAME_CACHE", "").lower() in ("0", "false", "no", "off"):
        return False
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def folder() -> Path:
    from thoth_nb._config import thoth_home

    return thoth_home() / "frames-cache"


def key(path: Path, sql: str, params: Sequence[Any], times: Sequence[str], categories: Sequence[str]) -> str:
    """The read's key as canonical JSON: the store file (path, device, inode), the SQL, every parameter."""
    stat = os.stat(path)
    return json.dumps({"format": FORMAT, "path": str(Path(path).resolve()), "file": [stat.st_dev, stat.st_ino],
                       "sql": sql, "params": list(params), "times": list(times), "categories": list(categories)},
                      sort_keys=True, separators=(",", ":"), default=str)


def file_for(read_key: str) -> Path:
    return folder() / f"events-{hashlib.sha256(read_key.encode()).hexdigest()[:32]}.arrow"


def marks(path: Path, tenant: str, then: int, now: int) -> tuple[list[Any], list[Any]]:
    """(the mark at seq `then`, the mark at seq `now`); sqlite3.Error when the store cannot give them."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(MARK_SQL, (tenant, now, then)).fetchone()
    finally:
        conn.close()
    return [row[0], row[1], row[4], row[5]], [row[0] + row[2], row[1] + row[3], row[4], row[6]]


def load(read_key: str) -> tuple[Any, dict[str, Any]] | None:
    """(the table, its metadata) of the key's file, mapped (not copied), structurally validated; None when
    there is none. A file that cannot be read or holds another key is deleted."""
    import pyarrow as pa

    target = file_for(read_key)
    try:
        source = pa.memory_map(str(target))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        drop(target)
        return None
    try:
        with source:
            table = pa.ipc.open_file(source).read_all()  # buffers keep the mapping after close
        meta = json.loads((table.schema.metadata or {}).get(_META, b"null"))
        if not isinstance(meta, dict) or meta.get("key") != read_key:
            raise ValueError("another key")
        table.validate(full=True)  # offsets and lengths: a damaged file must fail here, not in pandas
        if int(meta["rows"]) != table.num_rows or not isinstance(meta.get("mark"), list):
            raise ValueError("row count")
    except Exception:  # corrupt, truncated, another format or key: never used, read afresh
        drop(target)
        return None
    try:
        os.utime(target)  # most recently used: kept by `prune`
    except OSError:
        pass
    return table.replace_schema_metadata(None), meta


def save(read_key: str, table: Any, upto: int, mark: list[Any], base: Path | None = None) -> None:
    """Write `table` (the key's rows up to seq `upto`, whose mark was `mark` before they were read) as
    the key's file: a temporary file renamed over it, so a reader sees the old file or the new one."""
    import pyarrow as pa

    base = folder() if base is None else base
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    meta = json.dumps({"key": read_key, "upto": int(upto), "mark": mark, "rows": table.num_rows,
                       "written_at": time.time()})
    table = table.replace_schema_metadata({_META: meta.encode()})
    target = base / file_for(read_key).name
    temp = base / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        # on disk before it gets its name: after a crash the name holds a whole file or none (a file
        # with zeroed pages but its footer intact would pass `load`'s checks; ~0.15 s per million rows)
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    prune(base)


_saving: list[Any] = []  # [executor, futures not yet done]
_saving_lock = threading.Lock()


def save_later(read_key: str, table: Any, upto: int, mark: list[Any]) -> None:
    """`save` on a background thread (one, in order): writing ~90 MB per million rows with an fsync
    (~0.3 s) is not on the caller's path, whose table is immutable. The thread is joined at interpreter
    exit (`concurrent.futures` does), so a process that ends right after still leaves a whole file;
    `wait` waits for what is queued (tests, and a process about to read the folder itself)."""
    from concurrent.futures import ThreadPoolExecutor

    base = folder()  # now: THOTH_HOME may change before the thread runs

    def run() -> None:
        try:
            save(read_key, table, upto, mark, base)
        except Exception as exc:  # a full disk, a read-only home: the read itself stood
            logging.getLogger("thoth_nb").debug("thoth: frame cache not written (%s)", exc)

    with _saving_lock:
        if not _saving:
            _saving.extend([ThreadPoolExecutor(1, thread_name_prefix="thoth-nb-frame-cache"), []])
        futures = [f for f in _saving[1] if not f.done()]
        futures.append(_saving[0].submit(run))
        _saving[1] = futures


def wait(timeout: float | None = None) -> None:
    """Wait until the files queued by `save_later` are written (or failed)."""
    from concurrent.futures import wait as wait_all

    with _saving_lock:
        futures = list(_saving[1]) if _saving else []
    wait_all(futures, timeout=timeout)


def drop(target: Path) -> None:
    try:
        target.unlink(missing_ok=True)
    except OSError:
        pass


def prune(base: Path, keep: int | None = None) -> None:
    """Keep the `keep` (`KEEP`) most recently used files; delete the rest and temporary files older than an
    hour."""
    keep = KEEP if keep is None else keep
    files: list[tuple[float, Path]] = []
    now = time.time()
    for entry in base.iterdir():
        try:
            mtime = entry.stat().st_mtime
        except OSError:
            continue
        if entry.name.startswith(".tmp-"):
            if now - mtime > 3600:
                drop(entry)
        elif entry.name.startswith("events-") and entry.suffix == ".arrow":
            files.append((mtime, entry))
    for _, entry in sorted(files, reverse=True)[keep:]:
        drop(entry)
