"""`Binding.tool_args` (generated namers) names arguments exactly as `dict(zip(names, args))` + kwargs did."""

from __future__ import annotations

from typing import Any

import pytest

from thoth_nb._instrument import _NAMER_ARITY, Binding, _param_names
from thoth_nb._models import tool_args_of


def _expected(names: tuple[str, ...] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    if not args:
        return kwargs or None
    if names is None or len(args) > len(names) or (len(args) == 1 and not kwargs and isinstance(args[0], dict)):
        return tool_args_of(args, kwargs)
    named = dict(zip(names, args, strict=False))
    named.update(kwargs)
    return named


@pytest.mark.parametrize("count", [0, 1, 2, 3, _NAMER_ARITY, _NAMER_ARITY + 3])
def test_positional_and_keyword_arguments_are_named_as_before(count: int) -> None:
    names = tuple(f"p{i}" for i in range(count))
    binding = Binding(None, "tool", names)  # type: ignore[arg-type]  # the governor is not used here
    for n in range(count + 2):  # also more positional arguments than names
        args = tuple(f"v{i}" for i in range(n))
        for kwargs in ({}, {"extra": 1}, {"p0": "kw"} if n == 0 else {"q": [1]}):
            got = binding.tool_args(args, dict(kwargs))
            assert got == _expected(names, args, dict(kwargs))
            if got is not None:
                assert list(got) == list(_expected(names, args, dict(kwargs)) or {})  # same key order


def test_a_single_dict_argument_and_unnameable_signatures() -> None:
    def tool(payload: dict[str, Any]) -> None: ...

    def star(*args: Any) -> None: ...

    binding = Binding(None, "tool", _param_names(tool))  # type: ignore[arg-type]
    assert binding.tool_args(({"a": 1},), {}) == _expected(("payload",), ({"a": 1},), {})
    assert binding.tool_args(({"a": 1},), {"k": 2}) == {"payload": {"a": 1}, "k": 2}
    unnamed = Binding(None, "star", _param_names(star))  # type: ignore[arg-type]
    assert unnamed.names is None
    assert unnamed.tool_args((1, 2), {}) == tool_args_of((1, 2), {})


def test_odd_parameter_names_stay_data() -> None:
    names = ("a", "b_", "_c", "d" * 50)
    binding = Binding(None, "tool", names)  # type: ignore[arg-type]
    assert binding.tool_args((1, 2, 3, 4), {}) == {"a": 1, "b_": 2, "_c": 3, "d" * 50: 4}
