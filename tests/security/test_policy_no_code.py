"""The policy file cannot execute code: YAML object tags are refused (never constructed) with an error
naming the line, alias bombs are cut off, and eval-looking strings stay plain strings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb import PolicyError, ThothPolicyViolation
from thoth_nb.cli import main
from thoth_nb.engine.policy import load_policy, parse_policy

RULE = """version: 1
rules:
  - id: r
    tool: "*"
    decision: block
    reason: {value}
"""


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that exists only if some policy text managed to run a command."""
    return tmp_path / "pwned"


@pytest.mark.parametrize(
    "value",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/new:os.system ["touch {marker}"]',
        "!!python/name:os.system",
        "!!python/module:os",
        '!!python/object:collections.OrderedDict {{}}',
        '!!python/tuple ["a"]',
        '!custom "x"',
        '!!binary aGVsbG8=',
    ],
)
def test_yaml_tags_are_refused_with_the_line(value: str, marker: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULE.format(value=value.format(marker=marker)))
    with pytest.raises(PolicyError, match=r"YAML tag .* is not allowed: a policy holds plain values only") as info:
        load_policy(path)
    assert info.value.line == 6 and "rules.0.reason" in str(info.value)
    assert main(["policy", "check", str(path)]) == 1
    assert "is not allowed" in capsys.readouterr().err
    assert not marker.exists()


def test_a_tagged_key_is_refused(marker: Path) -> None:
    text = f'version: 1\nrules: []\n? !!python/object/apply:os.system ["touch {marker}"]\n: x\n'
    with pytest.raises(PolicyError, match="is not allowed") as info:
        parse_policy(text)
    assert info.value.line == 3 and not marker.exists()


def test_a_governed_call_with_a_tagged_policy_fails_at_configuration(marker: Path, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULE.format(value=f'!!python/object/apply:os.system ["touch {marker}"]'))
    with pytest.raises(PolicyError, match="not allowed"):
        thoth_nb.governed(agent_id="a", tenant_id="t", approved_scope=["f"], policy=str(path))(lambda: 1)()
    assert not marker.exists()


def test_an_alias_bomb_is_cut_off_quickly() -> None:
    text = "version: 1\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):  # 10**10 values once expanded
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    started = time.monotonic()
    with pytest.raises(PolicyError, match="once YAML aliases are expanded"):
        parse_policy(text)
    assert time.monotonic() - started < 10


def test_small_aliases_still_work() -> None:
    text = """version: 1
rules:
  - {id: a, tool: pay, when: &big {amount: {gt: 100}}, decision: block}
  - {id: b, tool: refund, when: *big, decision: block}
"""
    assert [r.id for r in parse_policy(text).rules] == ["a", "b"]


EVAL_LIKE = "__import__('os').system('touch {marker}')"


def test_eval_like_strings_are_plain_values(marker: Path, tmp_path: Path) -> None:
    """Code in a condition value, a reason or a regex is compared or printed, never run."""
    code = EVAL_LIKE.format(marker=marker)
    path = tmp_path / "policy.yaml"
    path.write_text(f"""version: 1
rules:
  - id: literal
    tool: run
    when: {{cmd: "{code}"}}
    decision: block
    reason: "{{{code}}} ${{{code}}} %({code})s"
""")
    policy = load_policy(path)
    run = thoth_nb.governed(agent_id="a", tenant_id="t", approved_scope=["run"], policy=str(path))(_run)
    with pytest.raises(ThothPolicyViolation) as info:
        run(cmd=code)  # the condition matches the literal text
    assert code in str(info.value)  # and the reason is shown as written
    assert run(cmd="1+1") == "ran" and run(cmd="ls") == "ran"
    assert policy.rules[0].id == "literal" and not marker.exists()


def _run(cmd: str) -> str:
    return "ran"


_run.__name__ = "run"


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ('{amount: {gt: "__import__(\'os\').getpid()"}}', "number"),
        ('{amount: {gt: "1+1"}}', "number"),
        ('{amount: {eval: "1+1"}}', "eval"),
    ],
)
def test_operators_do_not_evaluate_expressions(when: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(f"version: 1\nrules:\n  - {{id: x, tool: pay, when: {when}, decision: block}}\n")


def test_the_server_refuses_a_tagged_policy_and_stores_nothing(tmp_path: Path, marker: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import httpx

    from thoth_nb.engine.store import SQLiteStore
    from thoth_nb.server import BackgroundServer

    db = tmp_path / "server.db"
    store = SQLiteStore(db)
    key = store.create_api_key("acme", "admin", "admin")[1]
    store.close()
    server = BackgroundServer(db).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10,
                          trust_env=False) as client:
            etag = client.get("/v1/policies").json()["etag"]
            bad = RULE.format(value=f'!!python/object/apply:os.system ["touch {marker}"]')
            answer: Any = client.put("/v1/policies", json={"policy": bad}, headers={"If-Match": etag})
            assert answer.status_code == 422 and "is not allowed" in answer.json()["message"]
            assert client.get("/v1/policies").json()["version"] == 0
    finally:
        server.stop()
    assert not marker.exists()
