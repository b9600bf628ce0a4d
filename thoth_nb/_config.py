"""Configuration: explicit argument > environment variable > default (PROTOCOL §9), validated up front."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thoth_nb._exceptions import ThothConfigError
from thoth_nb._models import EnforcementMode

__all__ = ["ThothConfig", "configure_logging", "resolve_config", "thoth_home"]

_TRUE = {"1", "true", "yes", "on"}
_LEVELS = {"WARN": "WARNING", "WARNING": "WARNING", "DEBUG": "DEBUG", "INFO": "INFO", "ERROR": "ERROR"}


def thoth_home() -> Path:
    """Where the embedded store, spill files and default policy live (`$THOTH_HOME`, ~/.thoth_nb)."""
    return Path(os.environ.get("THOTH_HOME") or Path.home() / ".thoth_nb").expanduser()


def frame_keeper_enabled() -> bool:
    """Whether the frame keeper may run (`analytics/_frame_keeper.py`): THOTH_FRAME_KEEPER=0, or the
    DataFrame disk cache it keeps turned off with THOTH_FRAME_CACHE=0, stop it."""
    off = ("0", "false", "no", "off")
    return (os.environ.get("THOTH_FRAME_KEEPER", "").lower() not in off
            and os.environ.get("THOTH_FRAME_CACHE", "").lower() not in off)


@dataclasses.dataclass(slots=True)
class ThothConfig:
    """Everything one governed agent needs; build it with `resolve_config()` to get env fallbacks."""

    agent_id: str
    tenant_id: str
    approved_scope: list[str]
    api_url: str | None = None
    user_id: str = "system"
    enforcement: EnforcementMode = EnforcementMode.BLOCK
    api_key: str | None = None
    step_up_timeout_minutes: float = 15.0
    step_up_poll_interval_ms: float = 5000.0
    fail_open: bool = False
    environment: str = "prod"
    session_id: str = ""
    enforcement_trace_id: str = ""
    session_intent: str | None = None
    purpose: str | None = None
    data_classification: str | None = None
    task_context: dict[str, Any] = dataclasses.field(default_factory=dict)
    identity_binding: dict[str, Any] | None = None
    policy_context: dict[str, Any] | None = None
    event_ingest_token: str | None = None
    policy: str | None = None
    tool_inventory: bool = True
    #: extra patterns (name -> regex) masked in what events record; see thoth_nb/_redact.py
    redact: dict[str, str] = dataclasses.field(default_factory=dict)
    #: extra argument names whose values events never record
    redact_keys: list[str] = dataclasses.field(default_factory=list)
    #: mask API keys, tokens, passwords, emails and card numbers (on unless turned off)
    redact_defaults: bool = True

    @property
    def embedded(self) -> bool:
        return not self.api_url

    @property
    def step_up_timeout_seconds(self) -> float:
        return self.step_up_timeout_minutes * 60.0

    def replace(self, **changes: Any) -> ThothConfig:
        return resolve_config(**{**self.as_kwargs(), **changes})

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return value
    return None


def _first(explicit: Any, *env_names: str, default: Any = None) -> Any:
    if explicit is not None:
        return explicit
    value = _env(*env_names) if env_names else None
    return default if value is None else value


def _scope(value: Any) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = list(value)
        bad = [v for v in items if not isinstance(v, str) or not v]
        if bad:
            raise ThothConfigError(f"approved_scope must list tool names as strings; got {bad!r}")
        return items
    raise ThothConfigError(
        f"approved_scope must be a list of tool names, e.g. approved_scope=['search', 'read_file']; got {value!r}"
    )


def _mode(value: Any) -> EnforcementMode:
    if isinstance(value, EnforcementMode):
        return value
    try:
        return EnforcementMode(str(value).strip().lower().replace("-", "_"))
    except ValueError:
        modes = ", ".join(m.value for m in EnforcementMode)
        raise ThothConfigError(f"unknown enforcement mode {value!r}; use one of: {modes}") from None


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ThothConfigError(f"{name} must be a number; got {value!r}") from None
    if not number > 0:
        raise ThothConfigError(f"{name} must be greater than 0; got {value!r}")
    return number


def _redaction(patterns: Any, keys: Any, defaults: bool | None) -> tuple[dict[str, str], list[str], bool]:
    """`redact=` / THOTH_REDACT (a JSON list or object of regexes), `redact_keys=` / THOTH_REDACT_KEYS
    (comma-separated), `redact_defaults=` / THOTH_REDACT_DEFAULTS; every pattern compiled here, once."""
    from thoth_nb import _redact

    if patterns is None and (raw := _env("THOTH_REDACT")):
        try:
            patterns = json.loads(raw)
        except json.JSONDecodeError:
            raise ThothConfigError(
                f"THOTH_REDACT must be a JSON list or object of regular expressions, e.g. "
                f"'[\"INT-[0-9]{{6}}\"]'; got {raw!r}") from None
    try:
        compiled = _redact.compile_patterns(patterns)
    except (ValueError, TypeError) as exc:
        raise ThothConfigError(f"redact: {exc}") from None
    key_value = keys if keys is not None else _env("THOTH_REDACT_KEYS")
    if isinstance(key_value, str):
        key_value = [k.strip() for k in key_value.split(",") if k.strip()]
    key_list = list(key_value) if key_value is not None else []
    if not all(isinstance(k, str) and k for k in key_list):
        raise ThothConfigError(f"redact_keys must list argument names as strings, e.g. ['ssn', 'pin']; "
                               f"got {key_value!r}")
    on = defaults if defaults is not None else (_env("THOTH_REDACT_DEFAULTS") or "on").lower() not in {
        "0", "off", "false", "no"}
    named = {name: p.pattern for name, p in compiled.items()}
    try:
        _redact.redactor_for_options(named, key_list, bool(on))
    except ValueError as exc:  # a name clashing with a default pattern's
        raise ThothConfigError(f"redact: {exc}") from None
    return named, key_list, bool(on)


def resolve_config(
    *,
    agent_id: str | None = None,
    tenant_id: str | None = None,
    approved_scope: Iterable[str] | str | None = None,
    api_url: str | None = None,
    user_id: str | None = None,
    enforcement: EnforcementMode | str | None = None,
    api_key: str | None = None,
    step_up_timeout_minutes: float | None = None,
    step_up_poll_interval_ms: float | None = None,
    step_up_poll_interval_seconds: float | None = None,
    fail_open: bool | None = None,
    environment: str | None = None,
    session_id: str | None = None,
    enforcement_trace_id: str | None = None,
    session_intent: str | None = None,
    purpose: str | None = None,
    data_classification: str | None = None,
    task_context: Mapping[str, Any] | None = None,
    identity_binding: Mapping[str, Any] | None = None,
    policy_context: Mapping[str, Any] | None = None,
    event_ingest_token: str | None = None,
    policy: str | os.PathLike[str] | None = None,
    tool_inventory: bool | None = None,
    redact: Mapping[str, str] | Iterable[str] | str | None = None,
    redact_keys: Iterable[str] | str | None = None,
    redact_defaults: bool | None = None,
) -> ThothConfig:
    """Build a validated `ThothConfig`; every problem is a `ThothConfigError` naming the fix."""
    agent = _first(agent_id, "THOTH_AGENT_ID")
    if not agent or not isinstance(agent, str):
        raise ThothConfigError("agent_id is required: pass agent_id='my-agent' or set THOTH_AGENT_ID")
    tenant = _first(tenant_id, "THOTH_TENANT_ID")
    if not tenant or not isinstance(tenant, str):
        raise ThothConfigError("tenant_id is required: pass tenant_id='my-team' or set THOTH_TENANT_ID")
    scope_value = _first(approved_scope, "THOTH_APPROVED_SCOPE")
    if scope_value is None:
        raise ThothConfigError(
            "approved_scope is required: pass approved_scope=['tool_a', 'tool_b'] (the tools this agent may "
            "call) or set THOTH_APPROVED_SCOPE=tool_a,tool_b"
        )
    # a blank URL is "not given" (the seed trims it, then reads THOTH_API_URL): `os.environ.get(..., "")`
    # must not quietly swap a configured remote enforcer for the embedded one and its local policy
    url = _first(api_url.strip() or None if isinstance(api_url, str) else api_url, "THOTH_API_URL")
    if url is not None:
        url = str(url).strip().rstrip("/") or None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ThothConfigError(f"api_url must start with http:// or https://; got {url!r}")
    if step_up_poll_interval_ms is None and step_up_poll_interval_seconds is not None:
        step_up_poll_interval_ms = float(step_up_poll_interval_seconds) * 1000.0
    fo = fail_open if fail_open is not None else (_env("THOTH_FAIL_OPEN") or "").strip().lower() in _TRUE
    task = task_context
    if task is None:
        raw = _env("THOTH_TASK_CONTEXT_JSON")
        if raw:
            try:
                task = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ThothConfigError(f"THOTH_TASK_CONTEXT_JSON is not valid JSON: {exc}") from None
    if task is not None and not isinstance(task, Mapping):
        raise ThothConfigError("task_context must be a mapping such as {'task_id': 't-1', 'initiated_by': 'alice'}")
    sid = session_id or str(uuid.uuid4())
    user = str(_first(user_id, "THOTH_USER_ID", default="system"))
    config = ThothConfig(
        agent_id=agent,
        tenant_id=tenant,
        approved_scope=_scope(scope_value),
        api_url=url,
        user_id=user,
        enforcement=_mode(_first(enforcement, "THOTH_ENFORCEMENT_MODE", "THOTH_ENFORCEMENT", default="block")),
        api_key=_first(api_key, "THOTH_API_KEY"),
        step_up_timeout_minutes=_positive(
            "step_up_timeout_minutes", 15 if step_up_timeout_minutes is None else step_up_timeout_minutes
        ),
        step_up_poll_interval_ms=_positive(
            "step_up_poll_interval_ms", 5000 if step_up_poll_interval_ms is None else step_up_poll_interval_ms
        ),
        fail_open=bool(fo),
        environment=str(_first(environment, "THOTH_ENVIRONMENT", "THOTH_ENV", default="prod")).lower(),
        session_id=sid,
        enforcement_trace_id=_first(enforcement_trace_id, "THOTH_ENFORCEMENT_TRACE_ID", default=sid),
        session_intent=_first(session_intent, "THOTH_SESSION_INTENT"),
        purpose=_first(purpose, "THOTH_PURPOSE"),
        data_classification=_first(data_classification, "THOTH_DATA_CLASSIFICATION"),
        task_context=dict(task or {}),
        identity_binding=dict(identity_binding)
        if identity_binding is not None
        else {"agent_id": agent, "tenant_id": tenant, "user_id": user},
        policy_context=dict(policy_context) if policy_context is not None else None,
        event_ingest_token=_first(event_ingest_token, "THOTH_EVENT_INGEST_TOKEN"),
        policy=str(_first(policy, "THOTH_POLICY")) if _first(policy, "THOTH_POLICY") else None,
        tool_inventory=tool_inventory
        if tool_inventory is not None
        else (_env("THOTH_TOOL_INVENTORY") or "on").lower() not in {"0", "off", "false", "no"},
    )
    config.redact, config.redact_keys, config.redact_defaults = _redaction(redact, redact_keys, redact_defaults)
    if config.policy is not None and not config.embedded:
        raise ThothConfigError(
            "policy= only applies to the embedded enforcer; with api_url set the server's policy decides "
            "(load it with PUT /v1/policies)"
        )
    return config


class _EnvHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Where THOTH_LOG_LEVEL sends records while the application has no logging set up: a library
    logger with no handler only reaches Python's last-resort handler, which drops everything below
    WARNING, so `THOTH_LOG_LEVEL=DEBUG` alone would show nothing (the seed's decision logs must be
    seen). Writes to the current `sys.stderr` (a notebook kernel swaps it), and steps aside once the
    root logger has handlers, which then get each record once, through propagation."""

    name_tag = "thoth-env-stderr"

    def __init__(self) -> None:
        super().__init__()
        self.set_name(self.name_tag)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; always stderr
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def configure_logging() -> None:
    """THOTH_LOG_LEVEL, else LOG_LEVEL, on the `thoth` (decisions) and `thoth_nb` loggers, with a
    stderr handler so the level is visible in a script or notebook that never set up logging."""
    raw = _env("THOTH_LOG_LEVEL", "LOG_LEVEL")
    if raw is None:
        return
    level: int | str = int(raw) if raw.isdigit() else _LEVELS.get(raw.strip().upper(), "WARNING")
    for name in ("thoth_nb", "thoth"):
        named = logging.getLogger(name)
        named.setLevel(level)
        if not any(h.get_name() == _EnvHandler.name_tag for h in named.handlers):
            named.addHandler(_EnvHandler())
