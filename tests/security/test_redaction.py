"""Redaction: secrets in a call's arguments are masked in every recorded event (embedded store and HTTP
batch body), while the enforcer still decides on the real values; huge, deep and non-UTF-8 arguments
are bounded and stored safely."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import thoth_nb
from thoth_nb import ThothConfigError, ThothPolicyViolation
from thoth_nb._redact import MAX_STRING, MAX_TOTAL, redactor_for_options
from thoth_nb._runtime import local_store, store_path
from thoth_nb._transports.http import HTTPTransport
from thoth_nb.testing import ScriptedEnforcer

API_KEY = "sk-live-a1b2c3d4e5f6g7h8i9j0k1l2"
EMAIL = "alice@corp.example"
CARD = "4111 1111 1111 1111"
PASSWORD = "hunter2-horse-battery"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
# the card in both spellings: "4111" alone also turns up in timestamps ("07:42:12.341111Z")
SECRETS = (API_KEY, EMAIL, PASSWORD, CARD, CARD.replace(" ", ""), JWT)

POLICY = """
version: 1
rules:
  - {id: live-key, tool: send, when: {token: {regex: "^sk-live-"}}, decision: block, reason: live keys stay home}
  - {id: card-out, tool: send, when: {note: {contains: "4111 1111"}}, decision: block, reason: no card numbers}
"""

ran: list[dict[str, Any]] = []


def send(**kwargs: Any) -> str:
    ran.append(kwargs)
    return "sent"


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@pytest.fixture
def cfg(tmp_path: Path) -> dict[str, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {"agent_id": "agent", "tenant_id": "t", "approved_scope": ["send"], "policy": str(policy)}


def _stored_bodies() -> list[str]:
    thoth_nb.flush()
    con = sqlite3.connect(store_path())
    try:
        return [row[0] for row in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


def test_default_patterns_are_masked_in_the_stored_events(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg)(send)
    args = {"to": EMAIL, "password": PASSWORD, "body": f"auth with {JWT} and mail {EMAIL}",
            "nested": {"headers": {"Authorization": f"Bearer {API_KEY}"}, "cards": [int(CARD.replace(' ', ''))]},
            "order": 1732550400000}
    assert tool(**args) == "sent"
    assert ran == [args]  # the tool itself got the real values
    bodies = _stored_bodies()
    assert len(bodies) == 2
    for body in bodies:
        for secret in SECRETS:
            assert secret not in body, (secret, body)
    recorded = json.loads(bodies[0])["metadata"]["tool_args"]
    assert recorded == {
        "to": "[REDACTED:email]@corp.example", "password": "[REDACTED:password]",
        "body": "auth with [REDACTED:jwt] and mail [REDACTED:email]@corp.example",
        "nested": {"headers": {"Authorization": "[REDACTED:authorization]"}, "cards": ["[REDACTED:card_number]"]},
        "order": 1732550400000,  # a millisecond timestamp is not a card number
    }
    assert json.loads(bodies[0])["metadata"]["tool_call"]["arguments"] == recorded


def test_the_enforcer_decides_on_the_real_values(cfg: dict[str, Any]) -> None:
    """Both rules match only the secret itself, which events never see; they still fire."""
    tool = thoth_nb.governed(**cfg)(send)
    with pytest.raises(ThothPolicyViolation, match="live keys stay home"):
        tool(token=API_KEY)
    with pytest.raises(ThothPolicyViolation, match="no card numbers"):
        tool(note=f"card {CARD}")
    assert tool(token="sk-test-x") == "sent"
    assert ran == [{"token": "sk-test-x"}]
    bodies = _stored_bodies()
    blocks = [json.loads(b) for b in bodies if json.loads(b)["event_type"] == "TOOL_CALL_BLOCK"]
    assert [b["metadata"]["matched_rule_ids"] for b in blocks] == [["live-key"], ["card-out"]]
    assert [b["metadata"]["tool_args"] for b in blocks] == [{"token": "[REDACTED:token]"},
                                                            {"note": "card [REDACTED:card_number]"}]
    assert not any(API_KEY in b or "4111 1111" in b for b in bodies)


def test_the_http_batch_body_is_masked_while_the_enforce_request_has_real_values() -> None:
    enforcer = ScriptedEnforcer(lambda body: {"decision": "BLOCK", "reason": "key seen"}
                                if body["tool_args"].get("token") == API_KEY else {"decision": "ALLOW"})
    mock = enforcer.transport()
    transport = HTTPTransport("http://enforcer.test", api_key="k", transport=mock, async_transport=mock)
    tool = thoth_nb.governed(transport=transport, agent_id="a", tenant_id="t", approved_scope=["send"],
                             api_url="http://enforcer.test")(send)
    with pytest.raises(ThothPolicyViolation, match="key seen"):
        tool(token=API_KEY, to=EMAIL)
    assert tool(token="public", to=EMAIL) == "sent"
    thoth_nb.flush()
    assert enforcer.enforce_bodies[0]["tool_args"] == {"token": API_KEY, "to": EMAIL}
    batches = [r.content.decode() for r in enforcer.requests if r.url.path == "/v1/events/batch"]
    assert batches and [e["event_type"] for e in enforcer.events] == [
        "TOOL_CALL_PRE", "TOOL_CALL_BLOCK", "TOOL_CALL_PRE", "TOOL_CALL_POST"]
    for raw in batches:
        assert API_KEY not in raw and EMAIL not in raw
    assert enforcer.events[0]["metadata"]["tool_args"] == {"token": "[REDACTED:token]",
                                                           "to": "[REDACTED:email]@corp.example"}


def test_redaction_runs_on_the_emitter_thread(cfg: dict[str, Any]) -> None:
    """An argument that reports where it was turned into text: the recorded copy was made off the
    calling thread, so masking costs the agent nothing."""

    class Where:
        def __str__(self) -> str:
            return f"made on {threading.current_thread().name} for {EMAIL}"

    tool = thoth_nb.governed(**cfg)(send)
    tool(arg=Where())
    thoth_nb.flush()
    recorded = local_store().events("t")[0]["metadata"]["tool_args"]["arg"]
    assert recorded.endswith("for [REDACTED:email]@corp.example")
    assert threading.current_thread().name not in recorded


def test_custom_patterns_and_keys_and_turning_defaults_off(cfg: dict[str, Any]) -> None:
    tool = thoth_nb.governed(**cfg, redact={"ticket": r"INT-\d{6}"}, redact_keys=["pin"])(send)
    tool(ref="see INT-123456", pin=1234, to=EMAIL)
    plain = thoth_nb.governed(**cfg, redact_defaults=False)(send)
    plain(to=EMAIL, password=PASSWORD)
    thoth_nb.flush()
    pre = [e["metadata"]["tool_args"] for e in local_store().events("t") if e["event_type"] == "TOOL_CALL_PRE"]
    assert pre == [{"ref": "see [REDACTED:ticket]", "pin": "[REDACTED:pin]",
                    "to": "[REDACTED:email]@corp.example"},
                   {"to": EMAIL, "password": PASSWORD}]


def test_redact_from_the_environment(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_REDACT", '["ACCT-[0-9]+"]')
    monkeypatch.setenv("THOTH_REDACT_KEYS", "ssn_like, pin")
    tool = thoth_nb.governed(**cfg)(send)
    tool(a="ACCT-42", ssn_like="x", pin="0000")
    thoth_nb.flush()
    assert local_store().events("t")[0]["metadata"]["tool_args"] == {
        "a": "[REDACTED:custom]", "ssn_like": "[REDACTED:ssnlike]", "pin": "[REDACTED:pin]"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redact": ["(unclosed"]}, "redaction pattern 'custom' is not a valid regular expression"),
        ({"redact": {"email": "x+"}}, "already name a default pattern"),
        ({"redact": {"bad name": "x"}}, "must be letters, digits or _"),
        ({"redact": 5}, "redact must be a regex, a list of regexes or a dict"),
        ({"redact_keys": [1]}, "redact_keys must list argument names as strings"),
    ],
)
def test_bad_redaction_options_are_clear_errors(cfg: dict[str, Any], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ThothConfigError, match=message.replace("(", r"\(")):
        thoth_nb.governed(**cfg, **options)(send)


def test_thoth_redact_must_be_json(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTH_REDACT", "INT-[0-9")
    with pytest.raises(ThothConfigError, match="THOTH_REDACT must be a JSON list or object"):
        thoth_nb.governed(**cfg)(send)


# -- size limits ---------------------------------------------------------------------------------


def test_huge_deep_and_non_utf8_arguments_are_bounded_and_stored(cfg: dict[str, Any]) -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(5000):  # deeper than the recursion limit
        cursor.append([])
        cursor = cursor[0]
    tool = thoth_nb.governed(**cfg)(send)
    huge = "x" * 20_000_000
    tool(blob=huge, deep=deep, raw=b"\xff\xfe\x00ok", name="caf\udce9", many=list(range(100_000)),
         wide={f"k{i}": "v" * 1000 for i in range(10_000)})
    assert ran[0]["blob"] is huge  # the tool got the real value
    bodies = _stored_bodies()
    assert len(bodies) == 2
    for body in bodies:
        # the arguments appear twice (metadata.tool_args and metadata.tool_call.arguments, one object)
        assert len(body) < 2 * MAX_TOTAL + 20_000, len(body)
    recorded = json.loads(bodies[0])["metadata"]["tool_args"]
    assert recorded["blob"].startswith("x" * MAX_STRING) and "truncated" in recorded["blob"]
    assert "[truncated: nesting]" in json.dumps(recorded["deep"])
    assert recorded["raw"] == "\ufffd\ufffd\x00ok"
    assert recorded["name"] == "caf\\udce9"  # a lone surrogate cannot be encoded: kept visibly escaped
    assert recorded["many"][-1].startswith("[truncated:") and len(recorded["many"]) < 300
    assert "[truncated]" in recorded["wide"] or any("size limit" in str(v) for v in recorded["wide"].values())
    assert thoth_nb.status()["dropped_events"] == 0


def test_a_very_long_tool_name_is_governed_and_recorded(cfg: dict[str, Any]) -> None:
    name = "t" * 10_000

    def tool_fn(**kwargs: Any) -> str:
        return "ok"

    tool_fn.__name__ = name
    tool = thoth_nb.governed(**{**cfg, "approved_scope": [name]})(tool_fn)
    assert tool(a=1) == "ok"
    thoth_nb.flush()
    assert [e["tool_name"] for e in local_store().events("t")] == [name, name]


def test_the_redactor_keeps_ordinary_values_readable() -> None:
    redactor = redactor_for_options({}, [], True)
    plain = {"path": "/tmp/report.csv", "count": 42, "ratio": 0.5, "ok": True, "none": None, "phone": "+1 555 0100",
             "order_id": 4111111111111112, "max_tokens": 256, "text": "the password policy is documented"}
    assert redactor.tree(plain) == plain
    assert redactor.text("postgres://admin:s3cret@db:5432/x") == "postgres://[REDACTED:password]@db:5432/x"
    assert redactor.text("AKIAIOSFODNN7EXAMPLE in ghp_" + "a" * 36) == "[REDACTED:api_key] in [REDACTED:api_key]"
    assert redactor.text("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----") == \
        "[REDACTED:private_key]"
    assert redactor.tree(float("nan")) == "nan"


def test_an_error_message_is_masked_too(cfg: dict[str, Any]) -> None:
    def send(**kwargs: Any) -> str:
        raise RuntimeError(f"login failed for {EMAIL} with password={PASSWORD}")

    with pytest.raises(RuntimeError, match=PASSWORD):  # the caller still sees the real error
        thoth_nb.governed(**cfg)(send)(to="x")
    assert thoth_nb.flush()
    post = next(e for e in local_store().events("t") if e["event_type"] == "TOOL_CALL_POST")
    assert post["metadata"]["error"] == "login failed for [REDACTED:email]@corp.example with [REDACTED:password]"
