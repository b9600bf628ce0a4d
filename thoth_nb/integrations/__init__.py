"""Framework integrations (STYLE: sentry-python's integrations).

One module per library (`langchain.py`, `langgraph.py`, `openai.py`, ...). Importing this package is
cheap: it imports no framework. It registers, for each built-in integration, a predicate with
`thoth_nb._instrument.register_adapter` that only looks at the *names* of the classes of the object
(`type(obj).__mro__[i].__module__`), so `thoth_nb.instrument(obj)` recognises a framework object
without importing the framework. The integration module itself is imported the first time such an
object is instrumented; if the library is missing it raises `DidNotEnable` and the user gets a
`ThothConfigError` naming the extra to install.

An integration that patches library classes subclasses `Integration`: `install()` runs `setup_once()`
once per process under a lock, `patch()` keeps every original, and `teardown()` restores them (used by
`%unload_ext thoth_nb` through `teardown_all()`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from thoth_nb._exceptions import ThothConfigError
from thoth_nb._instrument import register_adapter

__all__ = [
    "DidNotEnable",
    "Integration",
    "installed",
    "mro_module_startswith",
    "register",
    "teardown_all",
]

logger = logging.getLogger("thoth_nb")

_lock = threading.RLock()
_registry: dict[str, type[Integration]] = {}


class DidNotEnable(Exception):  # sentry-python's name, on purpose
    """The library an integration needs is missing (or unusable); raised at import of its module."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


class Integration:
    """Base of an integration that patches a library; every patch is undone by `teardown()`.

    Subclasses set `identifier` (also the extra's name), `package` (the distribution to version-check)
    and `supported` (min inclusive, max exclusive), and implement `setup_once()` using `patch()`.
    """

    identifier: ClassVar[str] = ""
    package: ClassVar[str | None] = None
    supported: ClassVar[tuple[tuple[int, ...], tuple[int, ...]] | None] = None

    _installed: ClassVar[bool] = False
    _originals: ClassVar[list[tuple[Any, str, Any, bool]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._installed = False
        cls._originals = []

    @classmethod
    def install(cls) -> bool:
        """Run `setup_once()` the first time only (thread-safe). Returns True when it ran now."""
        if cls._installed:
            return False
        with _lock:
            if cls._installed:
                return False
            cls.check_version()
            try:
                cls.setup_once()
            except BaseException:
                cls.teardown()
                raise
            cls._installed = True
            _registry[cls.identifier] = cls
            return True

    @classmethod
    def is_installed(cls) -> bool:
        return cls._installed

    @classmethod
    def check_version(cls) -> str | None:
        """Warn (once, at install) when the installed library is outside the tested range."""
        if not cls.package:
            return None
        try:
            version = importlib.metadata.version(cls.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        if cls.supported is not None:
            low, high = cls.supported
            got = _version_tuple(version)
            if not (low <= got < high):
                warnings.warn(
                    f"thoth_nb's {cls.identifier} integration is tested with {cls.package} "
                    f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}; you have {version}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return version

    @classmethod
    def setup_once(cls) -> None:
        """Patch the library. Called once per process, under the integrations lock."""
        raise NotImplementedError

    @classmethod
    def patch(cls, owner: Any, attr: str, replacement: Any) -> Any:
        """`setattr(owner, attr, replacement)`, remembering the original (also when it was inherited)."""
        had_own = attr in getattr(owner, "__dict__", {})
        original = owner.__dict__[attr] if had_own else getattr(owner, attr, None)
        cls._originals.append((owner, attr, original, had_own))
        setattr(owner, attr, replacement)
        return original

    @classmethod
    def teardown(cls) -> None:
        """Restore every patched attribute, newest first; the integration can be installed again."""
        with _lock:
            while cls._originals:
                owner, attr, original, had_own = cls._originals.pop()
                try:
                    if had_own:
                        setattr(owner, attr, original)
                    else:
                        delattr(owner, attr)
                except Exception:
                    logger.warning("thoth: could not restore %s.%s", owner, attr, exc_info=True)
            cls._installed = False
            _registry.pop(cls.identifier, None)


def installed() -> dict[str, type[Integration]]:
    """Integrations that have patched something in this process, by identifier."""
    with _lock:
        return dict(_registry)


def teardown_all() -> None:
    """Restore every original patched by any integration (`%unload_ext thoth_nb`)."""
    for cls in list(installed().values()):
        cls.teardown()


# --- cheap recognition and lazy loading ---------------------------------------------------------


def _type_modules(obj: Any) -> Iterable[str]:
    for klass in type(obj).__mro__:
        yield getattr(klass, "__module__", "") or ""


def mro_module_startswith(obj: Any, prefixes: tuple[str, ...], *, look_inside: bool = True) -> bool:
    """Is any class of `obj` (or, for a list/tuple/dict, of any item) defined in one of these packages?

    Looks only at module names, so it never imports the framework. `prefixes` are like
    `("langchain_core.", "langchain.")`.
    """
    if any(module.startswith(prefixes) for module in _type_modules(obj)):
        return True
    if look_inside and isinstance(obj, (list, tuple, dict)):
        items = obj.values() if isinstance(obj, dict) else obj
        return any(mro_module_startswith(item, prefixes, look_inside=False) for item in items)
    return False


def register(identifier: str, matches: Callable[[Any], bool], module: str,
             function: str = "instrument_object", extra: str | None = None) -> None:
    """Teach `instrument()` a framework's objects; `thoth_nb.integrations.<module>.<function>(obj, governor,
    **options)` is imported and called only when `matches(obj)` is true."""

    def adapter(obj: Any, governor: Any, **options: Any) -> Any:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except DidNotEnable as exc:
            raise ThothConfigError(
                f"{exc}. Install the integration with: pip install \"thoth-nb[{extra or identifier}]\""
            ) from None
        return getattr(mod, function)(obj, governor, **options)

    register_adapter(identifier, matches, adapter)


# --- built-in integrations (order matters: the first predicate that matches wins) ----------------

_LANGGRAPH = ("langgraph.",)
_LANGCHAIN = ("langchain_core.", "langchain.", "langchain_classic.", "langchain_community.")

# LangGraph first: its ToolNode and compiled graphs are also LangChain Runnables.
register("langgraph", lambda obj: mro_module_startswith(obj, _LANGGRAPH), "langgraph")
register("langchain", lambda obj: mro_module_startswith(obj, _LANGCHAIN), "langchain")

# OpenAI Agents SDK (import name `agents`) and MCP (ClientSession, Client, MCPServer/FastMCP).
# The OpenAI and Anthropic SDKs have loop helpers instead (thoth_nb.integrations.openai / .anthropic).
register("openai_agents", lambda obj: mro_module_startswith(obj, ("agents.",)), "openai_agents",
         extra="openai-agents")
register("mcp", lambda obj: mro_module_startswith(obj, ("mcp.",)), "mcp")
# an OpenAI / Anthropic client given to instrument(): an error naming the loop helpers, not a silent no-op
register("openai", lambda obj: mro_module_startswith(obj, ("openai.",), look_inside=False), "openai")
register("anthropic", lambda obj: mro_module_startswith(obj, ("anthropic.",), look_inside=False), "anthropic")
