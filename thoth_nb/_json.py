"""JSON helpers: orjson when installed (2-5x faster), the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical", "dumps", "dumps_bytes", "loads"]

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without the `fast` extra
    _orjson = None  # type: ignore[assignment]


def _default(value: Any) -> Any:
    from thoth_nb._models import json_safe

    return json_safe(value)


if _orjson is not None:
    _OPTS = _orjson.OPT_NON_STR_KEYS

    def dumps_bytes(value: Any) -> bytes:
        try:
            return _orjson.dumps(value, default=_default, option=_OPTS)
        except (TypeError, _orjson.JSONEncodeError):
            return _orjson.dumps(_default(value), option=_OPTS)

    def dumps(value: Any) -> str:
        return dumps_bytes(value).decode()

    def loads(data: str | bytes) -> Any:
        return _orjson.loads(data)

    def canonical(value: Any) -> bytes:
        return _orjson.dumps(_default(value), option=_OPTS | _orjson.OPT_SORT_KEYS)

else:  # pragma: no cover

    def dumps(value: Any) -> str:
        return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False)

    def dumps_bytes(value: Any) -> bytes:
        return dumps(value).encode()

    def loads(data: str | bytes) -> Any:
        return json.loads(data)

    def canonical(value: Any) -> bytes:
        return json.dumps(_default(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
