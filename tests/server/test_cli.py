"""`thoth-nb serve` as a real process, and `thoth-nb keys create|list|revoke`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from thoth_nb.cli import main
from thoth_nb.engine.store import MIGRATIONS, SQLiteStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(args: list[str], env_home: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "THOTH_HOME": str(env_home)}
    proc = subprocess.Popen([sys.executable, "-m", "thoth_nb.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if "API docs" in line:
            break
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_ready(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        try:
            reply = httpx.get(f"{url}/readyz", trust_env=False, timeout=2)
            data: dict[str, Any] = reply.json()
            return data
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_serve_prints_url_and_a_first_admin_key_once(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "served.db"
    proc, lines = _serve(["--port", str(port), "--db", str(db), "--log-level", "warning"], tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        assert any(url in line for line in lines), lines
        keys = [m.group(0) for line in lines for m in [re.search(r"thk_[A-Za-z0-9_-]+", line)] if m]
        assert keys, lines
        admin = keys[0]
        assert _wait_ready(url) == {"status": "ok", "long_poll": True, "version": thoth_version(), "auth": True}
        r = httpx.get(f"{url}/v1/keys", headers={"Authorization": f"Bearer {admin}"}, trust_env=False)
        assert r.status_code == 200 and [k["role"] for k in r.json()["items"]] == ["admin"]
        assert httpx.get(f"{url}/v1/keys", trust_env=False).status_code == 401
    finally:
        _stop(proc)
    store = SQLiteStore(db)
    try:
        assert store.migrations() == sorted(name for name, _ in MIGRATIONS)  # every named migration ran
    finally:
        store.close()

    from thoth_nb.server import ensure_first_admin_key

    store = SQLiteStore(db)
    try:  # what decides the printing: a store with an active key gets no new one
        assert ensure_first_admin_key(store, "local") is None
        assert store.count_api_keys() == 1
    finally:
        store.close()


def test_serve_reports_a_bad_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - tool: x\n    decision: maybe\n")
    assert main(["serve", "--policy", str(bad), "--db", str(tmp_path / "x.db")]) == 2
    assert "decision" in capsys.readouterr().err


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "keys.db")
    assert main(["keys", "create", "--tenant", "acme", "--role", "agent", "--name", "ci", "--db", db]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("thk_") and "shown once" in out.err
    key_id = re.search(r"key_[0-9a-f]+", out.err)
    assert key_id is not None

    store = SQLiteStore(db)
    try:
        found = store.api_key_for(secret)
        assert found is not None and (found["tenant_id"], found["role"]) == ("acme", "agent")
        raw = store.query("SELECT key_hash FROM api_keys")
        assert secret not in str(raw)  # stored hashed
    finally:
        store.close()

    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert key_id.group(0) in listing and "acme" in listing and secret not in listing

    assert main(["keys", "revoke", key_id.group(0), "--tenant", "globex", "--db", db]) == 2
    assert main(["keys", "revoke", key_id.group(0), "--db", db]) == 0
    assert main(["keys", "revoke", key_id.group(0), "--db", db]) == 2
    capsys.readouterr()
    assert main(["keys", "list", "--db", db]) == 0
    assert key_id.group(0) not in capsys.readouterr().out
    assert main(["keys", "list", "--all", "--db", db]) == 0
    assert key_id.group(0) in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["keys", "create", "--tenant", "acme", "--role", "root", "--db", db])


def thoth_version() -> str:
    from thoth_nb._version import __version__

    return __version__


def _children(pid: int) -> dict[int, str]:
    """{pid: command line} of the processes whose parent is `pid` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry)] = cmdline
    return found


@pytest.mark.parametrize("in_process", [False, True])
def test_serve_stores_batches_in_its_ingest_child_and_stops_it(tmp_path: Path, in_process: bool) -> None:
    """`thoth-nb serve` on SQLite: event batches go through a child process (store_writer.py) that ends
    with the server; `--ingest-in-process` keeps them on a thread of the server."""
    port = _free_port()
    db = tmp_path / "served.db"
    flags = ["--ingest-in-process"] if in_process else []
    proc, lines = _serve(["--port", str(port), "--db", str(db), "--log-level", "warning", *flags], tmp_path)
    writers: dict[int, str] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        admin = next(m.group(0) for line in lines for m in [re.search(r"thk_[A-Za-z0-9_-]+", line)] if m)
        _wait_ready(url)
        events = [{"event_id": f"e{i}", "session_id": "s1", "event_type": "TOOL_CALL_PRE"} for i in range(20)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, trust_env=False) as client:
            deadline = time.monotonic() + 20
            rounds = 0
            while time.monotonic() < deadline:  # the first batch starts the child; later ones go through it
                batch = [{**e, "event_id": f"{e['event_id']}-{rounds}"} for e in events]
                assert client.post("/v1/events/batch", json=batch).json()["accepted"] == 20
                rounds += 1
                writers = {p: c for p, c in _children(proc.pid).items() if "store_writer.py" in c}
                if writers or (in_process and rounds >= 5):
                    break
                time.sleep(0.05)
        assert bool(writers) is not in_process, writers
    finally:
        _stop(proc)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in writers)
    store = SQLiteStore(db)
    try:
        assert store.count_events("local") == 20 * rounds
    finally:
        store.close()
