"""Export: Parquet and JSON-lines round trips, and OpenInference spans to a fake OTLP/HTTP collector on loopback."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import thoth_nb
from thoth_nb.analytics.export import export_events, read_events, tool_calls
from thoth_nb.analytics.synthetic import synthetic_events

POLICY = """
rules:
  - {id: no-secrets, tool: read_file, when: {path: {glob: "secrets/**"}}, decision: block, severity: high}
"""


def _record(tmp_path: Path, sessions: int = 2) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY, encoding="utf-8")

    def read_file(path: str) -> str:
        return "text"

    def web_search(q: str, n: int = 3) -> str:
        return "results"

    for _ in range(sessions):
        tools = thoth_nb.instrument([read_file, web_search], agent_id="research", tenant_id="t", user_id="ann",
                                    approved_scope=["read_file", "web_search"], session_id=str(uuid.uuid4()),
                                    policy=str(policy))
        tools[1](q="cats", n=5)
        tools[0](path="notes/a.md")
        with pytest.raises(thoth_nb.ThothPolicyViolation):
            tools[0](path="secrets/prod.env")
    thoth_nb.flush()


# --- files ------------------------------------------------------------------------------------------


def _plain(frame: pd.DataFrame) -> list[list[Any]]:
    """Rows as Python values with every kind of missing value as None (to compare values across dtypes)."""
    return [[None if not isinstance(v, (dict, list)) and pd.isna(v) else v for v in row]
            for row in frame.astype(object).itertuples(index=False, name=None)]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_round_trip_of_a_store_frame(tmp_path: Path, suffix: str) -> None:
    _record(tmp_path)
    events = thoth_nb.events(tenant_id="t")
    assert len(events) == 12 and "tool_args" in events.columns
    target = export_events(events, tmp_path / f"events.{suffix}")
    back = read_events(target)
    if suffix == "parquet":  # Parquet keeps every dtype
        pd.testing.assert_frame_equal(back, events, check_categorical=False)
    else:  # JSON lines has no schema: the same values; the known columns get their dtypes back
        assert list(back.columns) == list(events.columns)
        assert _plain(back) == _plain(events)
        for column in ("seq", "occurred_at", "risk_score", "duration_ms"):
            assert back[column].dtype == events[column].dtype, column
    assert back["tool_args"].tolist()[0] == {"q": "cats", "n": 5}
    assert isinstance(back["session_id"].dtype, pd.CategoricalDtype)
    assert str(back["occurred_at"].dtype) == "datetime64[us, UTC]"


def test_parquet_keeps_nanoseconds_and_extra_columns(tmp_path: Path) -> None:
    events = synthetic_events(500, seed=3)
    back = read_events(export_events(events, tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(back, events)


def test_jsonl_is_one_plain_event_per_line(tmp_path: Path) -> None:
    _record(tmp_path, sessions=1)
    path = export_events(None, tmp_path / "e.ndjson")  # None: this process's store (default tenant "t")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 6
    blocked = [line for line in lines if line["event_type"] == "TOOL_CALL_BLOCK"]
    assert blocked[0]["decision"] == "BLOCK" and blocked[0]["occurred_at"].endswith("+00:00")


def test_a_store_path_is_a_source(tmp_path: Path) -> None:
    _record(tmp_path, sessions=1)
    store = thoth_nb._runtime.local_store()
    back = read_events(export_events(store, tmp_path / "e.parquet"))
    assert len(back) == 6  # the store's own tenant default reads tenant "t" (the last instrumented agent's)


@pytest.mark.parametrize(
    ("path", "options", "error", "message"),
    [
        ("events.csv", {}, ValueError, "cannot tell the format"),
        ("events.bin", {"format": "xml"}, ValueError, "format 'xml' is not one of"),
        ("missing/folder/e.jsonl", {}, FileNotFoundError, "does not exist"),
        ("e.parquet", {"headers": {}}, TypeError, "unexpected option"),
    ],
)
def test_bad_targets_say_what_to_do(tmp_path: Path, path: str, options: dict[str, Any], error: type[Exception],
                                    message: str) -> None:
    with pytest.raises(error, match=message):
        export_events(synthetic_events(10), tmp_path / path, **options)
    with pytest.raises(TypeError, match="export_events needs an events DataFrame"):
        export_events(42, tmp_path / "x.parquet")


# --- OTLP ---------------------------------------------------------------------------------------------


class Collector(http.server.ThreadingHTTPServer):
    """A fake OTLP/HTTP collector: decodes every ExportTraceServiceRequest it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Any] = []
        self.headers_seen: list[dict[str, str]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[Any]:
        return [span for request in self.requests for rs in request.resource_spans for ss in rs.scope_spans
                for span in ss.spans]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces" or self.server.status != 200:
            self.send_response(400 if self.path == "/v1/traces" else 404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.headers_seen.append(dict(self.headers))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    pytest.importorskip("openinference.semconv")
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = [v.string_value for v in value.array_value.values] if kind == "array_value" else getattr(
            value, kind)
    return out


def test_spans_reach_the_collector_with_openinference_attributes(tmp_path: Path, collector: Collector) -> None:
    _record(tmp_path)
    events = thoth_nb.events(tenant_id="t")
    sent = export_events(events, collector.url, headers={"Authorization": "Bearer k"}, service_name="nb-test")
    spans = collector.spans()
    assert sent == len(spans) == 6 + 2  # six calls and one AGENT span per session
    assert {k.lower(): v for k, v in collector.headers_seen[0].items()}.get("authorization") == "Bearer k", \
        collector.headers_seen[0]
    resource = {kv.key: kv.value.string_value for kv in collector.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "nb-test"
    tools = [s for s in spans if _attrs(s)["openinference.span.kind"] == "TOOL"]
    agents = [s for s in spans if _attrs(s)["openinference.span.kind"] == "AGENT"]
    assert sorted(s.name for s in tools) == ["read_file"] * 4 + ["web_search"] * 2
    assert [s.name for s in agents] == ["agent research"] * 2
    by_id = {s.span_id: s for s in agents}
    for span in tools:
        attrs = _attrs(span)
        root = by_id[span.parent_span_id]  # every tool span hangs under its session's agent span
        assert span.trace_id == root.trace_id and attrs["session.id"] == _attrs(root)["session.id"]
        assert attrs["tool.name"] == span.name and attrs["user.id"] == "ann"
        assert attrs["input.mime_type"] == "application/json"
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        assert root.start_time_unix_nano <= span.start_time_unix_nano
    blocked = [s for s in tools if _attrs(s)["thoth.decision"] == "BLOCK"]
    assert len(blocked) == 2
    for span in blocked:
        attrs = _attrs(span)
        assert json.loads(attrs["input.value"]) == {"path": "secrets/prod.env"}
        assert attrs["thoth.violation_id"].startswith("vio_") and attrs["tag.tags"] == ["thoth:BLOCK"]
        assert span.status.code == 2
        assert span.status.message == attrs["thoth.reason"] == "matched policy rule no-secrets"
        assert json.loads(attrs["metadata"])["decision"] == "BLOCK"
    allowed = [s for s in tools if _attrs(s)["thoth.decision"] == "ALLOW"]
    assert len(allowed) == 4 and all(s.status.code == 1 for s in allowed)
    search = next(s for s in tools if s.name == "web_search")
    assert json.loads(_attrs(search)["input.value"]) == {"q": "cats", "n": 5}


def test_calls_pair_pre_with_their_outcome() -> None:
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    events = pd.DataFrame({
        "seq": [1, 2, 3, 4], "occurred_at": [start + pd.Timedelta(seconds=s) for s in (0, 1, 2, 5)],
        "session_id": ["s"] * 4, "agent_id": ["a"] * 4, "tool_name": ["t", "t", "t", "t"],
        "event_type": ["TOOL_CALL_PRE", "TOOL_CALL_PRE", "TOOL_CALL_POST", "TOOL_CALL_BLOCK"],
        "decision": [None, None, "ALLOW", "BLOCK"], "tool_args": [{"i": 1}, {"i": 2}, None, None]})
    calls = tool_calls(events)
    assert calls["tool_args"].tolist() == [{"i": 1}, {"i": 2}]
    assert calls["decision"].tolist() == ["ALLOW", "BLOCK"]
    assert calls["ended_at"].tolist() == [start + pd.Timedelta(seconds=2), start + pd.Timedelta(seconds=5)]


def test_a_refusing_collector_is_an_error(collector: Collector) -> None:
    collector.status = 400
    with pytest.raises(RuntimeError, match="refused spans"):
        export_events(synthetic_events(20), collector.url + "/v1/traces", timeout=5)
    with pytest.raises(ValueError, match="http"):
        export_events(synthetic_events(20), "ftp://x", format="otlp")
