"""Letting a widget click reach a kernel whose main thread is waiting on a held call (D6).

A busy ipykernel does not read widget messages meant for the main shell. What helps depends on the
kernel, so each path is feature-detected (they rest on private internals) and chosen once:

- ``route-subshell`` (ipykernel >= 7.4, comms carry ``_reply_subshell_for``): create a subshell of our
  own and route the comm messages of the approval card's widgets to it; the click then runs in that
  subshell's thread while the main thread waits. Frontend-agnostic.
- ``frontend-subshell`` (ipykernel 7.0-7.3): JupyterLab >= 4.4 and Notebook 7 already send widget
  comms on a subshell; nothing to do in the kernel (older frontends need the HTTP path).
- ``queue-pump`` (ipykernel 6.x): during the wait, flush the shell stream into ``kernel.msg_queue``
  and run only comm messages inline, putting every other message back in order. Never
  ``do_one_iteration``: that would run the next queued cell inside the waiting one.
- ``none``: no kernel, or an unknown one; waits are plain sleeps and clicks go through HTTP.

`KernelWaiter.wait(seconds)` is the core's wait hook; `notify()` wakes every waiter at once so a
click resumes the agent in milliseconds instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("thoth")

__all__ = ["KernelWaiter", "detect_strategy"]

_COMM_TYPES = (b"comm_msg", b"comm_open", b"comm_close")


def detect_strategy(kernel: Any) -> str:
    """Which path lets a click reach this kernel while its main thread waits (see module docs)."""
    if kernel is None:
        return "none"
    if getattr(kernel, "_supports_kernel_subshells", False) and getattr(kernel, "shell_channel_thread", None):
        try:
            from ipykernel.comm.comm import BaseComm
        except Exception:  # pragma: no cover - ipykernel without comm module
            return "frontend-subshell"
        if hasattr(BaseComm, "_reply_subshell_for"):
            return "route-subshell"
        return "frontend-subshell"
    if hasattr(kernel, "msg_queue") and getattr(kernel, "shell_stream", None) is not None:
        return "queue-pump"
    return "none"


class KernelWaiter:
    """The wait hook plus whatever makes comm messages arrive during it, for one kernel."""

    def __init__(self, kernel: Any, strategy: str | None = None) -> None:
        self.kernel = kernel
        self.strategy = strategy or detect_strategy(kernel)
        self.subshell_id: str | None = None
        self._cond = threading.Condition()
        self._generation = 0
        self._seen = threading.local()
        self._main = threading.main_thread()
        self._pump_lock = threading.Lock()
        self._ipython: Any = None
        #: True while a synchronous cell runs (set from IPython's pre/post_run_cell events): the
        #: kernel's loop cannot run then, so a worker thread may pump for a main thread blocked
        #: in, say, Thread.join().
        self.sync_cell_running = False

    # -- waking ---------------------------------------------------------------------------------

    def notify(self) -> None:
        """A hold was resolved here: every waiting thread re-polls now."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        """The core's wait hook: wait up to `seconds`, letting comm messages in, returning early
        after any resolution (including one that happened just before this call)."""
        deadline = time.monotonic() + max(0.0, seconds)
        seen = getattr(self._seen, "generation", None)
        with self._cond:
            generation = self._generation
        self._seen.generation = generation
        if seen is not None and seen != generation:
            return  # something was resolved since this thread last looked: poll again at once
        pump = self.strategy == "queue-pump" and (
            threading.current_thread() is self._main or self.sync_cell_running)
        while True:
            if pump:
                self.pump()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with self._cond:
                if self._generation != generation:
                    self._seen.generation = self._generation
                    return
                self._cond.wait(min(left, 0.01) if pump else left)
                if self._generation != generation:
                    self._seen.generation = self._generation
                    return

    def watch_cells(self, ipython: Any) -> None:
        """Track whether a synchronous cell is running (only the queue pump needs it)."""
        events = getattr(ipython, "events", None)
        if events is None or self.strategy != "queue-pump":
            return
        events.register("pre_run_cell", self._pre_run_cell)
        events.register("post_run_cell", self._post_run_cell)
        self._ipython = ipython

    def unwatch_cells(self) -> None:
        ipython = getattr(self, "_ipython", None)
        if ipython is None:
            return
        for name, fn in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                ipython.events.unregister(name, fn)
            except ValueError:
                pass
        self._ipython = None

    def _pre_run_cell(self, info: Any) -> None:
        ipython: Any = getattr(self, "_ipython", None)
        raw = getattr(info, "raw_cell", "") or ""
        try:
            transformed = ipython.transform_cell(raw)
            is_async = bool(ipython.should_run_async(raw, transformed_cell=transformed, preprocessing_exc_tuple=None))
        except Exception:
            is_async = True  # when unsure, never pump from a worker thread
        self.sync_cell_running = not is_async

    def _post_run_cell(self, result: Any) -> None:
        self.sync_cell_running = False

    # -- route-subshell (ipykernel >= 7.4) -------------------------------------------------------

    def ensure_subshell(self, timeout: float = 5.0) -> str | None:
        """Create (once) the subshell that handles the card's comm messages."""
        if self.strategy != "route-subshell":
            return None
        if self.subshell_id is not None:
            return self.subshell_id
        try:
            self.subshell_id = self._create_via_manager(timeout)
        except Exception:
            logger.debug("thoth: subshell via manager failed; trying the control channel", exc_info=True)
            try:
                self.subshell_id = self._create_via_control(timeout)
            except Exception:
                logger.warning("thoth: could not create a kernel subshell; inline buttons may not respond "
                               "while a cell runs (use the link or `thoth-nb approve`)", exc_info=True)
                self.strategy = "none"
        return self.subshell_id

    def _in_shell_channel_thread(self, fn: Any, timeout: float) -> Any:
        thread = self.kernel.shell_channel_thread
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn(thread.manager)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        thread.io_loop.add_callback(run)
        if not done.wait(timeout):
            raise TimeoutError("the kernel's shell channel thread did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _create_via_manager(self, timeout: float) -> str:
        # the manager is created lazily on the parent thread; touch it there first
        if threading.current_thread() is self.kernel.shell_channel_thread.parent_thread:
            _ = self.kernel.shell_channel_thread.manager
        return str(self._in_shell_channel_thread(lambda manager: manager._create_subshell(), timeout))

    def _create_via_control(self, timeout: float) -> str:
        """`create_subshell_request` on the control channel from a client built from our connection file."""
        from ipykernel.connect import get_connection_file
        from jupyter_client.blocking.client import BlockingKernelClient

        client = BlockingKernelClient(connection_file=get_connection_file())
        client.load_connection_file()
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        try:
            msg = client.session.msg("create_subshell_request", {})
            client.control_channel.send(msg)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                reply = client.control_channel.get_msg(timeout=left)
                if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                    if reply["content"].get("status") != "ok":
                        raise RuntimeError(f"create_subshell_request failed: {reply['content']}")
                    return str(reply["content"]["subshell_id"])
            raise TimeoutError("no create_subshell_reply")
        finally:
            client.stop_channels()

    def route(self, widgets: Iterable[Any]) -> None:
        """Send the frontend's messages for these widgets to our subshell (>= 7.4)."""
        if self.strategy != "route-subshell":
            return
        subshell = self.ensure_subshell()
        if subshell is None:
            return
        for widget in widgets:
            comm = getattr(widget, "comm", None)
            if comm is not None:
                comm._reply_subshell_for = lambda data, default, _s=subshell: _s

    def close(self) -> None:
        """Delete our subshell, if any; stop watching cells."""
        self.unwatch_cells()
        subshell, self.subshell_id = self.subshell_id, None
        if subshell is None or self.strategy != "route-subshell":
            return
        try:
            self._in_shell_channel_thread(lambda manager: manager._delete_subshell(subshell), 2.0)
        except Exception:
            logger.debug("thoth: could not delete subshell %s", subshell, exc_info=True)

    # -- queue-pump (ipykernel 6.x) --------------------------------------------------------------

    def pump(self) -> int:
        """Run queued comm messages now, keep the rest queued in order; returns how many ran."""
        if not self._pump_lock.acquire(blocking=False):
            return 0
        try:
            return self._pump()
        finally:
            self._pump_lock.release()

    def _pump(self) -> int:
        kernel = self.kernel
        stream = getattr(kernel, "shell_stream", None)
        queue = getattr(kernel, "msg_queue", None)
        if stream is None or queue is None:
            return 0
        try:
            stream.flush()  # socket -> schedule_dispatch -> msg_queue
        except Exception:
            logger.debug("thoth: shell flush failed", exc_info=True)
        items: list[Any] = []
        while True:
            try:
                items.append(queue.get_nowait())
            except Exception:  # tornado QueueEmpty / asyncio.QueueEmpty
                break
        if not items:
            return 0
        ran = 0
        keep: list[Any] = []
        for item in items:
            frames = item[2][0] if len(item) > 2 and item[2] else None
            if frames is not None and self._msg_type(frames) in _COMM_TYPES:
                self._run_comm(frames)
                ran += 1
            else:
                keep.append(item)
        for item in keep:
            queue.put_nowait(item)
        return ran

    def _msg_type(self, frames: Any) -> bytes | None:
        """Peek at the header without verifying the signature (a verified message cannot be
        deserialized twice: the session rejects duplicate signatures)."""
        try:
            session = self.kernel.session
            _, parts = session.feed_identities(frames, copy=False)
            raw = parts[1]
            header = session.unpack(raw.bytes if hasattr(raw, "bytes") else raw)
            return str(header.get("msg_type", "")).encode()
        except Exception:
            return None

    def _run_comm(self, frames: Any) -> None:
        kernel = self.kernel
        try:
            idents, parts = kernel.session.feed_identities(frames, copy=False)
            msg = kernel.session.deserialize(parts, content=True, copy=False)
            handler = kernel.shell_handlers.get(msg["header"]["msg_type"])
            if handler is None:
                return
            # no set_parent: output of the waiting cell must keep landing in that cell
            result = handler(kernel.shell_stream, idents, msg)
            if asyncio.iscoroutine(result):
                result.close()
        except Exception:
            logger.debug("thoth: comm message failed during a wait", exc_info=True)

    async def pump_while(self, done: Any, interval: float = 0.02) -> None:
        """For an async cell on 6.x: pump comm messages on the running loop until `done()`."""
        while not done():
            self.pump()
            await asyncio.sleep(interval)
