"""`thoth-nb serve`: the engine over HTTP (PROTOCOL.md), with approvals, tenants and a reviewer page.

Needs the `server` extra (`pip install "thoth-nb[server]"`). Imports engine/, never the reverse.
"""

from thoth_nb.server.app import ServerSettings, create_app
from thoth_nb.server.run import BackgroundServer, ensure_first_admin_key

__all__ = ["BackgroundServer", "ServerSettings", "create_app", "ensure_first_admin_key"]
