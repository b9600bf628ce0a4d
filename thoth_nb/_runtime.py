"""Shared machinery behind the public functions: one engine and emitter per store, one HTTP
transport and emitter per enforcer URL, and the module-level approve/deny/flush/status calls."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from thoth_nb._config import ThothConfig, thoth_home
from thoth_nb._emitter import Emitter, all_emitters
from thoth_nb._exceptions import ThothConfigError
from thoth_nb._flow import Governor, build_event
from thoth_nb._transports.base import Transport
from thoth_nb._transports.embedded import EmbeddedTransport
from thoth_nb._transports.http import HTTPTransport
from thoth_nb.engine.decide import Engine
from thoth_nb.engine.policy import DEFAULT_POLICY_YAML, Policy, load_policy
from thoth_nb.engine.store import SQLiteStore

__all__ = [
    "emitter_for",
    "flush",
    "forget_governor",
    "governor_for",
    "local_engine",
    "local_store",
    "shutdown",
    "status",
]

_lock = threading.RLock()
_stores: dict[Path, SQLiteStore] = {}
_engines: dict[tuple[Path, str], Engine] = {}
_transports: dict[tuple[str, str | None], Transport] = {}
_emitters: dict[str, Emitter] = {}
_governors: list[Governor] = []


def store_path() -> Path:
    return Path(os.environ.get("THOTH_DB") or thoth_home() / "thoth.db").expanduser()


def local_store(path: str | Path | None = None) -> SQLiteStore:
    """The embedded store (`$THOTH_HOME/thoth.db`), opened once per process."""
    key = Path(path).expanduser() if path else store_path()
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = SQLiteStore(key)
        return store


def default_policy_path() -> Path | None:
    candidate = thoth_home() / "policy.yaml"
    return candidate if candidate.exists() else None


_parsed: dict[str, tuple[str, Policy]] = {}


def _load_policy(path: Path | None) -> Policy:
    """`load_policy`, parsing again only when the text changed: `approve()` and every `instrument()` come
    through here, and parsing even the built-in default costs ~6 ms of CPU."""
    if path is None:
        key, text = "<default>", DEFAULT_POLICY_YAML
    else:
        key = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return load_policy(path)  # the same errors as ever
    cached = _parsed.get(key)
    if cached is not None and cached[0] == text:
        return cached[1]
    loaded = load_policy(path)
    if len(_parsed) > 256:
        _parsed.clear()
    _parsed[key] = (loaded.text, loaded)
    return loaded


def local_engine(policy: str | Path | Policy | None = None, *, store: SQLiteStore | None = None) -> Engine:
    """The embedded engine for a policy file (or the built-in default). Re-reads a changed file."""
    store = store or local_store()
    if isinstance(policy, Policy):
        return Engine(store, policy)
    path = Path(policy).expanduser() if policy else default_policy_path()
    key = (store.path, str(path.resolve()) if path else "<default>")
    with _lock:
        engine = _engines.get(key)
        loaded = _load_policy(path)  # validated every time: a bad edit is reported at instrument()
        if engine is None:
            engine = _engines[key] = Engine(store, loaded)
        elif engine.default_policy.text != loaded.text:
            engine.set_policy(loaded)
        return engine


def transport_for(config: ThothConfig) -> Transport:
    if config.embedded:
        engine = local_engine(config.policy)
        key: tuple[str, str | None] = ("embedded", f"{engine.store.path}|{config.policy or ''}")
        with _lock:
            found = _transports.get(key)
            if found is None:
                found = _transports[key] = EmbeddedTransport(engine)
            return found
    assert config.api_url is not None
    key = (config.api_url, config.api_key)
    with _lock:
        found = _transports.get(key)
        if found is None:
            found = _transports[key] = HTTPTransport(
                config.api_url, api_key=config.api_key, event_ingest_token=config.event_ingest_token
            )
        return found


def emitter_for(transport: Transport) -> Emitter:
    with _lock:
        found = _emitters.get(transport.sink_id)
        if found is None or found.transport is not transport:
            # the in-process store takes larger batches (fewer commits per event); HTTP stays at 500
            batch = 1000 if isinstance(transport, EmbeddedTransport) else 500
            found = _emitters[transport.sink_id] = Emitter(transport, build=build_event, batch_size=batch)
        return found


def governor_for(config: ThothConfig, transport: Transport | None = None) -> Governor:
    transport = transport or transport_for(config)
    governor = Governor(config, transport, emitter_for(transport))
    with _lock:
        _governors.append(governor)
        del _governors[:-1000]
    return governor


def forget_governor(governor: Governor) -> None:
    """Drop a governor whose `instrument()` failed: it governs nothing, so `status()` must not list it
    and the frames must not take its tenant for the default."""
    with _lock:
        _governors[:] = [g for g in _governors if g is not governor]


def governors() -> list[Governor]:
    return list(_governors)


def flush(timeout: float = 10.0) -> bool:
    """Deliver every queued event now (embedded: into the SQLite store). False if it timed out."""
    return all([e.flush(timeout) for e in all_emitters()])


def shutdown(timeout: float = 5.0) -> None:
    """Flush and stop every emitter; what cannot be delivered is spilled to disk for the next run."""
    for emitter in all_emitters():
        emitter.shutdown(timeout)


def status() -> dict[str, Any]:
    """What is governed, where decisions come from, and the event pipeline's counters."""
    seen: dict[int, Governor] = {}
    for gov in _governors:
        seen[id(gov.config)] = gov
    return {
        "agents": [
            {"agent_id": g.config.agent_id, "tenant_id": g.config.tenant_id, "mode": g.config.enforcement.value,
             "session_id": g.config.session_id, "enforcer": g.transport.name,
             "approved_scope": list(g.config.approved_scope)}
            for g in seen.values()
        ],
        "emitters": [e.stats() for e in all_emitters()],
        "dropped_events": sum(e.dropped for e in all_emitters()),
        "thoth_home": str(thoth_home()),
    }


def reset() -> None:
    """Forget every store, engine, transport and emitter (tests, and `%reload_ext`). Flushes first."""
    with _lock:
        for emitter in list(_emitters.values()):
            emitter.shutdown(timeout=2.0)
        for transport in _transports.values():
            transport.close()
        for store in _stores.values():
            store.close()
        _stores.clear()
        _engines.clear()
        _transports.clear()
        _emitters.clear()
        _governors.clear()


def require_embedded(api_url: str | None) -> None:
    if api_url:
        raise ThothConfigError("this call works on the embedded store; for a server use its HTTP API")
