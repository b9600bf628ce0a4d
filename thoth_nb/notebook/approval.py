"""Inline approval cards: Approve / Deny a held tool call right under the cell that is waiting on it.

`install(ipython)` registers a listener with the core: when a governed call is held (STEP_UP) a card
is shown on the calling thread, before the wait starts, so it lands under the running cell. Clicks
resolve the hold in the store (D5) through `thoth_nb.approve` / `deny`; the waiting call wakes at
once. How a click reaches a busy kernel is `_kernel_wait`'s job (D6). Where no kernel-side path is
sure to work, the card also carries buttons that call a small HTTP server in this kernel
(127.0.0.1, one-time secret per hold), and it always shows the non-widget fallbacks.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hmac
import html
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thoth_nb import _approvals, _context
from thoth_nb.notebook._kernel_wait import KernelWaiter

if TYPE_CHECKING:
    from thoth_nb._flow import Call

__all__ = ["ApprovalCard", "ApprovalCards", "LocalResolver", "install", "uninstall"]

logger = logging.getLogger("thoth")

_FOLD_AT = 120  # characters: longer argument values are folded behind <details>
_TICK = 1.0  # seconds between countdown refreshes (and checks for resolutions made elsewhere)

_STYLE = (
    "border:1px solid var(--jp-border-color1,#ccc);border-left:4px solid {accent};border-radius:4px;"
    "padding:6px 10px;font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;line-height:1.45"
)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_args(tool_args: Any, fold_at: int = _FOLD_AT) -> str:
    """Arguments as HTML: one line per argument, pretty JSON, long values folded."""
    if tool_args is None:
        return "<i>(no arguments)</i>"
    if not isinstance(tool_args, dict):
        tool_args = {"args": tool_args}
    if not tool_args:
        return "<i>(no arguments)</i>"
    rows = []
    for key, value in tool_args.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, ensure_ascii=False)
        shown = _esc(text)
        if len(text) > fold_at or text.count("\n") > 6:
            head = _esc(text[:fold_at].split("\n")[0])
            shown = (f"<details><summary><code>{head}…</code> <small>({len(text)} chars)</small></summary>"
                     f"<pre style='white-space:pre-wrap;margin:2px 0'>{shown}</pre></details>")
        else:
            shown = f"<code style='white-space:pre-wrap'>{shown}</code>"
        rows.append(f"<tr><td style='vertical-align:top;padding-right:8px'><b>{_esc(key)}</b></td>"
                    f"<td>{shown}</td></tr>")
    return "<table style='border-collapse:collapse'>" + "".join(rows) + "</table>"


def _fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s"


def _utc_time(iso: str | None) -> str:
    if not iso:
        return _dt.datetime.now(_dt.UTC).strftime("%H:%M:%S UTC")
    try:
        return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%H:%M:%S UTC")
    except ValueError:
        return iso


# --- the HTTP fallback ----------------------------------------------------------------------------


class LocalResolver:
    """A small HTTP server in the kernel that resolves holds for the card's fallback buttons.

    It listens on 127.0.0.1 only; every hold gets its own secret, valid for one resolution. A
    browser reaches it directly (local Jupyter) or through jupyter-server-proxy
    (`{baseUrl}proxy/<port>/`, authenticated by the Jupyter cookie) behind JupyterHub or Binder.
    Requests are `POST /thoth/resolve` with a text/plain JSON body, so no CORS preflight is needed.
    """

    def __init__(self, resolve: Callable[[str, str, str], dict[str, Any]]) -> None:
        self._resolve = resolve  # (approval_id, action, scope) -> record
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        self.start()
        return int(self._server.server_address[1])

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

            owner = self

            class Handler(BaseHTTPRequestHandler):
                def log_message(self, format: str, *args: Any) -> None:
                    logger.debug("thoth resolver: " + format, *args)

                def _reply(self, status: int, body: dict[str, Any]) -> None:
                    data = json.dumps(body, default=str).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Access-Control-Allow-Origin", "*")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

                def do_OPTIONS(self) -> None:
                    self.send_response(204)
                    self.send_header("Access-Control-Allow-Origin", "*")
                    self.send_header("Access-Control-Allow-Methods", "POST")
                    self.send_header("Access-Control-Allow-Headers", "Content-Type")
                    self.end_headers()

                def do_POST(self) -> None:
                    if self.path.split("?")[0].rstrip("/") not in ("/thoth/resolve", "/resolve"):
                        self._reply(404, {"error": "not found"})
                        return
                    try:
                        length = min(int(self.headers.get("Content-Length") or 0), 65536)
                        body = json.loads(self.rfile.read(length) or b"{}")
                        status, answer = owner.handle(body)
                    except Exception as exc:
                        status, answer = 400, {"error": f"{type(exc).__name__}: {exc}"}
                    self._reply(status, answer)

            self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="thoth-approval-http", daemon=True)
            self._thread.start()

    def secret_for(self, approval_id: str) -> str:
        with self._lock:
            secret = self._secrets.get(approval_id)
            if secret is None:
                secret = self._secrets[approval_id] = secrets.token_urlsafe(24)
            return secret

    def forget(self, approval_id: str) -> None:
        with self._lock:
            self._secrets.pop(approval_id, None)

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        approval_id = str(body.get("id", ""))
        offered = str(body.get("secret", ""))
        action = body.get("action")
        scope = body.get("scope", "once")
        if action not in ("approve", "deny") or scope not in ("once", "session"):
            return 400, {"error": "action must be approve or deny; scope once or session"}
        with self._lock:
            expected = self._secrets.get(approval_id)
            if expected is None or not hmac.compare_digest(expected.encode(), offered.encode()):
                return 403, {"error": "unknown hold or wrong secret"}
            del self._secrets[approval_id]  # one use
        try:
            record = self._resolve(approval_id, str(action), str(scope))
        except Exception as exc:
            return 409, {"error": str(exc)}
        return 200, {"status": record.get("status"), "reviewer": record.get("reviewer")}

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            self._secrets.clear()
        if server is not None:
            server.shutdown()
            server.server_close()


_HTTP_ESM = """
function baseUrl() {
  try {
    const el = document.getElementById('jupyter-config-data');
    if (el) { const b = JSON.parse(el.textContent).baseUrl; if (b) return b; }
  } catch (e) {}
  return (document.body && document.body.dataset && document.body.dataset.baseUrl) || '/';
}
async function post(url, body) {
  const r = await fetch(url, {method: 'POST', body: JSON.stringify(body), credentials: 'same-origin'});
  if (!r.ok && r.status !== 409 && r.status !== 403) throw new Error('HTTP ' + r.status);
  return await r.json();
}
function render({ model, el }) {
  const wrap = document.createElement('div');
  const status = document.createElement('span');
  status.style.marginLeft = '8px';
  const mk = (label, action, scope) => {
    const b = document.createElement('button');
    b.textContent = label;
    b.className = 'jupyter-button';
    b.style.marginRight = '4px';
    b.onclick = async () => {
      const body = {id: model.get('approval_id'), secret: model.get('secret'), action, scope};
      const port = model.get('port');
      const urls = [baseUrl() + 'proxy/' + port + '/thoth/resolve', 'http://127.0.0.1:' + port + '/thoth/resolve'];
      status.textContent = '…';
      for (const url of urls) {
        try {
          const r = await post(url, body);
          const how = url.startsWith('http') ? ' (direct)' : ' (via proxy)';
          status.textContent = (r.status || r.error || 'sent') + how;
          wrap.dataset.resolvedVia = how.trim();
          return;
        }
        catch (e) { status.textContent = 'could not reach the kernel at ' + url; }
      }
    };
    return b;
  };
  const label = document.createElement('small');
  label.textContent = 'If the buttons above do not respond: ';
  wrap.append(label, mk('Approve (direct)', 'approve', 'once'), mk('Deny (direct)', 'deny', 'once'), status);
  const sync = () => { wrap.style.display = model.get('active') ? '' : 'none'; };
  model.on('change:active', sync); sync();
  el.appendChild(wrap);
}
export default { render };
"""


def _http_buttons(resolver: LocalResolver, approval_id: str) -> Any:
    """The anywidget front end that fetch()es the local resolver; None without anywidget."""
    try:
        import anywidget
        import traitlets
    except ImportError:
        return None

    class HttpApprovalButtons(anywidget.AnyWidget):  # type: ignore[misc]
        _esm = _HTTP_ESM
        approval_id = traitlets.Unicode().tag(sync=True)
        secret = traitlets.Unicode().tag(sync=True)
        port = traitlets.Int().tag(sync=True)
        active = traitlets.Bool(True).tag(sync=True)

    return HttpApprovalButtons(approval_id=approval_id, secret=resolver.secret_for(approval_id), port=resolver.port)


def _all_widgets(root: Any) -> list[Any]:
    out, todo = [], [root]
    while todo:
        widget = todo.pop()
        out.append(widget)
        todo.extend(getattr(widget, "children", ()) or ())
    return out


# --- the card ---------------------------------------------------------------------------------------


class ApprovalCard:
    """One held call: what it is, why it is held, time left, and the buttons that resolve it."""

    def __init__(self, cards: ApprovalCards, call: Call) -> None:
        import ipywidgets as w

        self.cards = cards
        self.call = call
        decision = call.decision
        assert decision is not None and decision.hold_token
        self.hold_token: str = decision.hold_token
        raw = getattr(decision, "raw", None) or {}
        self.approval_id: str = str(raw.get("approval_id") or self.hold_token)
        config = call.governor.config
        self.config = config
        timeout = config.step_up_timeout_seconds
        if decision.step_up_timeout_seconds:
            timeout = min(timeout, decision.step_up_timeout_seconds)
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.done = False
        self.outcome: dict[str, Any] = {}
        self._lock = threading.Lock()

        rules = ", ".join(decision.matched_rule_ids or []) or "—"
        risk = f"{decision.risk_score:g}" if decision.risk_score is not None else "—"
        self.header = w.HTML(self._header_html())
        self.details = w.HTML(
            f"<div><b>Reason:</b> {_esc(decision.reason or '—')} &nbsp; <b>Risk:</b> {_esc(risk)}"
            f" &nbsp; <b>Rule:</b> <code>{_esc(rules)}</code> &nbsp; <b>Agent:</b> {_esc(config.agent_id)}</div>"
            f"<div style='margin:4px 0'>{format_args(call.tool_args)}</div>"
        )
        self.countdown = w.HTML(self._countdown_html())
        layout = w.Layout(width="auto")
        hid = self.approval_id  # in every tooltip: tells cards apart for people and tests
        self.approve_once = w.Button(description="Approve once", button_style="success", icon="check",
                                     layout=layout, tooltip=f"Run this call now: {hid}")
        self.approve_session = w.Button(
            description="Allow for this session", button_style="info", layout=layout,
            tooltip=f"Allow this tool with these exact arguments for the rest of the session: {hid}")
        self.deny_button = w.Button(description="Deny", button_style="danger", icon="times", layout=layout,
                                    tooltip=f"Deny this call: {hid}")
        self.edit_button = w.Button(description="Edit arguments…", layout=layout,
                                    tooltip=f"Approve with edited arguments: {hid}")
        self.note = w.Text(placeholder="note (optional)", layout=w.Layout(width="220px"))
        self.editor = w.Textarea(value=json.dumps(call.tool_args or {}, indent=2, default=str),
                                 layout=w.Layout(width="100%", height="120px", display="none"))
        self.approve_edited = w.Button(description="Approve with these arguments", button_style="warning",
                                       layout=w.Layout(width="auto", display="none"))
        self.message = w.HTML("")
        self.fallback = w.HTML(self._fallback_html())
        self.http = _http_buttons(cards.resolver, self.approval_id) if cards.needs_http else None

        self.approve_once.on_click(lambda _b: self.resolve(True, "once"))
        self.approve_session.on_click(lambda _b: self.resolve(True, "session"))
        self.deny_button.on_click(lambda _b: self.resolve(False, "once"))
        self.edit_button.on_click(lambda _b: self._toggle_editor())
        self.approve_edited.on_click(lambda _b: self._approve_edited())

        self.buttons = [self.approve_once, self.approve_session, self.deny_button, self.edit_button]
        rows: list[Any] = [
            self.header, self.details, self.countdown,
            w.HBox([*self.buttons, self.note]),
            self.editor, self.approve_edited, self.message,
        ]
        if self.http is not None:
            rows.append(self.http)
        rows.append(self.fallback)
        self.box = w.VBox(rows, layout=w.Layout(border="1px solid #d0a000", padding="6px", margin="4px 0"))
        self.widgets = _all_widgets(self.box)

    # -- rendering ---------------------------------------------------------------------------------

    def _header_html(self) -> str:
        return (f"<div style='font-size:14px'>⏸ <b>Approval needed</b>: <code>{_esc(self.call.tool_name)}</code>"
                f" <small style='color:#888'>{_esc(self.approval_id)}</small></div>")

    def _countdown_html(self) -> str:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return "<div>⌛ <b>time is up</b>: the call will be denied</div>"
        return (f"<div>⏳ waiting for a reviewer · <b>{_fmt_duration(left)}</b> left"
                f" (then it is denied) · held {_fmt_duration(time.monotonic() - self.started)}</div>")

    def _fallback_html(self) -> str:
        hid = _esc(self.approval_id)
        parts = [f"or run <code>%thoth approve {hid}</code> / <code>thoth-nb approve {hid}</code>"
                 f" (or <code>deny</code>)"]
        if self.config.api_url:
            url = self.config.api_url.rstrip("/") + "/"
            parts.append(f" · <a href='{_esc(url)}' target='_blank' rel='noopener'>reviewer page</a>")
        return "<small style='color:#666'>" + "".join(parts) + "</small>"

    def bundle(self) -> dict[str, Any]:
        """A display bundle: the widget, and readable text for saved notebooks and headless runs."""
        text = (f"thoth: {self.call.tool_name} is held for approval ({self.approval_id}); "
                f"approve with `thoth-nb approve {self.approval_id}` within {_fmt_duration(self.timeout)}")
        return {
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": self.box.model_id},
            "text/plain": text,
        }

    # -- actions -----------------------------------------------------------------------------------

    def _toggle_editor(self) -> None:
        shown = self.editor.layout.display != "none"
        self.editor.layout.display = "none" if shown else ""
        self.approve_edited.layout.display = "none" if shown else ""

    def _approve_edited(self) -> None:
        try:
            args = json.loads(self.editor.value)
        except ValueError as exc:
            self.message.value = f"<span style='color:#b00'>arguments are not valid JSON: {_esc(exc)}</span>"
            return
        if not isinstance(args, dict):
            self.message.value = "<span style='color:#b00'>arguments must be a JSON object</span>"
            return
        self.resolve(True, "once", modified_args=args)

    def resolve(self, approve: bool, scope: str, modified_args: dict[str, Any] | None = None) -> None:
        """Resolve the hold from a click (any thread). Errors show on the card, never raise."""
        with self._lock:
            if self.done:
                return
            for button in (*self.buttons, self.approve_edited):
                button.disabled = True
        try:
            record = self.cards.resolve(self, approve, scope, modified_args)
        except Exception as exc:
            self.message.value = f"<span style='color:#b00'>{_esc(exc)}</span>"
            if not self.done:
                for button in (*self.buttons, self.approve_edited):
                    button.disabled = False
            return
        self.show_resolved(record)

    # -- outcome -----------------------------------------------------------------------------------

    def show_resolved(self, record: dict[str, Any], waited: float | None = None) -> None:
        """Turn the card into a record of who decided, when, and how long the agent waited."""
        with self._lock:
            first = not self.done
            self.done = True
            self.outcome.update({k: v for k, v in record.items() if v is not None})
            if waited is not None:
                self.outcome["waited"] = waited
        if first:
            self.cards.finished(self)
        for button in (*self.buttons, self.approve_edited):
            button.disabled = True
        self.editor.layout.display = "none"
        self.approve_edited.layout.display = "none"
        if self.http is not None:
            self.http.active = False
        out = self.outcome
        status = out.get("status") or ("approved" if str(out.get("decision", "")).upper() in ("ALLOW", "MODIFY")
                                       else "denied")
        note = str(out.get("note") or "")
        if status == "approved":
            icon, accent = "✔", "#2a2"
            what = "Approved" + (" for this session" if out.get("grant_scope") == "session" else " once")
            if out.get("modified_args") is not None or out.get("modified_tool_args") is not None:
                what += " with edited arguments"
        elif status == "expired" or "timed out" in note or out.get("decision_reason_code") == "step_up_timeout":
            icon, accent, what = "⌛", "#a60", "Timed out: denied"
        elif "interrupted" in note:
            icon, accent, what = "■", "#a00", "Interrupted: denied"
        else:
            icon, accent, what = "✖", "#c22", "Denied"
        who = out.get("reviewer") or "—"
        when = _utc_time(out.get("resolved_at"))
        waited_s = out.get("waited")
        if waited_s is None:
            waited_s = time.monotonic() - self.started
        self.header.value = (f"<div style='font-size:14px'>{icon} <b>{what}</b>: "
                             f"<code>{_esc(self.call.tool_name)}</code>"
                             f" <small style='color:#888'>{_esc(self.approval_id)}</small></div>")
        self.countdown.value = (f"<div style='color:{accent}'>by <b>{_esc(who)}</b> at {_esc(when)} · "
                                f"the agent waited {_fmt_duration(float(waited_s))}"
                                + (f" · note: {_esc(note)}" if note and what == "Denied" else "") + "</div>")
        self.box.layout.border = f"1px solid {accent}"
        self.message.value = ""

    def tick(self) -> None:
        """Refresh the countdown; notice resolutions made elsewhere (CLI, interrupt, timeout)."""
        if self.done:
            return
        try:
            reply = self.call.governor.transport.poll_hold(self.hold_token, 0.0)
        except Exception:
            reply = None
        if reply and reply.get("resolved"):
            self.show_resolved(dict(reply))
            return
        countdown = self._countdown_html()
        with self._lock:  # never overwrite the outcome written by a click meanwhile
            if not self.done:
                self.countdown.value = countdown


class ApprovalCards:
    """The listener: one card per held call, a ticker for countdowns, and the kernel wait hook."""

    def __init__(self, kernel: Any = None, waiter: KernelWaiter | None = None) -> None:
        self.kernel = kernel
        self.waiter = waiter or KernelWaiter(kernel)
        self.cards: dict[str, ApprovalCard] = {}
        self.history: list[ApprovalCard] = []
        self.resolver = LocalResolver(self._resolve_http)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.display: Callable[[dict[str, Any]], None] = self._display
        self.force_http = False  # show the direct-HTTP buttons whatever the kernel

    @property
    def needs_http(self) -> bool:
        """Show the direct-HTTP buttons where no kernel-side path is sure to deliver a click."""
        return self.force_http or self.waiter.strategy in ("frontend-subshell", "none")

    # -- listener ----------------------------------------------------------------------------------

    def __call__(self, phase: str, call: Call) -> None:
        if phase == "held":
            self.held(call)
        elif phase == "decided":
            decision = call.decision
            token = decision.hold_token if decision is not None else None
            card = self.cards.get(token) if token else None
            if card is not None:
                record = dict(call.hold_reply or {})
                if not record and decision is not None:
                    record = {"decision": decision.decision.value, "note": decision.reason, "reviewer": "thoth_nb",
                              "decision_reason_code": decision.decision_reason_code}
                card.show_resolved(record, waited=call.waited)

    def held(self, call: Call) -> None:
        card = ApprovalCard(self, call)
        with self._lock:
            self.cards[card.hold_token] = card
            self.history.append(card)
        self.waiter.route(card.widgets)
        self.display(card.bundle())
        self._start_ticker()
        if self.waiter.strategy == "queue-pump" and threading.current_thread() is threading.main_thread():
            try:  # an async cell on 6.x: the loop runs while the agent awaits; pump comms from it
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.create_task(self.waiter.pump_while(lambda: card.done))

    @staticmethod
    def _display(bundle: dict[str, Any]) -> None:
        from IPython.display import display

        display(bundle, raw=True)  # type: ignore[no-untyped-call]

    # -- resolving ---------------------------------------------------------------------------------

    def resolve(self, card: ApprovalCard, approve: bool, scope: str,
                modified_args: dict[str, Any] | None = None) -> dict[str, Any]:
        config = card.config
        options: dict[str, Any] = {"scope": scope}
        if modified_args is not None:
            options["modified_args"] = modified_args
        if config.api_url:
            options.update(api_url=config.api_url, api_key=config.api_key)
        try:
            record = _approvals.resolve(card.hold_token, approve=approve, **options)
        finally:
            self.waiter.notify()
        return record

    def _resolve_http(self, approval_id: str, action: str, scope: str) -> dict[str, Any]:
        card = next((c for c in list(self.cards.values()) if c.approval_id == approval_id), None)
        if card is None:
            raise LookupError(f"no pending card for {approval_id}")
        record = self.resolve(card, action == "approve", scope)
        card.show_resolved(record)
        return record

    def finished(self, card: ApprovalCard) -> None:
        with self._lock:
            self.cards.pop(card.hold_token, None)
        self.resolver.forget(card.approval_id)

    # -- ticker ------------------------------------------------------------------------------------

    def _start_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None and self._ticker.is_alive():
                return
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick_loop, name="thoth-approval-cards", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(_TICK):
            for card in list(self.cards.values()):
                try:
                    card.tick()
                except Exception:
                    logger.debug("thoth: card refresh failed", exc_info=True)
            if not self.cards:
                with self._lock:
                    if not self.cards:
                        self._ticker = None
                        return

    def close(self) -> None:
        self._stop.set()
        self.resolver.stop()
        self.waiter.close()


_installed: ApprovalCards | None = None


def install(ipython: Any = None) -> ApprovalCards:
    """Show approval cards for held calls in this kernel and let clicks reach a busy kernel.

    Called by the extension's `load_ipython_extension`; safe to call twice.
    """
    global _installed
    if _installed is not None:
        return _installed
    kernel = getattr(ipython, "kernel", None)
    cards = ApprovalCards(kernel)
    _context.add_listener(cards)
    if kernel is not None:
        _context.set_wait_hook(cards.waiter.wait)
        cards.waiter.ensure_subshell()
        cards.waiter.watch_cells(ipython)
    _installed = cards
    return cards


def uninstall(ipython: Any = None) -> None:
    """Undo `install`: no more cards, default waits, subshell and HTTP server closed."""
    global _installed
    cards, _installed = _installed, None
    if cards is None:
        return
    _context.remove_listener(cards)
    if _context.wait_hook == cards.waiter.wait:
        _context.set_wait_hook(None)
    cards.close()
