"""A governed generator is the tool's generator to its caller: send(), throw() and a return value reach it
(coroutine-style tools and `yield from` delegation rely on them), and each shape still records one POST."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

import thoth_nb
from thoth_nb._runtime import local_store


class Retry(Exception):
    pass


def running_total(start: int) -> Generator[int, int | None, str]:
    total = start
    while True:
        try:
            step = yield total
        except Retry:
            step = 0
            total = -1  # the tool saw the exception thrown in and answers with a marker
        if step is None:
            return f"total {total}"
        total += step


async def arunning_total(start: int) -> AsyncIterator[int]:
    total = start
    while True:
        try:
            step = yield total
        except Retry:
            step = 0
            total = -1
        if step is None:
            return
        total += step


@pytest.fixture
def gcfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "approved_scope": [*cfg["approved_scope"], "running_total", "arunning_total"]}


def posts(gcfg: dict[str, Any]) -> list[dict[str, Any]]:
    assert thoth_nb.flush()
    return [e for e in local_store().events(str(gcfg["tenant_id"])) if e["event_type"] == "TOOL_CALL_POST"]


def test_send_throw_and_return_value_reach_a_governed_generator(gcfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**gcfg)(running_total)
    gen = tool(10)
    assert next(gen) == 10
    assert gen.send(5) == 15
    assert gen.send(3) == 18
    assert gen.throw(Retry()) == -1
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == "total -1"

    def caller() -> Generator[int, int | None, str]:
        return (yield from tool(1))

    delegating = caller()
    assert next(delegating) == 1
    assert delegating.send(2) == 3
    with pytest.raises(StopIteration) as stop:
        delegating.send(None)
    assert stop.value.value == "total 3"
    recorded = posts(gcfg)
    assert [p["metadata"]["chunk_count"] for p in recorded] == [4, 2]
    assert all(p["metadata"].get("outcome", "ok") == "ok" for p in recorded)


def test_an_exception_the_generator_does_not_handle_is_its_error(gcfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**gcfg)(running_total)
    gen = tool(0)
    next(gen)
    with pytest.raises(KeyError):
        gen.throw(KeyError("boom"))
    post = posts(gcfg)[0]
    assert post["metadata"]["outcome"] == "error" and post["metadata"]["error_type"] == "KeyError"


async def test_asend_and_athrow_reach_a_governed_async_generator(gcfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**gcfg)(arunning_total)
    gen = tool(10)
    assert await gen.__anext__() == 10
    assert await gen.asend(5) == 15
    assert await gen.athrow(Retry()) == -1
    with pytest.raises(StopAsyncIteration):
        await gen.asend(None)
    gen2 = tool(0)
    await gen2.__anext__()
    with pytest.raises(KeyError):
        await gen2.athrow(KeyError("boom"))
    first, second = posts(gcfg)
    assert first["metadata"]["chunk_count"] == 3 and first["metadata"].get("outcome", "ok") == "ok"
    assert second["metadata"]["outcome"] == "error"
