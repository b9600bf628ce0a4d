"""The IPython extension: `%load_ext thoth_nb` registers the `%thoth` magics, the live decision feed,
completion, and the inline approval cards; `%unload_ext thoth_nb` removes all of it, restores every
object it instrumented and flushes events.

State lives in this module, not in `thoth_nb`: `%reload_ext thoth_nb` re-imports only the top-level
package, so what was registered (and what was instrumented) is known here across a reload, and
nothing is registered or patched twice. `%reload_ext thoth_nb` (unload called from IPython's
`reload_extension`) puts governance back on the objects it had to restore, so a reload never leaves an
agent ungoverned; a plain `%unload_ext` does not.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from thoth_nb import _context
from thoth_nb.notebook.patches import Registry

if TYPE_CHECKING:
    from thoth_nb.notebook.feed import Feed
    from thoth_nb.notebook.magics import ThothMagics

__all__ = ["ExtensionState", "load_ipython_extension", "state", "unload_ipython_extension"]

logger = logging.getLogger("thoth_nb")


class ExtensionState:
    """What one loaded extension registered, so unloading can take exactly that back."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.shell: Any = None
        self.magics: ThothMagics | None = None
        self.feed: Feed | None = None
        self.matcher: Any = None
        self.approvals = False
        # integrations already patching the process before %load_ext: unload leaves those alone
        self.integrations_before: set[str] = set()
        # (shell id, records) of an unload done by %reload_ext, for the load that follows it
        self.unloaded: tuple[int, list[tuple[str | None, MutableMapping[str, Any] | None, Any, dict[str, Any],
                                             str]]] | None = None
        # (shell id, ThothMagics settings) of that unload: `%thoth feed off`, `%thoth policy load` survive it
        self.settings: tuple[int, dict[str, Any]] | None = None


state = ExtensionState()


def feed_mode(shell: Any) -> str:
    """widget (kernel with ipywidgets), html (kernel without), text (terminal IPython, test shells)."""
    if getattr(shell, "kernel", None) is None:
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "html"
    return "widget"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext thoth_nb`. Loading twice in one shell is a no-op."""
    if state.shell is ipython and state.magics is not None:
        return
    if state.shell is not None:
        unload_ipython_extension(state.shell)
    from thoth_nb.notebook.feed import Feed
    from thoth_nb.notebook.magics import ThothMagics, make_matcher

    magics = ThothMagics(ipython, state=state)
    settings, state.settings = state.settings, None
    if settings is not None and settings[0] == id(ipython):
        for name, value in settings[1].items():  # as they were before %reload_ext (the feed reads them below)
            setattr(magics, name, value)
    ipython.register_magics(magics)
    from thoth_nb.notebook import policy_magic  # %%thoth_policy: policy tests in a cell

    policy_magic.register(ipython)
    magics.install_async_cells()  # %%thoth cells with top-level await
    feed = Feed(feed_mode(ipython), enabled=lambda: bool(magics.feed), max_rows=lambda: int(magics.feed_max_rows),
                throttle=float(magics.feed_throttle))
    ipython.events.register("pre_run_cell", feed.pre_run_cell)
    ipython.events.register("post_run_cell", feed.post_run_cell)
    if _inside_cell():  # `%load_ext thoth_nb` in the same cell as the agent: this cell gets a feed too
        feed.pre_run_cell()
    _context.add_listener(feed)
    completer = getattr(ipython, "Completer", None)
    if completer is not None and hasattr(completer, "custom_matchers"):
        state.matcher = make_matcher(magics)
        completer.custom_matchers.append(state.matcher)
    state.shell, state.magics, state.feed = ipython, magics, feed
    from thoth_nb.integrations import installed

    state.integrations_before = set(installed())
    state.approvals = _install_approvals(ipython)
    _reapply_after_reload(ipython)
    _warm_frames()


#: a local store file smaller than this (~40k events) is read in well under a second: nothing to warm
_WARM_FROM_BYTES = 64 << 20


def _warm_frames() -> None:
    """Get a first `thoth_nb.events()` of a big local store ready while the user does something else: in a
    daemon thread, import pandas/pyarrow (`analytics.frames`) and start the reader child
    (`frames.warm_reader`, which also skips a store of too few rows, a server and missing ADBC). Nothing
    for a small or missing store file, or with THOTH_WARM_READER=0."""
    import os
    import threading

    from thoth_nb import _runtime

    if os.environ.get("THOTH_WARM_READER", "").lower() in ("0", "false", "no", "off"):
        return
    try:
        if os.path.getsize(_runtime.store_path()) < _WARM_FROM_BYTES:
            return
    except OSError:
        return

    def warm() -> None:
        try:
            from thoth_nb.analytics.frames import warm_reader

            warm_reader()
        except Exception:  # pandas missing, an unreadable store...: events() reports it when called
            logger.debug("thoth: warming the DataFrame reader failed", exc_info=True)

    threading.Thread(target=warm, name="thoth-nb-warm-frames", daemon=True).start()


def _install_approvals(ipython: Any) -> bool:
    """The inline Approve/Deny cards (issue 6) when that module is present and a kernel is running."""
    if getattr(ipython, "kernel", None) is None:
        return False
    try:
        from thoth_nb.notebook import approval
    except ImportError:
        return False
    try:
        approval.install(ipython)
    except Exception:  # the cards are a convenience: %thoth approve and the CLI still work
        logger.warning("thoth: inline approval cards unavailable", exc_info=True)
        return False
    return True


def _reapply_after_reload(ipython: Any) -> None:
    unloaded, state.unloaded = state.unloaded, None
    if unloaded is None:
        return
    shell_id, records = unloaded
    if shell_id != id(ipython) or not records:
        return
    for name, namespace, original, options, source in records:
        try:
            result = state.registry.instrument(original, options, name=name, namespace=namespace, source=source)
        except Exception as exc:
            print(f"thoth: could not govern {name or type(original).__name__} again after reload: {exc}")
            continue
        if result is not original and namespace is not None and name is not None:
            namespace[name] = result
    print(f"thoth: extension reloaded; {len(records)} object(s) governed again")


def _inside_cell() -> bool:
    """True while IPython runs a cell's code (not at startup, when `c.InteractiveShellApp.extensions` loads us)."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name in ("run_code", "run_ast_nodes") and code.co_filename.endswith("interactiveshell.py"):
            return True
        frame = frame.f_back
    return False


def _reloading() -> bool:
    """True when IPython's `ExtensionManager.reload_extension` is the caller (`%reload_ext`)."""
    frame: Any = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code.co_name == "reload_extension" and "extensions" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _teardown_integrations() -> None:
    """Undo the library patches integrations made while the extension was loaded (not earlier ones)."""
    from thoth_nb.integrations import installed

    for identifier, integration in installed().items():
        if identifier not in state.integrations_before:
            integration.teardown()


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext thoth_nb`: remove magics, feed, completion and cards; restore objects; flush."""
    if state.shell is None:
        return
    magics, feed = state.magics, state.feed
    manager = getattr(ipython, "magics_manager", None)
    if magics is not None:
        magics.uninstall_async_cells()
    if manager is not None and magics is not None:
        for kind in ("line", "cell"):
            table = manager.magics.get(kind, {})
            bound = table.get("thoth")
            if bound is not None and getattr(bound, "__self__", None) is magics:
                del table["thoth"]
        if manager.registry.get("ThothMagics") is magics:
            del manager.registry["ThothMagics"]
        from thoth_nb.notebook import policy_magic

        policy_magic.unregister(ipython)
    configurables = getattr(ipython, "configurables", None)
    if configurables is not None and magics in configurables:
        configurables.remove(magics)
    if feed is not None:
        for event, callback in (("pre_run_cell", feed.pre_run_cell), ("post_run_cell", feed.post_run_cell)):
            try:
                ipython.events.unregister(event, callback)
            except ValueError:
                pass
        _context.remove_listener(feed)
        feed.close()
    completer = getattr(ipython, "Completer", None)
    if state.matcher is not None and completer is not None and state.matcher in completer.custom_matchers:
        completer.custom_matchers.remove(state.matcher)
    if state.approvals:
        from thoth_nb.notebook import approval

        approval.uninstall(ipython)
    records = [(i.name, i.namespace, i.original, i.options, i.source) for i in state.registry.items]
    restored = state.registry.restore_all()
    if not _reloading():
        _teardown_integrations()
    state.unloaded = (id(ipython), records) if _reloading() else None
    state.settings = (id(ipython), {name: getattr(magics, name) for name in magics.trait_names(config=True)}
                      ) if _reloading() and magics is not None else None
    state.shell = state.magics = state.feed = state.matcher = None
    state.approvals = False
    from thoth_nb._runtime import flush

    flush(timeout=5.0)
    if restored:
        print(f"thoth: extension unloaded; {restored} object(s) restored to their original tools")
