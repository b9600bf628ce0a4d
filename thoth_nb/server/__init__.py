"""`thoth-nb serve`: the engine over HTTP (PROTOCOL.md), with approvals, tenants and a reviewer page.

Needs the `server` extra (`pip install "thoth-nb[server]"`). Imports engine/, never the reverse.

Run it::

    thoth-nb serve --host 127.0.0.1 --port 8787 [--db PATH|postgresql://...] [--policy policy.yaml]
    thoth-nb keys create --tenant acme --role agent      # printed once; stored as a SHA-256
    THOTH_API_URL=http://127.0.0.1:8787 THOTH_API_KEY=thk_... python my_agent.py

A new store prints its first admin key once, and the reviewer page is at `/` (`/#key=thk_...`
fills the key in). `--no-auth` serves one local tenant without keys, on a loopback address only.

Endpoints (roles: agent, reviewer, admin; admin may do everything):

- wire (PROTOCOL §3-§6): `POST /v1/enforce` (agent), `GET /v1/enforce/hold/{token}[?wait=N]`
  (long-poll, max 30 s), `POST /v1/enforce/hold/{token}/cancel` (the waiter gives up),
  `POST /v1/events/batch` (agent), `POST /v1/explain`, `POST /{tenant_id}/thoth/tool-inventory`;
- reads (reviewer): `GET /v1/events`, `/v1/sessions[/{id}]`, `/v1/violations`, `/v1/inventory`,
  `/v1/approvals[?status=]`, `/v1/approvals/{id}`, `/v1/policies[/versions]`;
- `POST /v1/approvals/{id}/resolve` (reviewer); `PUT /v1/policies` with If-Match (admin);
  `GET|POST /v1/keys`, `DELETE /v1/keys/{key_id}` (admin, own tenant);
- `GET /healthz`, `GET /readyz` (`{"status": "ok", "long_poll": true}`), `/openapi.json`, `/docs`.

`BackgroundServer` runs the same app in a thread (tests, benchmarks, a notebook wanting the page).
"""

from thoth_nb.server.app import ServerSettings, create_app
from thoth_nb.server.run import BackgroundServer, ensure_first_admin_key

__all__ = ["BackgroundServer", "ServerSettings", "create_app", "ensure_first_admin_key"]
