"""Figures 3 and 6 (server): the enforcer over HTTP on loopback, against a do-nothing round trip.

Both servers run in their own processes on the same stack (benchmarks._serve): the real app, and a
do-nothing Starlette endpoint. The client for latency is the SDK's own httpx client (the governed
call goes through it; the baseline posts the same enforce body to the do-nothing endpoint with the
very same client object). Throughput uses `wrk` when installed, else raw-socket processes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from benchmarks import reference as ref
from benchmarks._core import Result, Sizes, median, percentile
from benchmarks._load import load
from benchmarks.embedded import governed_tool, thoth_home

GROUP = "server"
ROOT = Path(__file__).resolve().parent.parent


def available() -> str | None:
    """Why the server figures cannot run, or None."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        import thoth_nb.server.app  # noqa: F401
    except ImportError as exc:
        return f"server not available ({exc})"
    return None


@contextlib.contextmanager
def serve(*kinds: tuple[str, ...]) -> Iterator[list[int]]:
    """Start one benchmark server process per `kinds` entry (in parallel); yield their ports."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks._serve", *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for args in kinds]
    try:
        ports = []
        for proc, args in zip(procs, kinds, strict=True):
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            if not line.startswith("PORT "):
                proc.kill()
                raise RuntimeError(f"benchmark server {args[0]} did not start: {line}{proc.stderr.read()[-2000:]}")
            ports.append(int(line.split()[1]))
        yield ports
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def _keys(db: Path) -> tuple[str, str]:
    from thoth_nb.engine.store import SQLiteStore

    store = SQLiteStore(db)
    _, agent = store.create_api_key(ref.AGENT["tenant_id"], "agent", "bench agent")
    _, reviewer = store.create_api_key(ref.AGENT["tenant_id"], "admin", "bench reviewer")
    store.close()
    return agent, reviewer


def _enforce_body() -> dict[str, Any]:
    return {"agent_id": ref.AGENT["agent_id"], "tenant_id": ref.AGENT["tenant_id"], "user_id": "system",
            "session_id": "bench-load", "approved_scope": ref.AGENT["approved_scope"],
            "enforcement_mode": "step_up", "tool_name": "read_file",
            "tool_args": {"path": ref.ARGS[0], "mode": ref.ARGS[1]}, "session_tool_calls": ["read_file"]}


def bench_server(sizes: Sizes) -> list[Result]:
    why = available()
    if why is not None:
        return [Result.na(GROUP, name, why, target) for name, target in (
            ("governed call through the server", "≤ 1.5x, p99 ≤ 3 ms"),
            ("/v1/enforce throughput", "≥ 0.4x"), ("ingest via /v1/events/batch", "≥ 40,000 events/s"),
            ("step-up click→resume, server long-poll", "≤ 250 ms"), ("/v1/enforce during ingest", ""))]
    from thoth_nb import _json

    rows: list[Result] = []
    with thoth_home() as home:
        db = home / "server.db"
        agent_key, admin_key = _keys(db)
        policy = home / "server-policy.yaml"
        policy.write_text(ref.POLICY_YAML)
        with serve(("thoth", str(db), str(policy)), ("null",)) as (port, null_port):
            url = f"http://127.0.0.1:{port}"
            rows += _latency(sizes, home, url, agent_key, null_port)
            body = _json.dumps_bytes(_enforce_body())
            rows += _throughput(sizes, port, null_port, body, agent_key)
            rows += _ingest(sizes, home, port, null_port, agent_key)
            rows += _stepup(sizes, home, url, agent_key, admin_key)
        rows += _enforce_during_ingest(sizes, home, policy)
    return rows


def _latency(sizes: Sizes, home: Path, url: str, key: str, null_port: int) -> list[Result]:
    import thoth_nb
    from thoth_nb import _json

    tool = governed_tool(home, api_url=url, api_key=key)
    assert tool(*ref.ARGS) == 1
    transport = tool.__thoth_binding__.governor.transport  # type: ignore[attr-defined]
    client = transport.client  # the SDK's own httpx client, reused for the baseline
    null_url = f"http://127.0.0.1:{null_port}/noop"
    body = _json.dumps_bytes(_enforce_body())
    clock = time.perf_counter_ns
    gov: list[float] = []
    null: list[float] = []
    path, mode = ref.ARGS
    chunk = 50
    warm_until = time.monotonic() + (2.0 if not sizes.smoke else 0.2)
    while time.monotonic() < warm_until:  # warm-up: connections, caches, a freshly started server process
        tool(path, mode)
        client.post(null_url, content=body)
    thoth_nb.flush()
    for c in range(max(1, sizes.server_calls // chunk)):
        for which in ((0, 1) if c % 2 == 0 else (1, 0)):
            if which == 0:
                for _ in range(chunk):
                    t0 = clock()
                    tool(path, mode)
                    gov.append(clock() - t0)
            else:
                for _ in range(chunk):
                    t0 = clock()
                    response = client.post(null_url, content=body)
                    response.json()
                    null.append(clock() - t0)
    thoth_nb.flush()
    g_med, n_med = median(gov) / 1e6, median(null) / 1e6
    g_p99, n_p99 = percentile(gov, 99) / 1e6, percentile(null, 99) / 1e6
    note = f"{len(gov)} calls each, interleaved in chunks of {chunk}; client: the SDK's httpx.Client; events on"
    return [
        Result(GROUP, "governed call through the server (loopback): median", g_med, "ms", n_med,
               "do-nothing Starlette round trip, same client", None, "≤ 1.5x", g_med / n_med <= 1.5, note),
        Result(GROUP, "governed call through the server (loopback): p99", g_p99, "ms", n_p99,
               "do-nothing round trip p99", None, "≤ 3 ms", g_p99 <= 3.0),
    ]


def _throughput(sizes: Sizes, port: int, null_port: int, body: bytes, key: str) -> list[Result]:
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "thoth-nb-bench"}
    rows = []
    for conns in (1, 8):
        rates: dict[str, list[float]] = {"thoth": [], "null": []}
        errors = 0
        tool = ""
        # short runs, many alternations: the machine's load drifts within seconds
        seconds = sizes.load_seconds if sizes.smoke else max(1.0, sizes.load_seconds / 2)
        for r in range(4 if not sizes.smoke else 1):
            order = (("thoth", port, "/v1/enforce"), ("null", null_port, "/noop"))
            for name, p, path in (order if r % 2 == 0 else order[::-1]):
                rate, errs, tool = load(p, path, body, headers, conns, seconds, not sizes.smoke)
                rates[name].append(rate)
                errors += errs
        mine, theirs = median(rates["thoth"]), median(rates["null"])
        if errors:
            raise RuntimeError(f"{errors} failed requests during the /v1/enforce load test")
        rows.append(Result(GROUP, f"/v1/enforce throughput, {conns} connection{'s' if conns > 1 else ''}", mine,
                           "req/s", theirs, "do-nothing endpoint, same stack", None, "≥ 0.4x",
                           mine / theirs >= 0.4, f"load generator: {tool}; {seconds:g} s per run, "
                           f"{len(rates['thoth'])} interleaved runs each; ALLOW decisions"))
    return rows


def _ingest(sizes: Sizes, home: Path, port: int, null_port: int, key: str) -> list[Result]:
    import http.client

    from benchmarks.store import RowsFloor, real_events
    from thoth_nb import _json

    per = 500
    events = real_events(home, sizes.server_ingest_batches * per)
    bodies = [_json.dumps_bytes({"events": events[i : i + per]}) for i in range(0, len(events), per)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    senders = 2

    def push(p: int, path: str, which: list[bytes]) -> float:
        parts = [which[i::senders] for i in range(senders)]
        failures: list[str] = []

        def send(mine: list[bytes]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", p, timeout=60)
            for b in mine:
                conn.request("POST", path, body=b, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status >= 300:
                    failures.append(f"{response.status} {data[:200]!r}")
            conn.close()

        threads = [threading.Thread(target=send, args=(part,)) for part in parts]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"ingest failed: {failures[0]}")
        return elapsed

    half = len(bodies) // 2 or 1
    cut = min(half * per, len(events))
    floor = RowsFloor(home, events)
    # interleave: half the batches to each server and to the floor, then the other half
    t_floor = floor.insert(0, cut)
    t_thoth = push(port, "/v1/events/batch", bodies[:half])
    t_null = push(null_port, "/noop", bodies[:half])
    t_null += push(null_port, "/noop", bodies[half:])
    t_thoth += push(port, "/v1/events/batch", bodies[half:])
    t_floor += floor.insert(cut, len(events))
    floor.close()
    rate = len(events) / t_thoth
    null_rate = len(events) / t_null
    floor_rate = len(events) / t_floor
    from thoth_nb.engine.ingest import raw_batch_events

    split = ("body split per event by msgspec" if raw_batch_events(b"[]") is not None
             else "no msgspec: the whole body parsed by orjson first")
    size = sum(len(b) for b in bodies) / len(events)
    return [Result(GROUP, "ingest via POST /v1/events/batch into SQLite (batches of 500)", rate, "events/s",
                   null_rate, "same batches to the do-nothing endpoint", None, "≥ 40,000 events/s",
                   rate >= 40_000, f"{len(events):,} real SDK events ({size:,.0f} bytes each on the wire), "
                   f"{senders} keep-alive senders (http.client); acknowledged after commit; {split}; "
                   f"SQLite's own floor for these rows in this run: {floor_rate:,.0f} events/s (next row)"),
            Result(GROUP, "ingest floor: the same events' rows, pre-built, into the store's table and indexes",
                   floor_rate, "events/s", rate, "ingest via /v1/events/batch (row above)", None, "", None,
                   "what SQLite alone takes to store these rows here, so no ingest of them can be faster: "
                   "benchmarks.store.RowsFloor, the exact rows the server stores (chain and hash built "
                   "beforehand, untimed), 500 per transaction, the store's own multi-row INSERT, PRAGMAs and "
                   "background checkpointer, in this process; no HTTP, parse, check or hash. Halves "
                   "interleaved with the server's")]


def _stepup(sizes: Sizes, home: Path, url: str, agent_key: str, admin_key: str) -> list[Result]:
    import httpx

    import thoth_nb
    from thoth_nb import _context

    started: list[float] = []

    def body(path: str, mode: str = "r") -> int:
        started.append(time.perf_counter())
        return 1

    body.__name__ = "read_file"
    tool = governed_tool(home, fn=body, api_url=url, api_key=agent_key, session_id="bench-stepup",
                         step_up_poll_interval_ms=5000)
    held: list[str] = []
    ready = threading.Event()

    def listener(phase: str, call: Any) -> None:
        if phase == "held" and call.decision is not None and call.decision.hold_token:
            held.append(call.decision.hold_token)
            ready.set()

    latencies = []
    reviewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, trust_env=False)
    _context.add_listener(listener)
    try:
        for _ in range(sizes.stepup_rounds):
            ready.clear()
            clicked: list[float] = []

            def approver(clicked: list[float] = clicked) -> None:
                ready.wait(10)
                time.sleep(0.1)  # the caller is in its long-poll by now
                clicked.append(time.perf_counter())
                reply = reviewer.post(f"/v1/approvals/{held[-1]}/resolve", json={"decision": "approve"})
                reply.raise_for_status()

            thread = threading.Thread(target=approver, daemon=True)
            thread.start()
            tool("/etc/hosts", "r")
            thread.join(10)
            latencies.append((started[-1] - clicked[-1]) * 1000)
    finally:
        _context.remove_listener(listener)
        reviewer.close()
        thoth_nb.flush()  # deliver this tool's events before the server stops
    med, worst = median(latencies), max(latencies)
    return [Result(GROUP, "step-up click→resume, server long-poll (approve via HTTP)", med, "ms", 5000.0,
                   "seed's default poll interval", None, "≤ 250 ms", worst <= 250.0,
                   f"median of {len(latencies)}; max {worst:.1f} ms; includes the approve request itself")]


def _enforce_during_ingest(sizes: Sizes, home: Path, policy: Path) -> list[Result]:
    """/v1/enforce latency while another client streams event batches into the same server: with the
    ingest child (the default) against batches stored on a worker thread of the server (the baseline,
    `--ingest-in-process`), two servers side by side, measured in alternation."""
    from benchmarks.store import real_events
    from thoth_nb import _json

    stores = {"child": home / "during-child.db", "in-process": home / "during-inproc.db"}
    keys = {name: _keys(db)[0] for name, db in stores.items()}
    events = real_events(home, 20 * 500 if not sizes.smoke else 2 * 500)
    bodies = [_json.dumps_bytes({"events": events[i : i + 500]}) for i in range(0, len(events), 500)]
    enforce = _json.dumps_bytes(_enforce_body())
    calls = sizes.server_calls // 2
    times: dict[str, list[float]] = {name: [] for name in stores}
    rates: dict[str, list[float]] = {name: [] for name in stores}
    with serve(("thoth", str(stores["child"]), str(policy)),
               ("thoth", str(stores["in-process"]), str(policy), "in-process")) as ports:
        for round_ in range(2 if not sizes.smoke else 1):
            order = list(zip(stores, ports, strict=True))
            for name, port in order if round_ % 2 == 0 else order[::-1]:
                headers = {"Authorization": f"Bearer {keys[name]}", "Content-Type": "application/json"}
                stop = threading.Event()
                sent: list[int] = []
                conn = HTTPConnection("127.0.0.1", port, timeout=30)
                for _ in range(100):  # warm-up: connection, caches
                    conn.request("POST", "/v1/enforce", body=enforce, headers=headers)
                    conn.getresponse().read()
                streamer = threading.Thread(target=_stream, args=(port, headers, bodies, stop, sent), daemon=True)
                streamer.start()
                time.sleep(0.3)
                t0 = time.perf_counter()
                for _ in range(calls):
                    started = time.perf_counter_ns()
                    conn.request("POST", "/v1/enforce", body=enforce, headers=headers)
                    conn.getresponse().read()
                    times[name].append(time.perf_counter_ns() - started)
                rates[name].append(len(sent) * 500 / (time.perf_counter() - t0))
                stop.set()
                streamer.join(30)
                conn.close()
    note = (f"{calls * (2 if not sizes.smoke else 1)} enforce calls per server (http.client, one keep-alive "
            f"connection) while another connection posts batches of 500 real SDK events 20 ms apart: "
            f"{median(rates['child']):,.0f} vs {median(rates['in-process']):,.0f} events/s stored meanwhile")
    rows = []
    for label, stat in (("median", median), ("p99", lambda v: percentile(v, 99))):
        mine, theirs = stat(times["child"]) / 1e6, stat(times["in-process"]) / 1e6
        rows.append(Result(GROUP, f"/v1/enforce while events are ingested, ingest child: {label}", mine, "ms",
                           theirs, "the same server storing batches on a worker thread (--ingest-in-process)",
                           None, "", None, note if label == "median" else ""))
    return rows


def _stream(port: int, headers: dict[str, str], bodies: list[bytes], stop: threading.Event, sent: list[int]) -> None:
    """Post batches one at a time, 20 ms apart, until `stop`; each acknowledged one is appended to `sent`."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        conn.request("POST", "/v1/events/batch", body=bodies[len(sent) % len(bodies)], headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeError(f"ingest answered {response.status}")
        sent.append(1)
        stop.wait(0.02)
    conn.close()


BENCHES = [bench_server]
