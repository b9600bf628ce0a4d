"""An agent process is SIGKILLed after its events were spilled (the enforcer answered decisions but its
events endpoint was down); the next process that instruments against the same enforcer replays them
into the server's store exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _faults import SCOPE, RawEnforcer, ServeProcess, http_agent

import thoth_nb
from thoth_nb import _runtime

pytestmark = pytest.mark.timeout(120)

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import thoth_nb
    from thoth_nb._emitter import all_emitters

    url, key, session, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def lookup(q):
        return q

    def drop_table(name):
        return name

    tools = thoth_nb.instrument([lookup, drop_table], api_url=url, api_key=key, agent_id="agent-1",
                                tenant_id="acme", approved_scope=SCOPE, session_id=session,
                                tool_inventory=False)
    for emitter in all_emitters():
        emitter.retry_delays = (0.02, 0.02)
    for i in range(calls):
        tools[0](f"q{i}")
    assert thoth_nb.flush(timeout=30)
    stats = thoth_nb.status()["emitters"]
    print(json.dumps(stats), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no shutdown: a killed kernel
    """
)


def test_killed_agent_spill_is_replayed_once_end_to_end(tmp_path: Path, thoth_home: Path) -> None:
    raw = RawEnforcer()
    raw.answer("200 OK", b'{"decision": "ALLOW", "authorization_decision": "ALLOW", "reason": "ok"}')
    raw.events_status = b"503 Service Unavailable"  # decisions work, ingest is down
    port = raw.port
    folder = tmp_path / "serve"
    folder.mkdir()
    serve = ServeProcess(folder, port=port)  # keys created now; the server starts later on the same port
    session = "killed-session"
    try:
        env = {**os.environ, "THOTH_HOME": str(thoth_home)}
        script = f"SCOPE = {SCOPE!r}\n" + CHILD
        done = subprocess.run(
            [sys.executable, "-c", script, raw.url, serve.keys["acme:agent"], session, "40"],
            env=env, capture_output=True, text=True, timeout=90,
        )
    finally:
        raw.close()
    assert done.returncode == -signal.SIGKILL, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(s["spilled"], s["sent"], s["dropped"]) for s in stats] == [(80, 0, 0)]
    assert any(p == "/v1/events/batch" for _, p in raw.requests)  # it did try

    spill_files = list((thoth_home / "spill").glob("*.jsonl"))
    assert len(spill_files) == 1
    spilled_ids = [json.loads(line)["event_id"] for line in spill_files[0].read_text().splitlines()]
    assert len(spilled_ids) == len(set(spilled_ids)) == 80

    serve.start()
    try:
        # the next start: instrument() against the same enforcer URL replays the spill file
        agent, _ = http_agent(serve.url, serve.keys["acme:agent"], session_id=session)
        assert [e.replayed for e in _runtime._emitters.values()] == [80]
        assert agent.lookup("next-run") == "found next-run"
        assert thoth_nb.flush(timeout=10)
        stored = serve.events(session_id=session)
        ids = [e["event_id"] for e in stored]
        assert len(ids) == len(set(ids)) == 82
        assert set(spilled_ids) <= set(ids)
        assert not list((thoth_home / "spill").glob("*.jsonl*"))  # claimed file removed after delivery

        _runtime.reset()  # and once more: nothing is replayed twice
        http_agent(serve.url, serve.keys["acme:agent"], session_id=session)
        assert [e.replayed for e in _runtime._emitters.values()] == [0]
        assert len(serve.events(session_id=session)) == 82
    finally:
        _runtime.reset()
        serve.kill()
