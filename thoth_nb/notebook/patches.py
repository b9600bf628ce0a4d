"""What the extension instrumented, and how to put each object back the way it found it.

`%unload_ext thoth_nb` must leave no governed wrapper behind that the extension installed
(STYLE: sentry keeps the original so unloading restores it). Before the first `instrument()` of an
object we record its tools as they are (list/dict items, each tool's own `run` attribute, the
namespace binding of a bare function); restoring replays that record. A final pass replaces any
governed callable still sitting in `.tools` by `unwrap()` of it, for shapes an integration patched
in ways the record did not foresee.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from thoth_nb._instrument import is_governed, unwrap

__all__ = ["Instrumented", "Registry"]

_MISSING = object()


def _set(obj: Any, name: str, value: Any) -> None:
    try:
        setattr(obj, name, value)
    except (AttributeError, TypeError, ValueError):
        object.__setattr__(obj, name, value)


def _drop(obj: Any, name: str) -> None:
    for remove in (delattr, object.__delattr__):
        try:
            remove(obj, name)
            return
        except (AttributeError, TypeError):
            continue
    getattr(obj, "__dict__", {}).pop(name, None)


def _run_state(tool: Any) -> Callable[[], None] | None:
    """Undo for one tool's `.run`: put back its own attribute, or drop ours to expose the class's."""
    if not hasattr(tool, "run"):
        return None
    own = getattr(tool, "__dict__", None)
    before = own.get("run", _MISSING) if isinstance(own, dict) else tool.run

    def undo() -> None:
        if before is _MISSING:
            if isinstance(getattr(tool, "__dict__", None), dict) and "run" in tool.__dict__:
                _drop(tool, "run")
        else:
            _set(tool, "run", before)

    return undo


def _container_undo(tools: Any) -> list[Callable[[], None]]:
    undo: list[Callable[[], None]] = []
    if isinstance(tools, list):
        items = list(tools)
        undo.extend(u for u in (_run_state(t) for t in items) if u is not None)
        undo.append(lambda: tools.__setitem__(slice(None), items))
    elif isinstance(tools, dict):
        saved = dict(tools)
        undo.extend(u for u in (_run_state(t) for t in saved.values()) if u is not None)

        def restore() -> None:
            tools.clear()
            tools.update(saved)

        undo.append(restore)
    return undo


def _tools_of(obj: Any) -> Any:
    if isinstance(obj, (list, dict)):
        return obj
    return getattr(obj, "tools", None)


def _items(obj: Any) -> list[tuple[Any, Any]]:
    tools = _tools_of(obj)
    if isinstance(tools, dict):
        return list(tools.items())
    if isinstance(tools, list):
        return list(enumerate(tools))
    return []


def _has_governed(obj: Any) -> bool:
    if is_governed(obj):
        return True
    return any(is_governed(t) or is_governed(getattr(t, "run", None)) for _, t in _items(obj))


def _sweep(obj: Any) -> None:
    """Replace governed callables still in `.tools` by their originals."""
    tools = _tools_of(obj)
    for key, tool in _items(obj):
        if is_governed(tool):
            tools[key] = unwrap(tool)
        elif is_governed(getattr(tool, "run", None)):
            _set(tool, "run", unwrap(tool.run))


class Instrumented:
    """One object the extension governs: where it lives, the options it was given, how to undo it."""

    def __init__(self, name: str | None, target: Any, options: dict[str, Any], undo: list[Callable[[], None]],
                 original: Any, namespace: MutableMapping[str, Any] | None, source: str) -> None:
        self.name = name
        self.target = target  # what instrument() returned (the wrapper, for a bare function)
        self.options = options
        self.undo = undo
        self.original = original
        self.namespace = namespace
        self.source = source  # "%thoth instrument" or "%%thoth"
        self.governed_before = False  # set by Registry: were any tools governed before we came?

    @property
    def agent_id(self) -> str:
        return str(self.options.get("agent_id") or "")

    @property
    def mode(self) -> str:
        return str(self.options.get("enforcement") or "")

    def restore(self) -> None:
        for step in reversed(self.undo):
            step()
        if self.target is not self.original and self.namespace is not None and self.name is not None and \
                self.namespace.get(self.name) is self.target:
            self.namespace[self.name] = self.original
        if not self.governed_before:  # never strip governance the user had put there themselves
            _sweep(self.original)

    def __repr__(self) -> str:
        return f"<Instrumented {self.name or type(self.target).__name__} agent={self.agent_id} mode={self.mode}>"


class Registry:
    """Every object the extension instrumented, in order; re-instrumenting keeps the first record."""

    def __init__(self) -> None:
        self.items: list[Instrumented] = []
        self._lock = threading.Lock()

    def find(self, obj: Any) -> Instrumented | None:
        for item in self.items:
            if item.target is obj or item.original is obj:
                return item
        return None

    def instrument(self, obj: Any, options: dict[str, Any], *, name: str | None = None,
                   namespace: MutableMapping[str, Any] | None = None, source: str = "%thoth instrument") -> Any:
        """`thoth_nb.instrument(obj, **options)`, recording how to undo it the first time."""
        from thoth_nb._instrument import instrument

        with self._lock:
            known = self.find(obj)
            if known is not None:
                result = instrument(known.target, **options)
                known.options = dict(options)
                if name is not None:
                    known.name, known.namespace = name, namespace
                return result
            undo = [] if callable(obj) and not hasattr(obj, "tools") and not isinstance(obj, (list, dict)) else (
                _container_undo(_tools_of(obj)))
            governed_before = _has_governed(obj)
            result = instrument(obj, **options)
            item = Instrumented(name, result, dict(options), undo, obj, namespace, source)
            item.governed_before = governed_before
            self.items.append(item)
            return result

    def for_agent(self, agent_id: str) -> list[Instrumented]:
        return [i for i in self.items if i.agent_id == agent_id]

    def restore_all(self) -> int:
        with self._lock:
            items, self.items = self.items, []
        for item in reversed(items):
            item.restore()
        return len(items)
