"""`%thoth` and `%%thoth`: govern, inspect and audit agents from notebook cells.

One function per subcommand, found through `COMMANDS` (jupysql's layout, STYLE), each with its own
`MagicArgumentParser` that raises `UsageError` with the usage line instead of exiting. Settings are
traitlets on `ThothMagics`, so `%config ThothMagics.feed = False` and ipython_config.py work.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode

from thoth_nb import _context
from thoth_nb._argtypes import whole_number
from thoth_nb._exceptions import PolicyError, ThothConfigError
from thoth_nb.notebook import reprs

if TYPE_CHECKING:
    import argparse

    from thoth_nb.notebook import ExtensionState

__all__ = ["COMMANDS", "ThothMagics"]

MODES = ("observe", "step_up", "block", "progressive")


class _Parser(MagicArgumentParser):  # type: ignore[misc]
    """`MagicArgumentParser` whose errors carry the usage line (the UsageError says how to fix it).

    `command` is what the user types (`%thoth events`, `%%thoth`); IPython's help formatter puts one `%`
    in front of `prog` itself, so `prog` is the command without its first `%`."""

    def __init__(self, command: str, description: str) -> None:
        super().__init__(prog=command[1:], description=description)  # type: ignore[no-untyped-call]
        self.command = command

    def error(self, message: str) -> Any:
        usage = self.format_usage().strip().removeprefix("::").strip()
        raise UsageError(f"{message}\nusage: {usage}\n({self.command} -h for help)")


def _parser(name: str, help_text: str) -> _Parser:
    return _Parser(f"%thoth {name}", help_text)


def _wants_help(line: str) -> bool:
    return bool({"-h", "--help"} & set(_split(line)))


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"cannot read the options: {exc}") from None


def _scope(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_governance_options(p: _Parser) -> None:
    p.add_argument("--agent-id", "--agent", dest="agent_id", help="agent id recorded with every event")
    p.add_argument("--scope", help="approved tools, comma separated: --scope web_search,read_file")
    p.add_argument("--mode", type=str.lower, choices=MODES, help="enforcement mode")
    p.add_argument("--tenant", dest="tenant_id", help="tenant (default: ThothMagics.tenant, 'local')")
    p.add_argument("--user-id", dest="user_id", help="the person the agent acts for")
    p.add_argument("--session-id", dest="session_id", help="group the calls under this session id")
    p.add_argument("--policy", help="policy YAML file for the embedded enforcer")
    p.add_argument("--api-url", dest="api_url", help="a thoth-nb server instead of the embedded enforcer")


def _add_filters(p: _Parser, *, tool: bool = True, session: bool = True) -> None:
    p.add_argument("--agent", dest="agent_id", help="only this agent")
    if session:
        p.add_argument("--session", dest="session_id", help="only this session")
    if tool:
        p.add_argument("--tool", dest="tool_name", help="only this tool")
    p.add_argument("--since", help="ISO time or relative: 30m, 2h, 7d")
    # 0 or more: SQLite reads a negative LIMIT as no limit at all
    p.add_argument("--limit", type=whole_number(0), help="at most this many rows")
    p.add_argument("--tenant", dest="tenant_id", help="tenant (default: the last instrumented agent's)")
    p.add_argument("--api-url", dest="api_url", help="read from a thoth-nb server")


@dataclass(frozen=True)
class Command:
    parser: _Parser
    run: Callable[[ThothMagics, argparse.Namespace], Any]

    @property
    def help(self) -> str:
        return self.parser.description or ""


COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str, configure: Callable[[_Parser], None] | None = None) -> Callable[
        [Callable[[ThothMagics, argparse.Namespace], Any]], Callable[[ThothMagics, argparse.Namespace], Any]]:
    def register(fn: Callable[[ThothMagics, argparse.Namespace], Any]) -> Callable[
            [ThothMagics, argparse.Namespace], Any]:
        parser = _parser(name, help_text)
        if configure is not None:
            configure(parser)
        COMMANDS[name] = Command(parser, fn)
        return fn

    return register


# --- the magics class ---------------------------------------------------------------------------


@magics_class
class ThothMagics(Magics):
    """`%thoth <subcommand>` and `%%thoth`; `%thoth help` lists the subcommands."""

    feed = Bool(True, help="Show the live decision feed under cells that make governed calls.").tag(config=True)
    feed_max_rows = Int(50, help="Rows the feed shows (newest last).").tag(config=True)
    feed_throttle = Float(0.1, help="Seconds between feed re-renders while a cell runs.").tag(config=True)
    tenant = Unicode("local", help="Tenant for %thoth instrument when --tenant is not given.").tag(config=True)
    mode = CaselessStrEnum(MODES, default_value="block", help="Enforcement mode when --mode is not given.").tag(
        config=True)
    policy = Unicode("", help="Policy file for %thoth instrument when --policy is not given.").tag(config=True)
    api_url = Unicode("", help="Server URL for %thoth instrument when --api-url is not given.").tag(config=True)

    def __init__(self, shell: Any = None, state: ExtensionState | None = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)  # type: ignore[no-untyped-call]
        from thoth_nb.notebook import ExtensionState

        self.state = state or ExtensionState()
        self._async_cells: Callable[[list[str]], list[str]] | None = None

    @property
    def ip(self) -> Any:
        """The shell (typed loosely: IPython ships no type hints)."""
        return self.shell

    @line_cell_magic  # type: ignore[untyped-decorator]
    def thoth(self, line: str, cell: str | None = None) -> Any:
        """Govern agents and audit their tool calls. `%thoth help` lists the subcommands."""
        if cell is not None:
            return self._cell(line, cell)
        words = line.strip().split(None, 1)
        if not words:
            print(help_text())
            return None
        name, rest = words[0], (words[1] if len(words) > 1 else "")
        found = COMMANDS.get(name)
        if found is None:
            close = [c for c in COMMANDS if c.startswith(name[:2])]
            raise UsageError(f"unknown subcommand {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                             + f"; subcommands: {', '.join(COMMANDS)}")
        argv = _split(rest)
        if "-h" in argv or "--help" in argv:
            print(found.parser.format_help())
            return None
        return found.run(self, found.parser.parse_args(argv))

    # -- helpers used by the subcommands ---------------------------------------------------------

    def governance_options(self, args: argparse.Namespace, *, agent_default: str | None = None,
                           with_defaults: bool = True) -> dict[str, Any]:
        """`instrument()` keyword arguments from parsed options (defaults from the traitlets)."""
        given = {
            "agent_id": args.agent_id,
            "approved_scope": _scope(args.scope),
            "enforcement": args.mode,
            "tenant_id": args.tenant_id,
            "user_id": args.user_id,
            "session_id": args.session_id,
            "policy": str(Path(args.policy).expanduser()) if args.policy else None,
            "api_url": args.api_url,
        }
        options = {k: v for k, v in given.items() if v is not None}
        if not with_defaults:
            return options
        defaults: dict[str, Any] = {"tenant_id": self.tenant, "enforcement": self.mode}
        if agent_default:
            defaults["agent_id"] = agent_default
        if self.api_url:
            defaults["api_url"] = self.api_url
        if self.policy and not options.get("api_url") and not defaults.get("api_url"):
            defaults["policy"] = self.policy
        merged = {**defaults, **options}
        merged.setdefault("session_id", str(uuid.uuid4()))  # re-instrumenting (%thoth mode) keeps the session
        return merged

    def resolve(self, expression: str) -> tuple[Any, MutableMapping[str, Any] | None, str]:
        """The object named `expression` (a name or dotted attribute path) in the user namespace."""
        ns = self.ip.user_ns
        head, *rest = expression.split(".")
        if head not in ns:
            raise UsageError(f"no variable named {head!r} in this notebook")
        obj = ns[head]
        for part in rest:
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise UsageError(f"{expression}: {type(obj).__name__} has no attribute {part!r}") from None
        return obj, (ns if not rest else None), expression

    # -- %%thoth ---------------------------------------------------------------------------------

    def _cell_options(self, line: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The cell's options as a `config_override` (only what was given) and as `instrument()` options."""
        args = CELL_PARSER.parse_args(_split(line))
        return self.governance_options(args, with_defaults=False), self.governance_options(args)

    def _cell(self, line: str, cell: str) -> Any:
        if _wants_help(line):  # `%%thoth -h`, as the usage errors suggest: the options, and the cell does not run
            print(CELL_PARSER.format_help())
            return None
        override, auto = self._cell_options(line)
        token = _context.config_override.set(override or None)
        try:
            return self._run_cell_governed(cell, auto)
        finally:
            _context.config_override.reset(token)

    def _run_cell_governed(self, cell: str, options: dict[str, Any]) -> Any:
        """Run the cell one top-level statement at a time; after each, govern any new object with
        `.tools`, so `agent = make_agent()` on one line is governed before `agent.run()` on the next."""
        shell = self.ip
        source = shell.transform_cell(cell)
        filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        tree = ast.parse(source, filename=filename)
        if _top_level_await(tree):
            # cells with top-level await never get here once the extension is loaded: `async_cell_transformer`
            # rewrites them into Python that IPython itself awaits
            raise UsageError("%%thoth runs top-level await only in a shell where `%load_ext thoth_nb` installed "
                             "its input transformer (and with %autoawait on); here, instrument in a %%thoth cell "
                             "and await in a plain cell: the tools keep the cell's options.")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        ns = shell.user_ns
        glob = shell.user_global_ns
        for statement in tree.body:
            before = dict(ns)
            exec(compile(ast.Module([statement], type_ignores=[]), filename, "exec"), glob, ns)
            self._govern_new(ns, before, options)
        if last is None:
            return None
        value = eval(compile(ast.Expression(last.value), filename, "eval"), glob, ns)
        return value

    def install_async_cells(self) -> None:
        """Let `%%thoth` cells use top-level await: registers `async_cell_transformer` (on `%load_ext`)."""
        cleanup = getattr(self.ip, "input_transformers_cleanup", None)
        if cleanup is not None and self._async_cells is None:
            self._async_cells = async_cell_transformer(self)
            cleanup.append(self._async_cells)

    def uninstall_async_cells(self) -> None:
        """Remove the transformer again (on `%unload_ext`)."""
        cleanup = getattr(self.ip, "input_transformers_cleanup", None)
        if cleanup is not None and self._async_cells in cleanup:
            cleanup.remove(self._async_cells)
        self._async_cells = None

    def governed_cell(self, line: str) -> GovernedCell:
        """The context a rewritten `%%thoth` cell with top-level await runs in (see `async_cell_transformer`)."""
        override, auto = self._cell_options(line)
        return GovernedCell(self, override, auto)

    def _govern_new(self, ns: MutableMapping[str, Any], before: dict[str, Any], options: dict[str, Any]) -> None:
        from thoth_nb._instrument import is_governed

        for name, value in list(ns.items()):
            if name.startswith("_") or before.get(name, _UNSET) is value or isinstance(value, type):
                continue
            tools = getattr(value, "tools", None) if not isinstance(value, (list, dict)) else None
            if not isinstance(tools, (list, dict)) or not tools:
                continue
            items = tools.values() if isinstance(tools, dict) else tools
            if any(is_governed(t) or is_governed(getattr(t, "run", None)) for t in items):
                continue  # instrumented inside the cell (with the cell's options, via config_override)
            agent_options = {**options, "agent_id": options.get("agent_id") or name}
            try:
                self.state.registry.instrument(value, agent_options, name=name, namespace=ns, source="%%thoth")
            except ThothConfigError as exc:
                print(f"thoth: not governing {name!r}: {exc}")


_UNSET = object()
_CELL_NAME = "__thoth_cell__"


def _top_level_await(tree: ast.Module) -> bool:
    """`await`, `async for` or `async with` outside any function body."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


class GovernedCell:
    """A `%%thoth` cell with top-level await, rewritten by `async_cell_transformer` into

        with get_ipython().find_cell_magic("thoth").__self__.governed_cell(LINE) as __thoth_cell__:
            statement
            __thoth_cell__.step()
            ...
            __thoth_cell__.show(last expression)

    which IPython runs as a coroutine itself (`should_run_async` sees the await: the kernel awaits it on its
    own event loop, a terminal on IPython's loop runner). The cell's options are a context variable set
    here, so they reach every call the cell makes, awaited coroutines and the tasks and threads they start
    (asyncio copies the context into each task, `asyncio.to_thread` into its thread).
    """

    def __init__(self, magics: ThothMagics, override: dict[str, Any], options: dict[str, Any]) -> None:
        self._magics = magics
        self._override = override
        self._options = options
        self._token: Any = None
        self._before: dict[str, Any] = {}

    def __enter__(self) -> GovernedCell:
        self._token = _context.config_override.set(self._override or None)
        self._before = dict(self._magics.ip.user_ns)
        return self

    def step(self) -> None:
        """After each top-level statement: govern new objects with `.tools` (as the synchronous cell does)."""
        ns = self._magics.ip.user_ns
        self._magics._govern_new(ns, self._before, self._options)
        self._before = dict(ns)

    def show(self, value: Any) -> None:
        """The cell's last expression, shown (and kept in Out) the way IPython shows a cell's value."""
        import sys

        self.step()
        sys.displayhook(value)

    def __exit__(self, *exc: object) -> None:
        _context.config_override.reset(self._token)
        self._magics.ip.user_ns.pop(_CELL_NAME, None)


def async_cell_transformer(magics: ThothMagics) -> Callable[[list[str]], list[str]]:
    """An IPython cleanup input transformer: a `%%thoth` cell whose body has top-level await becomes plain
    Python around `GovernedCell` (IPython runs cell magics synchronously, inside the kernel's running event
    loop, so the magic itself cannot await). Other cells pass through untouched; so does anything it
    cannot parse, for the magic to report."""
    def thoth_async_cells(lines: list[str]) -> list[str]:
        if not lines or not re.match(r"%%thoth(\s|$)", lines[0]) or not getattr(magics.ip, "autoawait", True):
            return lines  # (with %autoawait off the magic says how to go on)
        try:
            source = _async_cell_source(magics, lines[0][len("%%thoth"):].strip(), "".join(lines[1:]))
        except Exception:  # e.g. a syntax error: the magic reports it in its own words
            return lines
        return lines if source is None else source.splitlines(keepends=True)

    # not side effects, but the flag keeps IPython's check_complete (terminal input) from applying it, so a
    # %%thoth cell still ends at a blank line like every cell magic
    thoth_async_cells.has_side_effects = True  # type: ignore[attr-defined]
    return thoth_async_cells


def _async_cell_source(magics: ThothMagics, line: str, body: str) -> str | None:
    from IPython.core.displayhook import DisplayHook

    if _wants_help(line):
        return None  # the magic prints the help
    source = magics.ip.transform_cell(body)
    tree = ast.parse(source)
    if not _top_level_await(tree):
        return None
    quiet = bool(DisplayHook.semicolon_at_end_of_expression(source))  # type: ignore[no-untyped-call]  # `x;`: no Out
    cell = ast.Name(_CELL_NAME, ast.Load())
    statements: list[ast.stmt] = []
    for index, node in enumerate(tree.body):
        if index == len(tree.body) - 1 and isinstance(node, ast.Expr) and not quiet:
            statements.append(ast.Expr(ast.Call(ast.Attribute(cell, "show", ast.Load()), [node.value], [])))
        else:
            statements += [node, ast.Expr(ast.Call(ast.Attribute(cell, "step", ast.Load()), [], []))]
    magic = ast.parse('get_ipython().find_cell_magic("thoth").__self__.governed_cell(LINE)', mode="eval").body
    assert isinstance(magic, ast.Call)
    magic.args = [ast.Constant(line)]
    wrapped = ast.With([ast.withitem(magic, ast.Name(_CELL_NAME, ast.Store()))], statements)
    return ast.unparse(ast.fix_missing_locations(ast.Module([wrapped], type_ignores=[]))) + "\n"


CELL_PARSER = _Parser("%%thoth", "Govern every tool call made in this cell.")
_add_governance_options(CELL_PARSER)


# --- subcommands --------------------------------------------------------------------------------


def _instrument_options(p: _Parser) -> None:
    p.add_argument("var", help="the variable holding the agent, tool list, dict or function")
    _add_governance_options(p)


@command("instrument", "Govern the tools of the object named VAR (any shape thoth_nb.instrument accepts).",
         _instrument_options)
def cmd_instrument(magics: ThothMagics, args: argparse.Namespace) -> Any:
    obj, namespace, name = magics.resolve(args.var)
    options = magics.governance_options(args, agent_default=name.replace(".", "-"))
    try:
        result = magics.state.registry.instrument(obj, options, name=name, namespace=namespace)
    except ThothConfigError as exc:
        raise UsageError(str(exc)) from None
    if result is not obj:
        if namespace is not None:
            namespace[name] = result
        else:
            parent, _, attr = name.rpartition(".")
            setattr(magics.resolve(parent)[0], attr, result)
    enforcer = options.get("api_url") or "embedded enforcer"
    policy = options.get("policy") or ("server policy" if options.get("api_url") else "built-in or $THOTH_HOME policy")
    scope = ", ".join(options.get("approved_scope") or []) or "(none)"
    print(f"thoth: governing {name} as agent {options['agent_id']!r} in {options['enforcement']} mode "
          f"({enforcer}, {policy}); approved scope: {scope}")
    return None


@command("status", "What is governed, where decisions come from, and the event pipeline's counters.")
def cmd_status(magics: ThothMagics, args: argparse.Namespace) -> Any:
    from thoth_nb._runtime import status

    return reprs.StatusReport(status(), magics.state.registry.items, feed=magics.feed)


def _mode_options(p: _Parser) -> None:
    p.add_argument("agent", help="agent id given to %thoth instrument")
    p.add_argument("mode", type=str.lower, choices=MODES)


@command("mode", "Switch an instrumented agent to another enforcement mode (no double wrapping).", _mode_options)
def cmd_mode(magics: ThothMagics, args: argparse.Namespace) -> Any:
    items = magics.state.registry.for_agent(args.agent)
    if not items:
        known = sorted({i.agent_id for i in magics.state.registry.items})
        raise UsageError(f"no agent {args.agent!r} was instrumented with %thoth"
                         + (f"; known: {', '.join(known)}" if known else ""))
    old = items[0].mode
    for item in items:
        magics.state.registry.instrument(item.target, {**item.options, "enforcement": args.mode})
    print(f"thoth: agent {args.agent!r}: {old} → {args.mode} ({len(items)} object{'s' if len(items) != 1 else ''})")
    return None


def _policy_options(p: _Parser) -> None:
    p.add_argument("action", choices=("show", "load", "check"))
    p.add_argument("file", nargs="?", help="policy YAML file (load, check)")


@command("policy", "show the policy in force; load FILE for the agents instrumented here; check FILE.",
         _policy_options)
def cmd_policy(magics: ThothMagics, args: argparse.Namespace) -> Any:
    from thoth_nb._runtime import default_policy_path
    from thoth_nb.engine.policy import DEFAULT_POLICY_YAML, load_policy

    if args.action == "show":
        path = Path(args.file).expanduser() if args.file else (Path(magics.policy) if magics.policy else
                                                                default_policy_path())
        try:
            text = path.read_text(encoding="utf-8") if path is not None else DEFAULT_POLICY_YAML
        except (OSError, UnicodeDecodeError) as exc:  # a typo, a directory, a file deleted since `policy load`
            raise UsageError(f"cannot read the policy file {path}: {getattr(exc, 'strerror', None) or exc} "
                             "(check the path; %thoth policy load FILE sets the one in force)") from None
        return reprs.PolicyView(str(path) if path else "<built-in default policy>", text)
    if not args.file:
        raise UsageError(f"%thoth policy {args.action} needs a FILE")
    path = Path(args.file).expanduser()
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        if args.action == "check":
            where = f"line {exc.line}" if exc.line is not None else "file"
            print(f"✗ {path}: {where}" + (f", field {exc.field}" if exc.field else "") + f": {exc.message}")
            return None
        raise UsageError(str(exc)) from None
    rules = len(policy.rules) if hasattr(policy, "rules") else 0
    if args.action == "check":
        print(f"✓ {path}: valid policy ({rules} rule{'s' if rules != 1 else ''})")
        return None
    previous = magics.policy
    magics.policy = str(path.resolve())
    moved = []
    for item in magics.state.registry.items:
        if item.options.get("api_url"):
            continue
        if item.options.get("policy") in (None, "", previous):
            magics.state.registry.instrument(item.target, {**item.options, "policy": magics.policy})
            moved.append(item.agent_id)
    print(f"thoth: policy {path} loaded ({rules} rules)" + (f"; now in force for {', '.join(sorted(set(moved)))}"
                                                            if moved else "; used by the next %thoth instrument"))
    return None


def _frame_call(fn_name: str) -> Callable[[ThothMagics, argparse.Namespace], Any]:
    def run(magics: ThothMagics, args: argparse.Namespace) -> Any:
        from thoth_nb.analytics import frames

        kwargs = {k: v for k, v in vars(args).items() if v is not None}
        if fn_name in ("sessions", "violations", "approvals") and "limit" not in kwargs:
            kwargs["limit"] = 1000
        if fn_name == "sessions":
            kwargs.pop("tool_name", None)
            kwargs.pop("session_id", None)
        try:
            return getattr(frames, fn_name)(**kwargs)
        except (ValueError, ThothConfigError) as exc:
            raise UsageError(str(exc)) from None

    run.__name__ = f"cmd_{fn_name}"
    return run


def _events_options(p: _Parser) -> None:
    _add_filters(p)
    p.add_argument("--type", dest="event_type", type=str.upper,
                   choices=("TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_BLOCK", "LLM_INVOCATION"))


def _approvals_options(p: _Parser) -> None:
    p.add_argument("--status", default="all", choices=("pending", "approved", "denied", "expired", "all"))
    _add_filters(p, tool=True)


command("events", "Recorded events as a DataFrame (filters: --agent --session --tool --since --limit).",
        _events_options)(_frame_call("events"))
command("violations", "Violations as a DataFrame.", _add_filters)(_frame_call("violations"))
command("sessions", "Sessions as a DataFrame.", lambda p: _add_filters(p, tool=False, session=False))(
    _frame_call("sessions"))


command("approvals", "Step-up holds (pending, approved, denied, expired) as a DataFrame.", _approvals_options)(
    _frame_call("approvals"))


def _resolve_options(p: _Parser) -> None:
    p.add_argument("hold", help="approval id or hold token (see %thoth approvals --status pending)")
    p.add_argument("--note", help="recorded with the decision")
    p.add_argument("--reviewer", help="who decided (default: your login name)")
    p.add_argument("--session", dest="scope", action="store_const", const="session", default="once",
                   help="(approve) also allow the same call for the rest of the session")
    p.add_argument("--api-url", dest="api_url")


def _resolve(approve: bool) -> Callable[[ThothMagics, argparse.Namespace], Any]:
    def run(magics: ThothMagics, args: argparse.Namespace) -> Any:
        from thoth_nb._approvals import resolve

        try:
            record = resolve(args.hold, approve=approve, reviewer=args.reviewer, note=args.note, scope=args.scope,
                             api_url=args.api_url)
        except (LookupError, RuntimeError, ThothConfigError) as exc:
            raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
        return reprs.HoldRecord(record)

    return run


command("approve", "Approve a held call.", _resolve_options)(_resolve(True))
command("deny", "Deny a held call; the waiting tool raises ThothPolicyViolation.", _resolve_options)(_resolve(False))


def _explain_options(p: _Parser) -> None:
    p.add_argument("violation_id")
    p.add_argument("--tenant", dest="tenant_id")
    p.add_argument("--api-url", dest="api_url")


@command("explain", "Why a call was blocked or held, from the rule that decided it.", _explain_options)
def cmd_explain(magics: ThothMagics, args: argparse.Namespace) -> Any:
    from thoth_nb.analytics.frames import default_tenant

    tenant = default_tenant(args.tenant_id)
    server = args.api_url or os.environ.get("THOTH_API_URL")
    if server:
        return reprs.Explanation(_explain_remote(server.rstrip("/"), tenant, args.violation_id))
    from thoth_nb._runtime import flush, local_engine

    flush(timeout=5.0)
    try:
        return reprs.Explanation(local_engine(magics.policy or None).explain(tenant, args.violation_id))
    except LookupError:
        raise UsageError(f"no violation {args.violation_id!r} for tenant {tenant!r} "
                         "(list them with %thoth violations)") from None


def _explain_remote(server: str, tenant: str, violation_id: str, transport: Any = None) -> dict[str, Any]:
    import httpx

    from thoth_nb._version import __version__

    headers = {"User-Agent": f"thoth-nb/{__version__}"}
    key = os.environ.get("THOTH_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    with httpx.Client(transport=transport, timeout=10.0, trust_env=False) as client:
        response = client.post(f"{server}/v1/explain", json={"violation_id": violation_id, "tenant_id": tenant},
                               headers=headers)
    if response.status_code == 404:
        raise UsageError(f"no violation {violation_id!r} on {server}")
    if response.status_code >= 400:
        raise UsageError(f"{server}/v1/explain failed (status={response.status_code})")
    data: dict[str, Any] = response.json()
    return data


def _register_workbench() -> None:
    """`%thoth dashboard` and `%thoth replay` (the policy workbench, thoth_nb/notebook/dashboard.py)."""
    try:
        from thoth_nb.notebook import dashboard
    except ImportError:  # an optional dependency of the workbench is missing: %thoth works without it
        return
    dashboard.register(command, _add_filters)


_register_workbench()


def _feed_options(p: _Parser) -> None:
    p.add_argument("state", nargs="?", choices=("on", "off"))


@command("feed", "Turn the live decision feed on or off (same as %config ThothMagics.feed = True/False).",
         _feed_options)
def cmd_feed(magics: ThothMagics, args: argparse.Namespace) -> Any:
    if args.state is not None:
        magics.feed = args.state == "on"
    print(f"thoth: live feed {'on' if magics.feed else 'off'}")
    return None


@command("help", "List the subcommands.")
def cmd_help(magics: ThothMagics, args: argparse.Namespace) -> Any:
    print(help_text())
    return None


def help_text() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["%thoth <subcommand> [options]   (%thoth <subcommand> -h for its options)", ""]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "%%thoth --agent-id A --scope a,b --mode step_up   governs every tool call made in the cell"]
    return "\n".join(lines)


# --- tab completion -----------------------------------------------------------------------------


def completions(magics: ThothMagics, line: str) -> list[str]:
    """Candidates for the word being typed after `%thoth` (subcommands, then their arguments)."""
    text = line.lstrip()
    if text.startswith("%%thoth") or not text.startswith("%thoth"):
        return []
    words = text.split()
    ending = line.endswith(" ")
    position = len(words) if ending else len(words) - 1
    current = "" if ending else words[-1]
    if position == 1:
        return [c for c in COMMANDS if c.startswith(current)]
    sub = words[1] if len(words) > 1 else ""
    options: list[str] = []
    if position == 2:
        if sub == "instrument":
            ns = magics.ip.user_ns
            options = [n for n, v in ns.items() if not n.startswith("_") and (
                hasattr(v, "tools") or (isinstance(v, (list, dict)) and v and all(callable(i) for i in (
                    v.values() if isinstance(v, dict) else v))) or (callable(v) and not isinstance(v, type)
                                                                    and getattr(v, "__module__", "") == "__main__"))]
        elif sub == "mode":
            options = sorted({i.agent_id for i in magics.state.registry.items})
        elif sub == "feed":
            options = ["on", "off"]
        elif sub == "policy":
            options = ["show", "load", "check"]
    elif position == 3 and sub == "mode":
        options = list(MODES)
    if not options and current.startswith("-") and sub in COMMANDS:
        options = [o for a in COMMANDS[sub].parser._actions for o in a.option_strings]
    return [o for o in options if o.startswith(current)]


def make_matcher(magics: ThothMagics) -> Callable[[Any], Any]:
    """An IPython (>= 8.6) context matcher offering `completions()` for `%thoth` lines."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher(identifier="thoth_nb")  # type: ignore[untyped-decorator]
    def thoth_matcher(context: Any) -> dict[str, Any]:
        line = context.line_with_cursor
        found = completions(magics, line)
        return {"completions": [SimpleCompletion(text=c, type="thoth") for c in found], "suppress": bool(found)}

    return thoth_matcher  # type: ignore[no-any-return]
