from __future__ import annotations

import pytest

import thoth_nb
from thoth_nb._config import resolve_config
from thoth_nb._exceptions import ThothConfigError
from thoth_nb._models import EnforcementMode

BASE = {"agent_id": "a", "tenant_id": "t", "approved_scope": ["x"]}


@pytest.mark.parametrize(
    ("missing", "hint"),
    [("agent_id", "THOTH_AGENT_ID"), ("tenant_id", "THOTH_TENANT_ID"), ("approved_scope", "THOTH_APPROVED_SCOPE")],
)
def test_required_fields_say_how_to_fix(missing: str, hint: str) -> None:
    config = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ThothConfigError, match=hint):
        resolve_config(**config)


def test_defaults_match_the_seed() -> None:
    cfg = resolve_config(**BASE)
    assert cfg.user_id == "system"
    assert cfg.enforcement is EnforcementMode.BLOCK
    assert cfg.step_up_timeout_minutes == 15
    assert cfg.step_up_poll_interval_ms == 5000
    assert cfg.api_url is None and cfg.embedded
    assert cfg.environment == "prod"
    assert cfg.enforcement_trace_id == cfg.session_id
    assert cfg.identity_binding == {"agent_id": "a", "tenant_id": "t", "user_id": "system"}
    assert not cfg.fail_open


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_AGENT_ID", "env-agent")
    monkeypatch.setenv("THOTH_TENANT_ID", "env-tenant")
    monkeypatch.setenv("THOTH_APPROVED_SCOPE", "a, b ,c")
    monkeypatch.setenv("THOTH_API_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("THOTH_API_KEY", "k")
    monkeypatch.setenv("THOTH_FAIL_OPEN", "yes")
    monkeypatch.setenv("THOTH_ENFORCEMENT_MODE", "Step-Up")
    monkeypatch.setenv("THOTH_ENV", "STAGING")
    cfg = resolve_config()
    assert (cfg.agent_id, cfg.tenant_id, cfg.approved_scope) == ("env-agent", "env-tenant", ["a", "b", "c"])
    assert cfg.api_url == "http://127.0.0.1:9" and cfg.api_key == "k"
    assert cfg.fail_open and cfg.enforcement is EnforcementMode.STEP_UP and cfg.environment == "staging"


def test_explicit_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_API_URL", "http://env.example")
    monkeypatch.setenv("THOTH_FAIL_OPEN", "1")
    cfg = resolve_config(**BASE, api_url="http://127.0.0.1:1", fail_open=False)
    assert cfg.api_url == "http://127.0.0.1:1" and not cfg.fail_open


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("enforcement", "strict", "unknown enforcement mode 'strict'; use one of: observe, step_up, block"),
        ("api_url", "localhost:8000", "must start with http"),
        ("approved_scope", 42, "approved_scope must be a list"),
        ("approved_scope", ["ok", 3], "as strings"),
        ("step_up_timeout_minutes", 0, "greater than 0"),
        ("step_up_poll_interval_ms", "fast", "must be a number"),
        ("task_context", "x", "task_context must be a mapping"),
    ],
)
def test_bad_values_are_named(option: str, value: object, message: str) -> None:
    with pytest.raises(ThothConfigError, match=message):
        resolve_config(**{**BASE, option: value})  # type: ignore[arg-type]


def test_bad_task_context_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_TASK_CONTEXT_JSON", "{nope")
    with pytest.raises(ThothConfigError, match="THOTH_TASK_CONTEXT_JSON"):
        resolve_config(**BASE)


def test_poll_interval_seconds_alias() -> None:
    assert resolve_config(**BASE, step_up_poll_interval_seconds=0.25).step_up_poll_interval_ms == 250


def test_instrument_reports_errors_before_any_call() -> None:
    class Agent:
        tools: list[object] = []

    with pytest.raises(ThothConfigError, match=r"empty \.tools"):
        thoth_nb.instrument(Agent(), **BASE)
    with pytest.raises(ThothConfigError, match="cannot instrument a int"):
        thoth_nb.instrument(5, **BASE)
    with pytest.raises(ThothConfigError, match="unknown enforcement mode"):
        thoth_nb.instrument([lambda: 1], **BASE, enforcement="loud")
    with pytest.raises(ThothConfigError, match="unknown option"):
        thoth_nb.instrument([lambda: 1], **BASE, enforcment="block")


def test_malformed_policy_file_fails_at_instrument(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nrules:\n  - tool: x\n    decision: maybe\n")
    with pytest.raises(thoth_nb.PolicyError, match=r"p.yaml:4 \(rules.0.decision\)"):
        thoth_nb.instrument([lambda: 1], **BASE, policy=str(bad))


def test_log_level_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from thoth_nb._config import configure_logging

    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    configure_logging()
    assert logging.getLogger("thoth").level == logging.DEBUG
    monkeypatch.setenv("THOTH_LOG_LEVEL", "WARN")
    configure_logging()
    assert logging.getLogger("thoth").level == logging.WARNING
    for name in ("thoth", "thoth_nb"):
        named = logging.getLogger(name)
        named.setLevel(logging.NOTSET)
        for handler in [h for h in named.handlers if h.get_name() == "thoth-env-stderr"]:
            named.removeHandler(handler)
