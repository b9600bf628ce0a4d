"""The seed's legacy `ThothClient` surface: `instrument*()` methods for the provider tool dicts."""

from __future__ import annotations

from typing import Any

import pytest

import thoth_nb
from thoth_nb import ThothPolicyViolation


def read_file(path: str) -> str:
    return f"<{path}>"


@pytest.mark.parametrize("method", ["instrument_anthropic", "instrument_openai",
                                    "wrap_anthropic_tools", "wrap_openai_tools"])
def test_client_wraps_provider_tool_dicts(method: str, cfg: dict[str, Any]) -> None:
    """The seed's ThothClient has instrumentAnthropic/instrumentOpenAI (the README's `instrument*()`
    methods) besides the wrapAnthropicTools/wrapOpenAITools aliases; all four govern a tool dict."""
    client = thoth_nb.ThothClient(tenant_id="t", user_id="alice")
    rest = {k: v for k, v in cfg.items() if k != "tenant_id"}
    wrapped = getattr(client, method)({"read_file": read_file}, **rest)
    assert wrapped["read_file"]({"path": "/home/a"}) == "<{'path': '/home/a'}>"
    with pytest.raises(ThothPolicyViolation):
        wrapped["read_file"]({"path": "/etc/passwd"})


def test_client_takes_the_seed_defaults_object(cfg: dict[str, Any]) -> None:
    """`new ThothClient({tenantId, userId})`: the defaults may come as one dict (or ThothConfig)."""
    from thoth_nb._runtime import governors

    client = thoth_nb.ThothClient({"tenant_id": "t", "user_id": "alice"})
    rest = {k: v for k, v in cfg.items() if k != "tenant_id"}
    client.instrument([read_file], **rest)
    assert (governors()[-1].config.tenant_id, governors()[-1].config.user_id) == ("t", "alice")
