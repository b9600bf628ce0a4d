"""The enforcer itself: policy, decisions, holds and storage. Imports neither server/ nor notebook/."""

from thoth_nb.engine.decide import Engine, RequestError, args_hash, hold_reply, wire_response
from thoth_nb.engine.policy import DEFAULT_POLICY_YAML, Policy, load_policy, parse_policy
from thoth_nb.engine.store import HoldConflict, HoldNotFound, SQLiteStore, open_store

__all__ = [
    "DEFAULT_POLICY_YAML",
    "Engine",
    "HoldConflict",
    "HoldNotFound",
    "Policy",
    "RequestError",
    "SQLiteStore",
    "args_hash",
    "hold_reply",
    "load_policy",
    "open_store",
    "parse_policy",
    "wire_response",
]
