"""A server for the benchmarks, in its own process: `python -m benchmarks._serve thoth|null ...`.

Both kinds run on the same stack (`thoth_nb.server.run.uvicorn_config`: uvicorn, uvloop, httptools,
one worker) on 127.0.0.1 and print `PORT <n>` when they accept connections.
- thoth <db> <policy.yaml> [in-process]: the real app (`create_app`) over a SQLite store, keys required;
  "in-process": event batches stored on a worker thread (`--ingest-in-process`), not by the ingest child.
- null: a do-nothing Starlette app: POST /noop reads the body and answers `{}`; the round-trip floor.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any


def null_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/noop", noop, methods=["POST", "GET"])])


def main(argv: list[str]) -> int:
    import uvicorn

    from thoth_nb.server.run import uvicorn_config

    kind = argv[0]
    if kind == "thoth":
        from thoth_nb.engine.policy import load_policy
        from thoth_nb.engine.store import SQLiteStore
        from thoth_nb.server.app import ServerSettings, create_app

        app = create_app(SQLiteStore(argv[1]), load_policy(argv[2]),
                         ServerSettings(ingest_child=argv[3:4] != ["in-process"]))
    elif kind == "null":
        app = null_app()
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        print(f"PORT {port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    # the parent closes our stdin when it is done: exit then, even if it died without a signal
    threading.Thread(target=lambda: (sys.stdin.read(), setattr(server, "should_exit", True)), daemon=True).start()
    server.run(sockets=[sock])
    if kind == "thoth":
        app.state.thoth.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
