"""Starting the server: `thoth-nb serve` in the foreground, or `BackgroundServer` in a thread
(tests, benchmarks, a notebook that wants a reviewer page)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from thoth_nb._exceptions import ThothConfigError
from thoth_nb.engine.policy import Policy, load_policy
from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server.app import ServerSettings, create_app
from thoth_nb.server.auth import is_loopback

__all__ = ["BackgroundServer", "ensure_first_admin_key", "is_loopback", "uvicorn_config"]


def ensure_first_admin_key(store: SQLiteStore, tenant_id: str) -> str | None:
    """A store with no active key gets one admin key, returned (to be shown) exactly once."""
    if store.count_api_keys() > 0:
        return None
    _, secret = store.create_api_key(tenant_id, "admin", "first admin key")
    return secret


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "warning") -> Any:
    """uvicorn with uvloop and httptools when installed (uvicorn[standard]); no websockets."""
    import uvicorn

    loop = "auto"
    http = "auto"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:  # pragma: no cover
        pass
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        ws="none",
        lifespan="off",
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )


def _policy(policy: str | Path | Policy | None) -> Policy:
    return policy if isinstance(policy, Policy) else load_policy(policy)


class BackgroundServer:
    """A real uvicorn server on 127.0.0.1 in a daemon thread; `stop()` and `start()` again on the
    same port (the store file survives, so a restart loses nothing)."""

    def __init__(
        self,
        db: str | Path,
        *,
        policy: str | Path | Policy | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: ServerSettings | None = None,
    ) -> None:
        if settings is not None and settings.no_auth and not is_loopback(host):
            raise ThothConfigError("--no-auth serves without keys: bind it to a loopback address (127.0.0.1 or ::1)")
        self.db = Path(db)
        self.policy = _policy(policy)
        self.host = host
        self.port = port
        self.settings = settings or ServerSettings()
        self.store: SQLiteStore | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def app(self) -> Any:
        return self._server.config.app if self._server is not None else None

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self.store = SQLiteStore(self.db)
        app = create_app(self.store, self.policy, self.settings)
        self._server = uvicorn.Server(uvicorn_config(app, self.host, self.port))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"thoth-nb-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"thoth-nb server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        app = self.app
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._server = None
        if app is not None:
            app.state.thoth.close()  # the ingest child, the frame keeper
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
