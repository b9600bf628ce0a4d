"""`thoth-nb serve` and `thoth-nb keys create|list|revoke`.

Kept out of cli.py so the CLI works without the `server` extra: FastAPI and uvicorn are imported only
when `serve` runs; `keys` needs nothing but the store.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from thoth_nb._argtypes import whole_number

__all__ = ["add_server_commands", "cmd_keys_create", "cmd_keys_list", "cmd_keys_revoke", "cmd_serve"]

ROLES = ("agent", "reviewer", "admin")


def _db_path(value: str | None) -> Any:
    """A SQLite path, or a postgresql:// URL (from the value or THOTH_DATABASE_URL) kept as a string."""
    from thoth_nb.engine.store import database_url, is_postgres_url, sqlite_path

    target = database_url(value or None)
    return target if is_postgres_url(target) else sqlite_path(target)


def _policy_path(value: str | None) -> str | None:
    """--policy, else $THOTH_POLICY, else $THOTH_HOME/policy.yaml when present: what the embedded
    enforcer would use (D4), so a notebook and `serve` decide alike."""
    import os

    from thoth_nb._runtime import default_policy_path

    if value:
        return value
    if os.environ.get("THOTH_POLICY"):
        return os.environ["THOTH_POLICY"]
    found = default_policy_path()
    return str(found) if found is not None else None


def _fail(message: str) -> int:
    print(f"thoth-nb: {message}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from thoth_nb.server.app import ServerSettings, create_app
        from thoth_nb.server.run import ensure_first_admin_key, is_loopback, uvicorn_config
    except ImportError as exc:
        return _fail(f"the server needs its extra: pip install 'thoth-nb[server]' ({exc})")
    from thoth_nb._exceptions import ThothConfigError
    from thoth_nb.engine.policy import load_policy
    from thoth_nb.engine.store import SQLiteStore, open_store

    if args.no_auth and not is_loopback(args.host):
        return _fail(
            f"--no-auth serves every request without a key, so it only binds to a loopback address "
            f"(127.0.0.1 or ::1), not {args.host!r}. Drop --no-auth and use API keys instead."
        )
    policy_path = _policy_path(args.policy)
    try:
        policy = load_policy(policy_path)
        db = _db_path(args.db)
        new_store = isinstance(db, Path) and not db.exists()
        store = SQLiteStore(db) if isinstance(db, Path) else open_store(db)  # runs the named migrations
        if not isinstance(db, Path):
            db = repr(store)  # PostgreSQL: the URL without its password
    except ThothConfigError as exc:
        return _fail(str(exc))
    settings = ServerSettings(
        no_auth=args.no_auth, local_tenant=args.tenant, max_body_bytes=args.max_body_bytes,
        event_ingest_token=args.event_ingest_token or os.environ.get("THOTH_EVENT_INGEST_TOKEN") or None,
        ingest_child=not args.ingest_in_process,
    )
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host_for_url}:{args.port}"
    print(
        f"thoth-nb serve: {url}  (store {db}{', new' if new_store else ''}; "
        f"policy {policy_path or 'built-in default'})"
    )
    if args.no_auth:
        print(f"  no auth: every request acts as admin of tenant '{args.tenant}' (loopback only)")
    else:
        secret = ensure_first_admin_key(store, args.tenant)
        if secret is not None:
            print(f"  first admin key for tenant '{args.tenant}' (shown once, store it now):\n    {secret}")
            print(f"  reviewer page: {url}/#key={secret}")
            where = db if isinstance(db, Path) else "postgresql://..."
            print(f"  agent keys: thoth-nb keys create --tenant {args.tenant} --role agent --db {where}")
    print(f"  reviewer page: {url}/   API docs: {url}/docs", flush=True)
    app = create_app(store, policy, settings)
    config = uvicorn_config(app, args.host, args.port, log_level=args.log_level)
    config.lifespan = "off"
    try:
        uvicorn.Server(config).run()
    finally:
        app.state.thoth.close()  # the ingest child; the frame keeper over what came in since its last run
        store.close()
    return 0


def _store(args: argparse.Namespace, *, existing: bool = True) -> Any:
    """The store of `keys`; `list` and `revoke` need one that exists (`create` may start a new one)."""
    from thoth_nb.engine.store import SQLiteStore, open_store

    db = _db_path(args.db)
    if existing and isinstance(db, Path):
        from thoth_nb.cli_db import open_existing_store

        return open_existing_store(str(db))
    return SQLiteStore(db) if isinstance(db, Path) else open_store(db)


def cmd_keys_create(args: argparse.Namespace) -> int:
    store = _store(args, existing=False)
    try:
        record, secret = store.create_api_key(args.tenant, args.role, args.name or "")
    except ValueError as exc:
        return _fail(str(exc))
    finally:
        store.close()
    print(f"{record['key_id']}  tenant={record['tenant_id']}  role={record['role']}", file=sys.stderr)
    print("the key is shown once; store it now:", file=sys.stderr)
    print(secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rows = store.api_keys(args.tenant, include_revoked=args.all)
    finally:
        store.close()
    if not rows:
        print("(none)")
        return 0
    columns = ("key_id", "tenant_id", "role", "name", "created_at", "revoked_at")
    widths = {c: max(len(c), *(len(str(r.get(c) or "")) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c) or "").ljust(widths[c]) for c in columns))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        done = store.revoke_api_key(args.key_id, args.tenant)
    finally:
        store.close()
    if not done:
        return _fail(
            f"no active key {args.key_id!r}" + (f" in tenant {args.tenant!r}" if args.tenant else "")
        )
    print(f"{args.key_id} revoked")
    return 0


def add_server_commands(subparsers: Any) -> None:
    """Register `serve` and `keys` on an argparse subparsers object; each sets `fn` (returns an exit code)."""
    serve = subparsers.add_parser(
        "serve", help="run the enforcer server (HTTP API, approvals, reviewer page)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    # 1-65535: out of range, uvicorn took the port modulo 65536 (`--port 99999` listened on 34463)
    serve.add_argument("--port", type=whole_number(1, 65535), default=8787)
    serve.add_argument("--db", help="SQLite store path or postgresql:// URL "
                       "(default: $THOTH_DATABASE_URL, else $THOTH_DB, else $THOTH_HOME/thoth.db)")
    serve.add_argument("--policy", help="policy YAML for tenants without a stored policy (default: $THOTH_POLICY, else "
                       "$THOTH_HOME/policy.yaml, else the built-in default)")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve one local tenant without API keys (loopback addresses only)",
    )
    serve.add_argument(
        "--tenant",
        default="local",
        help="tenant of the first admin key, and the only tenant under --no-auth (default local)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=whole_number(1),
        default=5 * 1024 * 1024,
        help="larger request bodies get 413 (default 5 MiB)",
    )
    serve.add_argument(
        "--event-ingest-token",
        help="require this X-Thoth-Event-Ingest-Token on POST /v1/events/batch (default: $THOTH_EVENT_INGEST_TOKEN)",
    )
    serve.add_argument(
        "--ingest-in-process",
        action="store_true",
        help="store event batches on a worker thread of the server instead of in a child process "
             "(SQLite; the child keeps ingest off the GIL that /v1/enforce needs)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(fn=cmd_serve)

    keys = subparsers.add_parser("keys", help="manage API keys of a local store")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="")
    create.add_argument("--db")
    create.set_defaults(fn=cmd_keys_create)
    listing = ksub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--db")
    listing.set_defaults(fn=cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.add_argument("--tenant", help="only if the key belongs to this tenant")
    revoke.add_argument("--db")
    revoke.set_defaults(fn=cmd_keys_revoke)
