"""PostgreSQL figures (issue 10): ingest into `PostgresStore`, and `/v1/enforce` throughput of two
`thoth-nb serve` replicas against one, all on one PostgreSQL.

Needs a database URL in THOTH_BENCH_DATABASE_URL (or THOTH_TEST_DATABASE_URL, as `.ci/start-postgres`
exports it); every run works in a fresh schema and drops it. Run alone with
`python -m benchmarks.pg_scale [--smoke]`; the runner can import `BENCHES`.

* Ingest: real SDK events (benchmarks.store.real_events, with fresh time-ordered UUIDv7 ids as the SDK
  makes them) through `PostgresStore.ingest_events` in batches of 500 (advisory locks, chain heads,
  SHA-256 chain, binary `COPY` with the unique index as the duplicate check, synchronous commit),
  beside a bare text `COPY` of the same (event_id, body) rows into an unindexed table: the floor. The
  note gives the CPU per batch of the writer threads and of their PostgreSQL backends (from /proc,
  when PostgreSQL runs on this machine), which say more than wall time on a shared machine.
* Enforce: `thoth-nb serve --db postgresql://...` processes, loaded by `wrk` (one process per replica,
  connections split evenly) with a distinct session per request slot. Two policies: the reference
  policy (ALLOW touches no storage) and the same with a per-session rate limit (every decision is one
  atomic upsert in PostgreSQL, the shared state replicas need).
* Hold wake-up: a client long-polls its hold on replica 2 while a reviewer approves it on replica 1;
  time from the approval's reply to the long-poll's answer (from sending it, in the note), with
  LISTEN/NOTIFY (`thoth-nb serve`) beside the same app over a store that pushes nothing and re-reads
  every 50 ms (`--serve-polling`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import reference as ref
from benchmarks._core import Result, Sizes, median, process_cpu

GROUP = "postgres"
BATCH = 500
ROOT = Path(__file__).resolve().parent.parent

RATE_LIMIT_YAML = ref.POLICY_YAML + """\
rate_limits:
  - {id: per-session, tool: "*", max_calls: 1000000, per_seconds: 60, decision: block}
"""


def database_url() -> str | None:
    return os.environ.get("THOTH_BENCH_DATABASE_URL") or os.environ.get("THOTH_TEST_DATABASE_URL") or None


def available() -> str | None:
    """Why the PostgreSQL figures cannot run, or None."""
    if not database_url():
        return "no PostgreSQL (set THOTH_BENCH_DATABASE_URL or run .ci/start-postgres)"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg not installed ({exc})"
    return None


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A database URL whose search_path is a new schema, dropped afterwards."""
    import psycopg

    base = database_url()
    assert base
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- ingest ---------------------------------------------------------------------------------------


def _events(n: int, sessions: int) -> list[dict[str, Any]]:
    """Real SDK events, spread over `sessions` sessions with fresh ids (as many agents would send)."""
    from benchmarks.embedded import thoth_home
    from benchmarks.store import real_events
    from thoth_nb._flow import _new_uuid

    with thoth_home() as home:
        base = real_events(home, min(n, 2000))
    out = []
    for i in range(n):
        event = dict(base[i % len(base)])
        event["event_id"] = f"{event['tenant_id']}:{_new_uuid()}"  # time-ordered UUIDv7, as the SDK makes
        event["session_id"] = f"bench-{i % sessions}"
        out.append(event)
    return out


def _run_writers(work: list[list[Any]], fn: Any, backends: Sequence[int] = ()) -> tuple[float, float, float]:
    """Run `fn(batch)` over each writer's list of batches, one thread per writer. Returns wall seconds,
    the writer threads' CPU seconds and the CPU seconds of the PostgreSQL backends `backends` (pids)."""
    import threading

    errors: list[BaseException] = []
    cpu: list[float] = []

    def run(batches: list[Any]) -> None:
        c0 = time.thread_time()
        try:
            for batch in batches:
                fn(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        cpu.append(time.thread_time() - c0)

    threads = [threading.Thread(target=run, args=(w,)) for w in work]
    b0 = sum(process_cpu(p) for p in backends)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, sum(cpu), sum(process_cpu(p) for p in backends) - b0


def _backend_pids(store: Any, count: int) -> list[int]:
    """Open `count` pooled connections at once (so the timed runs open none) and return their backend
    pids, whose CPU time is readable from /proc when PostgreSQL runs on this machine (else it reads 0)."""
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(store._pool.connection()) for _ in range(count)]
        return [int(c.info.backend_pid) for c in conns]


def bench_pg_ingest(sizes: Sizes) -> list[Result]:
    figure = "ingest into PostgreSQL (PostgresStore.ingest_events, batches of 500)"
    why = available()
    if why is not None:
        return [Result.na(GROUP, figure, why, "≥ 20,000 events/s")]
    from thoth_nb import _json
    from thoth_nb.engine.store_pg import PostgresStore

    n = 4_000 if sizes.smoke else max(20_000, sizes.ingest_events // 2)
    rows: list[Result] = []
    for sessions, writers in ((1, 1), (50, 1), (50, 2)):
        events = _events(n, sessions)
        batches = [events[i: i + BATCH] for i in range(0, len(events), BATCH)]
        for k, batch in enumerate(batches):  # writer k % writers owns its sessions (as separate agents would)
            for event in batch:
                event["session_id"] += f"-w{k % writers}"
        with fresh_schema() as url:
            store = PostgresStore(url, pool_size=max(2, writers))
            with store.transaction() as db:
                db.execute("CREATE TABLE bare (event_id TEXT, body TEXT)")

            def ours(batch: list[dict[str, Any]], store: Any = store) -> None:
                result = store.ingest_events(batch)
                assert result.accepted == len(batch), result

            def bare(batch: list[dict[str, Any]], store: Any = store) -> None:
                with store.transaction() as db, db.cursor() as cur, \
                        cur.copy("COPY bare (event_id, body) FROM STDIN") as copy:
                    for event in batch:
                        copy.write_row((event["event_id"], _json.dumps(event)))

            backends = _backend_pids(store, max(2, writers))
            ours_t = [0.0, 0.0, 0.0]  # wall, client CPU, PostgreSQL backend CPU (seconds)
            bare_t = [0.0, 0.0, 0.0]
            step = max(writers, len(batches) // 8)
            for r, start in enumerate(range(0, len(batches), step)):  # interleaved rounds
                work = [[batches[k] for k in range(start, min(start + step, len(batches))) if k % writers == w]
                        for w in range(writers)]
                for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                    acc, fn = (ours_t, ours) if which == 0 else (bare_t, bare)
                    for i, v in enumerate(_run_writers(work, fn, backends)):
                        acc[i] += v
            store.close()
        rate = len(events) / ours_t[0]
        floor = len(events) / bare_t[0]
        per = 1000 * BATCH / len(events)  # seconds over the run -> ms per batch
        cpu = (f"CPU per batch: {per * ours_t[1]:.1f} ms here + {per * ours_t[2]:.1f} ms PostgreSQL backend "
               f"(bare COPY: {per * bare_t[1]:.1f} + {per * bare_t[2]:.1f})" if ours_t[2] else
               f"CPU per batch here: {per * ours_t[1]:.1f} ms (bare COPY: {per * bare_t[1]:.1f})")
        rows.append(Result(
            GROUP, f"{figure}, {sessions} session{'s' if sessions > 1 else ''} per writer, {writers} writer"
            + ("s" if writers > 1 else ""), rate, "events/s", floor,
            "bare COPY of (event_id, body) into an unindexed table, same writers", None,
            "≥ 20,000 events/s", rate >= 20_000,
            f"{len(events):,} real SDK events (UUIDv7 ids); each batch: advisory locks and chain heads of its "
            f"sessions, SHA-256 chain, binary COPY into events (6 indexes; the unique one is the duplicate check; "
            f"lz4 bodies), 4 round trips, synchronous commit; {cpu}; load average {os.getloadavg()[0]:.1f}"))
    return rows


def _ingest_child(url: str, which: str, n: int, tag: str) -> dict[str, Any]:
    """One writer process (`--ingest-child`): `n` real SDK events of its own 50 sessions, in batches of 500,
    through `PostgresStore.ingest_events` ("ours") or a bare text COPY of (event_id, body) ("bare"); the
    first batch untimed, then "ready" on stdout and the rest once a line comes on stdin (all writers start
    together). Returns its [start, end] (wall clock), events timed and thread CPU seconds."""
    from thoth_nb import _json
    from thoth_nb.engine.store_pg import PostgresStore

    events = _events(n, 50)
    for event in events:
        event["session_id"] += f"-{tag}"
    batches = [events[i: i + BATCH] for i in range(0, len(events), BATCH)]
    store = PostgresStore(url, pool_size=1)

    def bare(batch: list[dict[str, Any]]) -> None:
        with store.transaction() as db, db.cursor() as cur, \
                cur.copy("COPY bare (event_id, body) FROM STDIN") as copy:
            for event in batch:
                copy.write_row((event["event_id"], _json.dumps(event)))

    def ours(batch: list[dict[str, Any]]) -> None:
        result = store.ingest_events(batch)
        assert result.accepted == len(batch), result

    fn = ours if which == "ours" else bare
    fn(batches[0])
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.time(), time.thread_time()
    for batch in batches[1:]:
        fn(batch)
    out = {"start": start, "end": time.time(), "events": BATCH * (len(batches) - 1), "cpu": time.thread_time() - cpu}
    store.close()
    return out


def _run_processes(url: str, which: str, count: int, n: int, round_: int) -> tuple[float, int, float]:
    """`count` writer processes at once (`_ingest_child`); (wall seconds from the first start to the last
    end, events, their CPU seconds)."""
    import json

    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.pg_scale", "--ingest-child", url, which, str(n),
                               f"r{round_}p{k}{which}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
             for k in range(count)]
    for proc in procs:  # each builds its events and stores its first batch, then says so
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            for other in procs:
                other.kill()
            raise RuntimeError("an ingest child failed before it was ready")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"ingest child failed ({proc.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return wall, sum(int(o["events"]) for o in outs), sum(float(o["cpu"]) for o in outs)


def bench_pg_ingest_processes(sizes: Sizes) -> list[Result]:
    """Ingest from two writer processes at once, as two replicas on one PostgreSQL are (the issue's
    scale-out case): each has its own sessions, its own connection and its own CPU (no shared GIL)."""
    figure = "ingest into PostgreSQL (PostgresStore.ingest_events, batches of 500), 2 writer processes"
    why = available()
    if why is not None:
        return [Result.na(GROUP, figure, why, "≥ 20,000 events/s")]
    from thoth_nb.engine.store_pg import PostgresStore

    n = 2_000 if sizes.smoke else max(10_000, sizes.ingest_events // 2)
    rounds = 1 if sizes.smoke else 2
    ours_t, bare_t = [0.0, 0, 0.0], [0.0, 0, 0.0]
    with fresh_schema() as url:
        store = PostgresStore(url, pool_size=1)
        with store.transaction() as db:
            db.execute("CREATE TABLE bare (event_id TEXT, body TEXT)")
        store.close()
        for r in range(rounds):  # interleaved: ours first, then bare first
            for which in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
                acc = ours_t if which == "ours" else bare_t
                for i, v in enumerate(_run_processes(url, which, 2, n, r)):
                    acc[i] += v
    rate, floor = ours_t[1] / ours_t[0], bare_t[1] / bare_t[0]
    per = 1000 * BATCH / ours_t[1]
    return [Result(
        GROUP, figure, rate, "events/s", floor, "bare COPY of (event_id, body) into an unindexed table, 2 processes",
        None, "≥ 20,000 events/s", rate >= 20_000,
        f"{ours_t[1]:,} real SDK events (UUIDv7 ids) from 2 processes at once (as 2 replicas), 50 sessions each, "
        f"{rounds} interleaved rounds; same work per batch as the rows above; writer CPU per batch "
        f"{per * ours_t[2]:.1f} ms (bare COPY {1000 * BATCH / bare_t[1] * bare_t[2]:.1f}); "
        f"load average {os.getloadavg()[0]:.1f}")]


# -- enforce through replicas ---------------------------------------------------------------------


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds spent by the replicas, by PostgreSQL (all its processes) and by the load generator
    (wrk, children of this process) between `start()` and `stop()`."""

    def __init__(self, replica_pids: list[int]) -> None:
        self.replica_pids = replica_pids

    def _sample(self) -> tuple[float, float, float]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (sum(process_cpu(p) for p in self.replica_pids), sum(process_cpu(p) for p in _postgres_pids()),
                children.ru_utime + children.ru_stime)

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self) -> tuple[float, float, float]:
        t1 = self._sample()
        return t1[0] - self._t0[0], t1[1] - self._t0[1], t1[2] - self._t0[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def replicas(url: str, policy: Path, count: int, *, push: bool = True) -> Iterator[list[tuple[int, int]]]:
    """`count` real `thoth-nb serve --db <url>` processes; yields (port, pid) pairs once /readyz answers.
    `push=False`: the same app over a store opened with `hold_notifications=False` (long-polls re-read
    the store every 50 ms, the behaviour before LISTEN/NOTIFY), started by `serve_polling` below."""
    import httpx

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ports = [_free_port() for _ in range(count)]
    command = ([sys.executable, "-m", "thoth_nb.cli", "serve", "--db", url, "--policy", str(policy), "--log-level",
                "warning", "--port"] if push else [sys.executable, "-m", "benchmarks.pg_scale", "--serve-polling", url,
                                                   str(policy)])
    procs = [subprocess.Popen([*command, str(p)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for p in ports]
    try:
        for proc, port in zip(procs, ports, strict=True):
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"thoth-nb serve exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, trust_env=False).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"thoth-nb serve on port {port} did not get ready")
                time.sleep(0.1)
        yield [(port, proc.pid) for port, proc in zip(ports, procs, strict=True)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr:
                proc.stderr.close()


_WRK = """
local n = 0
local tid = 0
local template = [[{body}]]
setup = function(thread)
  thread:set("tid", tid)
  tid = tid + 1
end
request = function()
  n = n + 1
  local body = string.gsub(template, "SESSION", "s" .. {offset} .. "-" .. tid .. "-" .. (n % {sessions}))
  return wrk.format("POST", "/v1/enforce", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer {key}", ["User-Agent"] = "thoth-nb-bench"}}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("BADSTATUS %d\\n", summary.errors.status))
end
"""


def _wrk(ports: list[int], key: str, conns: int, seconds: float, sessions: int) -> tuple[float, int, str]:
    """Load every port at once (one wrk per port, connections split); total requests/s, errors, and what
    they were (wrk's socket error kinds: a "timeout" is a request not answered within its 2 s)."""
    from thoth_nb import _json

    body = _json.dumps({"agent_id": ref.AGENT["agent_id"], "tenant_id": ref.AGENT["tenant_id"],
                        "user_id": "system", "session_id": "SESSION", "approved_scope": ref.AGENT["approved_scope"],
                        "enforcement_mode": "step_up", "tool_name": "read_file",
                        "tool_args": {"path": ref.ARGS[0], "mode": ref.ARGS[1]}, "session_tool_calls": []})
    with tempfile.TemporaryDirectory(prefix="thoth-pg-wrk-") as tmp:
        procs = []
        for i, port in enumerate(ports):
            script = Path(tmp) / f"post{i}.lua"
            script.write_text(_WRK.format(body=body, key=key, sessions=sessions, offset=i))
            c = conns // len(ports)
            procs.append(subprocess.Popen(
                ["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{max(1, round(seconds))}s", "-s", str(script),
                 f"http://127.0.0.1:{port}/v1/enforce"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        total = 0.0
        errors = 0
        kinds: list[str] = []
        for proc in procs:
            out, err = proc.communicate(timeout=seconds + 60)
            match = re.search(r"Requests/sec:\s*([\d.]+)", out)
            if match is None:
                raise RuntimeError(f"wrk failed: {out}{err}")
            total += float(match.group(1))
            bad = re.search(r"BADSTATUS (\d+)", out)
            errors += int(bad.group(1)) if bad else 0
            if bad:
                kinds.append(f"{bad.group(1)} non-2xx")
            sock = re.search(r"Socket errors: (.*)", out)
            if sock:
                errors += sum(int(x) for x in re.findall(r"\d+", sock.group(1)))
                kinds.append(f"socket errors: {sock.group(1).strip()}")
    return total, errors, "; ".join(kinds)


def bench_pg_replicas(sizes: Sizes) -> list[Result]:
    figure = "/v1/enforce throughput, 2 replicas vs 1 on one PostgreSQL"
    why = available() or (None if shutil.which("wrk") else "wrk is not installed")
    if why is not None:
        return [Result.na(GROUP, figure, why, "≥ 1.5x or explained")]
    from thoth_nb.engine.store_pg import PostgresStore

    seconds = 1.0 if sizes.smoke else max(3.0, sizes.load_seconds)
    runs = 1 if sizes.smoke else 3
    conns = 16
    rows: list[Result] = []
    cpus = os.cpu_count() or 1
    for label, policy_text in (("reference policy (ALLOW: no store access)", ref.POLICY_YAML),
                               ("with a per-session rate limit (one upsert per decision)", RATE_LIMIT_YAML)):
        with fresh_schema() as url, tempfile.TemporaryDirectory(prefix="thoth-pg-") as tmp:
            policy = Path(tmp) / "policy.yaml"
            policy.write_text(policy_text)
            store = PostgresStore(url)
            _, key = store.create_api_key(ref.AGENT["tenant_id"], "agent", "bench")
            store.create_api_key(ref.AGENT["tenant_id"], "admin", "bench admin")  # no first-key banner
            store.close()
            rates: dict[int, list[float]] = {1: [], 2: []}
            cpu: dict[int, list[tuple[float, float, float, float]]] = {1: [], 2: []}  # µs/request + wall share
            with replicas(url, policy, 2) as started:
                ports = [port for port, _ in started]
                meter = CpuMeter([pid for _, pid in started])
                _wrk(ports, key, 4, 1.0, 100)  # warm-up both
                for r in range(runs):
                    for count in ((1, 2) if r % 2 == 0 else (2, 1)):
                        meter.start()
                        t0 = time.perf_counter()
                        rate, errors, kinds = _wrk(ports[:count], key, conns, seconds, 1000)
                        wall = time.perf_counter() - t0
                        used = meter.stop()
                        if errors:
                            raise RuntimeError(f"{errors} failed requests in the replica load test ({kinds})")
                        rates[count].append(rate)
                        requests = max(1.0, rate * seconds)
                        cpu[count].append((*(1e6 * u / requests for u in used), sum(used) / wall))
            one, two = median(rates[1]), median(rates[2])
            ratio = two / one
            # "explained": two replicas keep the machine's CPUs busy (≥ 90%), so the machine, not the
            # replicas or PostgreSQL, is what stops a second replica from doubling the rate
            saturated = median([c[3] for c in cpu[2]]) >= 0.9 * cpus

            def split(count: int, cpu: dict[int, list[tuple[float, float, float, float]]] = cpu) -> str:
                rep, pg, gen, busy = (median([c[i] for c in cpu[count]]) for i in range(4))
                return (f"{count} replica{'s' if count > 1 else ''}: CPU per request {rep:.0f} µs in the replicas, "
                        f"{pg:.0f} µs PostgreSQL, {gen:.0f} µs wrk; {busy:.2f} of {cpus} CPUs busy")

            rows.append(Result(
                GROUP, f"{figure}: {label}", two, "req/s", one, "one replica, same load", None,
                "≥ 1.5x or explained", ratio >= 1.5 or saturated,
                ("" if ratio >= 1.5 else f"explained: CPU-bound, two replicas keep {cpus} CPUs busy; " if saturated
                 else "not explained by CPU: the CPUs are not saturated; ")
                + f"{conns} connections split over the replicas; {runs} interleaved {seconds:g} s runs; sessions vary "
                f"per request; {split(1)}; {split(2)}; load average {os.getloadavg()[0]:.1f}"))
    return rows


# -- hold wake-up across replicas -------------------------------------------------------------------


def serve_polling(url: str, policy: str, port: int) -> None:
    """One replica whose store pushes nothing (`hold_notifications=False`): the polling baseline."""
    import uvicorn

    from thoth_nb.engine.policy import load_policy
    from thoth_nb.engine.store_pg import PostgresStore
    from thoth_nb.server.app import ServerSettings, create_app
    from thoth_nb.server.run import uvicorn_config

    store = PostgresStore(url, hold_notifications=False)
    try:
        uvicorn.Server(uvicorn_config(create_app(store, load_policy(policy), ServerSettings()), "127.0.0.1",
                                      port)).run()
    finally:
        store.close()


def _approve_to_resume(waiting: int, approving: int, agent: str, reviewer: str) -> tuple[float, float]:
    """Seconds from sending the approval (through `approving`) to the answer of the client long-polling
    the hold through `waiting` (the approve request itself included), and from the approval's reply to
    it (negative: the waiter answered before the reviewer got its reply)."""
    import threading

    import httpx

    from thoth_nb import _json

    body = {"agent_id": ref.AGENT["agent_id"], "tenant_id": ref.AGENT["tenant_id"], "user_id": "system",
            "session_id": f"hold-{uuid.uuid4()}", "approved_scope": ref.AGENT["approved_scope"],
            "enforcement_mode": "step_up", "tool_name": "read_file", "tool_args": {"path": "/etc/hosts", "mode": "r"}}
    with httpx.Client(headers={"Authorization": f"Bearer {agent}"}, trust_env=False, timeout=30) as c:
        held = c.post(f"http://127.0.0.1:{waiting}/v1/enforce", content=_json.dumps(body)).json()
    token = held["hold_token"]
    answered: list[float] = []

    def wait() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {agent}"}, trust_env=False, timeout=30) as c:
            reply = c.get(f"http://127.0.0.1:{waiting}/v1/enforce/hold/{token}", params={"wait": 20}).json()
        answered.append(time.monotonic())
        if reply.get("status") != "approved":
            raise RuntimeError(f"the long-poll answered {reply}")

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.25)  # parked in its long-poll
    with httpx.Client(headers={"Authorization": f"Bearer {reviewer}"}, trust_env=False, timeout=30) as c:
        approved_at = time.monotonic()  # the waiter may answer before the approval's own reply arrives
        r = c.post(f"http://127.0.0.1:{approving}/v1/approvals/{token}/resolve", json={"decision": "approve"})
        replied_at = time.monotonic()
    r.raise_for_status()
    waiter.join(30)
    if not answered:
        raise RuntimeError("the waiting client never resumed")
    return answered[0] - approved_at, answered[0] - replied_at


def bench_pg_hold_wakeup(sizes: Sizes) -> list[Result]:
    figure = "hold approved on replica 1 -> client long-polling on replica 2 resumes (median)"
    why = available()
    if why is not None:
        return [Result.na(GROUP, figure, why, "prompt: < 50 ms")]
    from thoth_nb.engine.store_pg import PostgresStore

    rounds = 2 if sizes.smoke else 15
    kinds = (True,) if sizes.smoke else (True, False)  # smoke: no polling pair (two fewer server processes)
    samples: dict[bool, list[float]] = {kind: [] for kind in kinds}
    after_reply: dict[bool, list[float]] = {kind: [] for kind in kinds}
    with fresh_schema() as url, tempfile.TemporaryDirectory(prefix="thoth-pg-") as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(ref.POLICY_YAML)
        store = PostgresStore(url, hold_notifications=False)
        _, agent = store.create_api_key(ref.AGENT["tenant_id"], "agent", "bench")
        _, reviewer = store.create_api_key(ref.AGENT["tenant_id"], "reviewer", "bench reviewer")
        store.create_api_key(ref.AGENT["tenant_id"], "admin", "bench admin")  # no first-key banner
        store.close()
        with contextlib.ExitStack() as stack:
            pairs = {kind: [port for port, _ in stack.enter_context(replicas(url, policy, 2, push=kind))]
                     for kind in kinds}
            for r in range(rounds):
                for push in (kinds if r % 2 == 0 else kinds[::-1]):
                    one, two = pairs[push]
                    sent, replied = _approve_to_resume(two, one, agent, reviewer)
                    samples[push].append(sent)
                    after_reply[push].append(replied)
    fast = median(after_reply[True])
    slow = median(after_reply[False]) if False in kinds else None
    polled = (f" vs {1000 * max(after_reply[False]):.0f} ms polled; from sending the approval (its own request "
              f"included): {1000 * median(samples[True]):.1f} ms pushed vs {1000 * median(samples[False]):.1f} ms "
              "polled (medians)" if False in kinds else " (smoke: no polling pair)")
    return [Result(
        GROUP, figure, 1000 * fast, "ms", None if slow is None else 1000 * slow,
        "the same replicas re-reading the store every 50 ms (hold_notifications=False)", None,
        "prompt: < 50 ms", fast < 0.05,
        f"from the approval's reply (negative: the waiter answered first); LISTEN/NOTIFY push, 1 s re-read kept "
        f"as fallback; {rounds} interleaved holds each; worst {1000 * max(after_reply[True]):.0f} ms pushed{polled}; "
        f"load average {os.getloadavg()[0]:.1f}")]


BENCHES = [bench_pg_ingest, bench_pg_ingest_processes, bench_pg_replicas, bench_pg_hold_wakeup]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--serve-polling"]:
        serve_polling(args[1], args[2], int(args[3]))
        return 0
    if args[:1] == ["--ingest-child"]:
        import json

        print(json.dumps(_ingest_child(args[1], args[2], int(args[3]), args[4])))
        return 0
    smoke = "--smoke" in args
    sizes = Sizes.tiny() if smoke else Sizes.full()
    for bench in BENCHES:
        for row in bench(sizes):
            ratio = f"  ({row.ratio:.2f}x {row.baseline_label})" if row.ratio else ""
            value = f"{row.value:,.0f} {row.unit}" if row.value is not None else "n/a"
            print(f"[{row.status}] {row.figure}: {value}{ratio}  {row.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
