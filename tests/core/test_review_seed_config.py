"""Seed config parity: `api_url` falls back to THOTH_API_URL, and a `ThothConfig` is the options object."""

from __future__ import annotations

from typing import Any

import pytest

import thoth_nb
from thoth_nb import EnforcementMode, ThothConfig, ThothConfigError, ThothPolicyViolation
from thoth_nb._config import resolve_config
from thoth_nb._runtime import governors

BASE: dict[str, Any] = {"agent_id": "a", "tenant_id": "t", "approved_scope": ["x"]}


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_api_url_falls_back_to_env(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """The README's `apiUrl: process.env.THOTH_API_URL` spelled `api_url=os.environ.get("THOTH_API_URL", "")`:
    a blank URL is "not given" (the seed trims it and reads THOTH_API_URL), not a silent switch to the
    embedded enforcer and its local policy while a remote enforcer is configured."""
    monkeypatch.setenv("THOTH_API_URL", "http://enforcer.example/")
    cfg = resolve_config(**BASE, api_url=blank)
    assert cfg.api_url == "http://enforcer.example" and not cfg.embedded


def read_file(path: str) -> str:
    return f"<{path}>"


def test_instrument_takes_a_thoth_config(cfg: dict[str, Any]) -> None:
    """README: "All options are passed as the second argument to instrument()": the seed's ThothConfig."""
    config = ThothConfig(agent_id="agent", tenant_id="t", approved_scope=["read_file"], policy=str(cfg["policy"]))
    tools: list[Any] = [read_file]
    thoth_nb.instrument(tools, config)
    assert tools[0]("/home/a") == "</home/a>"
    with pytest.raises(ThothPolicyViolation):
        tools[0]("/etc/passwd")
    gov = governors()[-1]
    assert gov.config.session_id and gov.config.enforcement_trace_id == gov.config.session_id
    assert gov.config.user_id == "system" and gov.config.enforcement is EnforcementMode.BLOCK


def test_keyword_options_override_the_config_object(cfg: dict[str, Any]) -> None:
    config = ThothConfig(agent_id="agent", tenant_id="t", approved_scope=["read_file"], policy=str(cfg["policy"]))
    wrapped = thoth_nb.wrap_openai_tools({"read_file": read_file}, config, enforcement="observe", user_id="bob")
    assert wrapped["read_file"]({"path": "/etc/passwd"}) == "<{'path': '/etc/passwd'}>"  # observe: runs
    gov = governors()[-1]
    assert gov.config.user_id == "bob" and gov.config.agent_id == "agent"
    client = thoth_nb.ThothClient(tenant_id="t")
    anth = client.instrument_anthropic({"read_file": read_file}, {"agent_id": "m", "approved_scope": ["read_file"],
                                                                  "policy": cfg["policy"]})
    with pytest.raises(ThothPolicyViolation):
        anth["read_file"]({"path": "/etc/passwd"})


def test_config_object_values_are_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ThothConfig is a whole configuration: its values win over THOTH_* variables (an explicit
    enforcement="block" is never weakened by the environment); only its None fields (api_url, api_key)
    fall back to them. Each instrument() still starts its own session, as in the seed."""
    monkeypatch.setenv("THOTH_ENFORCEMENT_MODE", "observe")
    monkeypatch.setenv("THOTH_API_KEY", "env-key")
    config = ThothConfig(agent_id="a", tenant_id="t", approved_scope=["read_file"])
    thoth_nb.instrument([read_file], config)
    first = governors()[-1].config
    assert first.enforcement is EnforcementMode.BLOCK and first.api_key == "env-key"
    thoth_nb.instrument([read_file], config)
    assert governors()[-1].config.session_id != first.session_id


def test_config_of_the_wrong_type_is_named() -> None:
    with pytest.raises(ThothConfigError, match="ThothConfig or a dict"):
        thoth_nb.instrument([read_file], "agent-1")  # type: ignore[arg-type]
