"""Figure 5: ingest into SQLite directly, and a million stored events to a DataFrame and analytics.

Ingest: real SDK events (built by `_flow.build_event` from governed calls) into `SQLiteStore.ingest_events`
in batches of 500, beside a bare `executemany` of the same events (id + JSON body, one commit per
batch) into a plain table with the same PRAGMAs: the floor any store on SQLite pays.
Frames: `thoth_nb.analytics.frames.events()` vs a bare `pd.read_sql` of the same rows and columns,
on a synthetic store (`benchmarks.notebook_data.make_store`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks import reference as ref
from benchmarks._core import Result, Sizes, interleaved, median
from benchmarks.embedded import governed_tool, paused_emitter, thoth_home

GROUP = "store"
BATCH = 500


def real_events(home: Path, n: int) -> list[dict[str, Any]]:
    """`n` PROTOCOL §5 events as the SDK builds them (PRE and POST of governed calls)."""
    from thoth_nb._flow import build_event

    tool = governed_tool(home)
    paused = paused_emitter(tool)
    path, mode = ref.ARGS
    for _ in range((n + 1) // 2):
        tool(path, mode)
    items = list(paused._queue)[:n]
    paused._queue.clear()
    paused.shutdown()
    return [dict(build_event(item)) for item in items]


def _bare_db(path: Path) -> tuple[sqlite3.Connection, Any]:
    """The floor: the same PRAGMAs and the same background checkpointing as the server's store."""
    from thoth_nb.engine.store import _BACKSTOP_PAGES, PAGE_SIZE, _Checkpointer

    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-16384")
    db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)")
    return db, _Checkpointer(path, 0.2, 5.0)


def bench_ingest(sizes: Sizes) -> list[Result]:
    from thoth_nb import _json
    from thoth_nb.engine.store import SQLiteStore

    with thoth_home() as home:
        events = real_events(home, sizes.ingest_events)
        store = SQLiteStore(home / "ingest.db")
        store.checkpoint_in_background()  # as `thoth-nb serve` opens it
        bare, bare_checkpointer = _bare_db(home / "bare.db")
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        per_round = max(1, len(batches) // 10)
        rounds = [batches[i : i + per_round] for i in range(0, len(batches), per_round)]
        cursor = {"store": 0, "bare": 0}

        def run_store() -> float:
            chunk = rounds[cursor["store"]]
            cursor["store"] += 1
            t0 = time.perf_counter()
            for batch in chunk:
                store.ingest_events(batch)
            return time.perf_counter() - t0

        def run_bare() -> float:
            chunk = rounds[cursor["bare"]]
            cursor["bare"] += 1
            t0 = time.perf_counter()
            for batch in chunk:
                dumps = _json.dumps
                rows = [(e["event_id"], dumps(e)) for e in batch]
                bare.execute("BEGIN IMMEDIATE")
                bare.executemany("INSERT INTO events (event_id, body) VALUES (?, ?)", rows)
                bare.execute("COMMIT")
            return time.perf_counter() - t0

        samples = interleaved({"store": run_store, "bare": run_bare}, len(rounds))
        stored = store.count_events(ref.AGENT["tenant_id"])
        store.close()
        bare_checkpointer.stop()
        bare.close()
    if stored != len(events):
        raise RuntimeError(f"{len(events)} events ingested but {stored} stored")
    rate = len(events) / sum(samples["store"])
    bare_rate = len(events) / sum(samples["bare"])
    return [Result(GROUP, "ingest into SQLite (SQLiteStore.ingest_events, batches of 500)", rate, "events/s",
                   bare_rate, "bare executemany of id+JSON, same batches", rate / bare_rate,
                   "≥ 40,000 events/s (the server's ingest target needs it)", rate >= 40_000,
                   f"{len(events):,} real SDK events; the store also dedupes, hash-chains and indexes them; "
                   "both checkpoint the WAL in a background thread, as the server does")]


class RowsFloor:
    """What SQLite alone costs to store `events` as the store stores them: their very rows (built once,
    untimed, by `SQLiteStore.ingest_events` into a scratch file) inserted into a fresh store's own table
    and indexes, 500 per transaction, with the store's multi-row INSERT, PRAGMAs and background
    checkpointer. No HTTP, parse, check, dedupe lookup or hash: no ingest of these events on this
    machine can be faster. `insert(part)` times one part of them; parts continue the same file."""

    def __init__(self, home: Path, events: list[dict[str, Any]]) -> None:
        from thoth_nb.engine.store import _EVENT_COLUMNS, SQLiteStore

        scratch = SQLiteStore(home / "floor-rows.db")
        for i in range(0, len(events), BATCH):
            scratch.ingest_events(events[i : i + BATCH])
        self.rows = scratch._db.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq").fetchall()
        scratch.close()
        if len(self.rows) != len(events):
            raise RuntimeError(f"{len(events)} events but {len(self.rows)} rows to insert")
        self.store = SQLiteStore(home / "floor.db")
        self.store.checkpoint_in_background()  # as `thoth-nb serve` opens it

    def insert(self, start: int, stop: int) -> float:
        from thoth_nb.engine.store import _INSERT_ROWS, _insert_events_sql

        batches = []
        for i in range(start, stop, BATCH):
            batch = self.rows[i : min(i + BATCH, stop)]
            batches.append([(_insert_events_sql(len(part)), [v for row in part for v in row])
                            for part in (batch[j : j + _INSERT_ROWS] for j in range(0, len(batch), _INSERT_ROWS))])
        t0 = time.perf_counter()
        for statements in batches:
            with self.store.transaction() as db:
                for sql, values in statements:
                    db.execute(sql, values)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.store.close()


def bench_frames(sizes: Sizes) -> list[Result]:
    try:
        from thoth_nb.analytics import frames
    except ImportError:
        return [Result.na(GROUP, "1M events → DataFrame", "thoth_nb.analytics.frames not available", "≤ 2 s")]
    import pandas as pd

    from benchmarks.notebook_data import make_store

    n = sizes.frame_events
    rows: list[Result] = []
    with thoth_home() as home:
        t0 = time.perf_counter()
        store = make_store(home / "frames.db", n)
        made = time.perf_counter() - t0
        path = store.path
        columns = ("seq, event_id, occurred_at, session_id, agent_id, user_id, tool_name, event_type, decision, "
                   "violation_id")
        shapes: dict[str, tuple[int, int]] = {}

        def ours() -> float:
            t = time.perf_counter()
            df = frames.events(store=store, tenant_id="local")
            elapsed = time.perf_counter() - t
            shapes["ours"] = df.shape
            return elapsed

        def bare() -> float:
            t = time.perf_counter()
            with sqlite3.connect(path) as conn:
                df = pd.read_sql(f"SELECT {columns} FROM events WHERE tenant_id = ? ORDER BY seq", conn,
                                 params=("local",))
            elapsed = time.perf_counter() - t
            conn.close()
            shapes["bare"] = df.shape
            return elapsed

        reps = 2 if not sizes.smoke else 1
        samples = interleaved({"ours": ours, "bare": bare}, reps)
        if shapes["ours"][0] != n or shapes["bare"][0] != n:
            raise RuntimeError(f"expected {n} rows, got {shapes}")
        mine, theirs = median(samples["ours"]), median(samples["bare"])
        label = f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"
        target_ok = mine <= 2.0 * n / 1_000_000 if n < 1_000_000 else mine <= 2.0
        rows.append(Result(GROUP, f"{label} stored events → DataFrame (thoth_nb.events)", mine, "s", theirs,
                           "pd.read_sql of the same rows", mine / theirs, "≤ 2 s per 1M rows", target_ok,
                           f"dtypes: tz-aware time, categoricals; args lazy; store of {n:,} built in {made:.1f} s"))
        df = frames.events(store=store, tenant_id="local")
        t = time.perf_counter()
        df.thoth.decision_counts()
        df.thoth.decision_counts(by="agent_id")
        df.thoth.top_blocked_tools()
        df.thoth.calls_by_user()
        analytics = time.perf_counter() - t
        rows.append(Result(GROUP, f"analytics over {label} events (decision counts x2, top blocked, by user)",
                           analytics, "s", None, "", None, "", None, "df.thoth accessor on the frame above"))
        rows.append(_replay(sizes, df, n))
        store.close()
    return rows


REPLAY_POLICY = """\
version: 1
default: allow
rules:
  - {id: no-deletes, tool: delete_file, decision: block, reason: deletes need a ticket}
  - {id: mail-review, tool: send_email, decision: step_up, reason: outbound mail is reviewed}
  - {id: data-dir, tool: read_file, when: {path: {glob: "/data/9*"}}, decision: step_up}
"""


def _replay(sizes: Sizes, df: Any, n: int) -> Result:
    """Re-decide recorded calls under a candidate policy (thoth_nb.analytics.replay)."""
    figure = "replay: recorded calls re-decided under a candidate policy"
    try:
        from thoth_nb.analytics.replay import replay
    except ImportError:
        return Result.na(GROUP, figure, "thoth_nb.analytics.replay not available")
    subset = df.iloc[: min(len(df), 200_000 if not sizes.smoke else len(df))]
    t = time.perf_counter()
    out = replay(subset, REPLAY_POLICY, changes_only=False)
    elapsed = time.perf_counter() - t
    decided = len(out)
    if decided == 0:
        raise RuntimeError("replay decided no calls")
    return Result(GROUP, figure, decided / elapsed, "decisions/s", None, "", None, "", None,
                  f"{decided:,} calls (the PRE events of the first {len(subset):,} of {n:,} stored events), "
                  "arguments loaded from the store, end to end")


BENCHES = [bench_ingest, bench_frames]
