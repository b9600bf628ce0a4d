"""The hash-chain check both stores' tests use: one definition of what a valid chain is."""

from __future__ import annotations

import hashlib
from typing import Any

from thoth_nb import _json


def verify_chain(rows: list[dict[str, Any]]) -> None:
    """Every event's hash is sha256(previous hash + its stored body), indexes 0..n-1 per session."""
    previous = ""
    for index, row in enumerate(rows):
        body = {k: v for k, v in row.items() if k not in ("hash", "seq")}
        assert body["chain_index"] == index and body["previous_hash"] == previous
        assert hashlib.sha256((previous + _json.dumps(body)).encode()).hexdigest() == row["hash"]
        previous = row["hash"]
