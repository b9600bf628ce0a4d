"""A load generator that is not the bottleneck: `wrk` when installed, else raw keep-alive sockets in
several processes (each multiplexing its connections with `selectors`). Loopback only, bounded in time."""

from __future__ import annotations

import multiprocessing
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["load", "raw_request"]


def raw_request(method: str, path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_response(buf: bytearray) -> int:
    """Bytes of the first complete response in buf, or 0."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = bytes(buf[:end]).lower()
    match = re.search(rb"content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    total = end + 4 + length
    return total if len(buf) >= total else 0


def _worker(port: int, request: bytes, conns: int, seconds: float, out: Any) -> None:
    sel = selectors.DefaultSelector()
    bufs = {}
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        bufs[s] = bytearray()
        sel.register(s, selectors.EVENT_READ)
    done = errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            chunk = s.recv(65536)
            if not chunk:
                errors += 1
                sel.unregister(s)
                continue
            buf = bufs[s]
            buf += chunk
            while (n := _read_response(buf)):
                if not buf.startswith(b"HTTP/1.1 2"):
                    errors += 1
                del buf[:n]
                done += 1
                s.sendall(request)
    for s in bufs:
        s.close()
    out.put((done, errors))


def _python_load(port: int, request: bytes, conns: int, seconds: float, processes: bool) -> tuple[float, int]:
    if not processes:  # smoke runs: one thread, no process start-up cost (the rate is then only indicative)
        import queue as queue_mod
        import threading

        results: queue_mod.Queue[tuple[int, int]] = queue_mod.Queue()
        thread = threading.Thread(target=_worker, args=(port, request, conns, seconds, results), daemon=True)
        thread.start()
        thread.join(seconds + 30)
        done, errors = results.get(timeout=1)
        return done / seconds, errors
    ctx = multiprocessing.get_context("spawn")
    procs = min(conns, max(1, (os.cpu_count() or 2)))
    queue = ctx.Queue()
    split = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_worker, args=(port, request, n, seconds, queue), daemon=True) for n in split]
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 30) for _ in workers]
    for w in workers:
        w.join(5)
    done = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return done / seconds, errors


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open("{body}", "rb"):read()
{headers}
errors = 0
response = function(status, headers, body)
  if status >= 300 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("BADSTATUS %d\\n", summary.errors.status))
end
"""


def _wrk_load(port: int, path: str, body: bytes, headers: dict[str, str], conns: int,
              seconds: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="thoth-wrk-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT.format(body=body_file, headers=header_lines))
        threads = min(conns, 2)
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(script),
             f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"BADSTATUS (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return rate, errors


def load(port: int, path: str, body: bytes, headers: dict[str, str], conns: int, seconds: float,
         processes: bool = True) -> tuple[float, int, str]:
    """(requests/s, errors, tool) for `conns` keep-alive connections POSTing `body` for `seconds`."""
    if shutil.which("wrk") and seconds >= 1 and processes:
        rate, errors = _wrk_load(port, path, body, {"Content-Type": "application/json", **headers}, conns, seconds)
        return rate, errors, "wrk"
    request = raw_request("POST", path, port, body, {"Content-Type": "application/json", **headers})
    rate, errors = _python_load(port, request, conns, seconds, processes)
    return rate, errors, "raw sockets" + (" (processes)" if processes else " (one thread)")
