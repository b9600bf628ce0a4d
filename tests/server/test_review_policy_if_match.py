"""PUT /v1/policies with If-Match holds across servers sharing one store: a policy another server saved
between this server's etag check and its save makes this PUT a 412, never a silent overwrite."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from thoth_nb.engine.policy import load_policy
from thoth_nb.engine.store import SQLiteStore
from thoth_nb.server.app import create_app


class _OtherServerSavesFirst(SQLiteStore):
    """This server's store, on which the other server (`live`) saves a policy just before this one does."""

    other: Any = None

    def save_policy(self, *args: Any, **kwargs: Any) -> Any:
        other, self.other = self.other, None
        if other is not None:
            other()
        return super().save_policy(*args, **kwargs)


def test_a_policy_saved_meanwhile_by_another_server_is_not_overwritten(live: Any) -> None:
    admin = live.client("acme", "admin")
    etag = admin.get("/v1/policies").json()["etag"]
    theirs = "version: 1\ndefault: allow\n# saved by the other server\n"
    ours = "version: 1\ndefault: block\n"

    def other_server_saves() -> None:
        saved = admin.put("/v1/policies", json={"policy": theirs}, headers={"If-Match": etag})
        assert saved.status_code == 200, saved.text

    store = _OtherServerSavesFirst(live.server.db)
    store.other = other_server_saves
    app = create_app(store, load_policy(live.policy_path))
    try:
        headers = {"Authorization": f"Bearer {live.key('acme', 'admin')}", "If-Match": etag}
        with TestClient(app, base_url="http://127.0.0.1") as here:
            reply = here.put("/v1/policies", json={"policy": ours}, headers=headers)
        assert reply.status_code == 412, reply.text
        assert reply.json()["error"] == "stale" and reply.json()["version"] == 1
        current = admin.get("/v1/policies").json()
        assert current["policy"] == theirs and current["version"] == 1
        assert [v["version"] for v in admin.get("/v1/policies/versions").json()["items"]] == [1]
    finally:
        app.state.thoth.close()
        store.close()
