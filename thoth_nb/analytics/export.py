"""Export recorded events: Parquet, JSON lines, or OpenTelemetry spans to an OTLP/HTTP endpoint.

    thoth_nb.export_events(thoth_nb.events(since="7d"), "week.parquet")
    thoth_nb.export_events(store, "events.jsonl")
    thoth_nb.export_events(df, "http://127.0.0.1:6006", format="otlp")   # Phoenix, MLflow, Langfuse, ...

Parquet keeps every dtype (categoricals, UTC timestamps); tool arguments are stored as JSON text in
the `tool_args` column (Parquet has no type for "any mapping") and parsed back by `read_events`.
JSON lines hold one event per line with times in RFC 3339 and arguments as nested objects.

OTLP: one span per governed tool call (its PRE event paired with the POST or BLOCK event that
ended it: the k-th PRE of a (session, tool) with its k-th outcome), named after the tool, with the
OpenInference semantic conventions for tool spans (`openinference.span.kind` TOOL, `tool.name`,
`input.value` = the arguments as JSON, `session.id`, `user.id`, `metadata`) plus `thoth.*`
attributes (decision, reason, risk score, violation id, agent, event ids). A blocked call's span
has status ERROR. Each session is one trace under an AGENT span (`agent.name`) covering its calls.
Needs the `otel` extra: pip install "thoth-nb[otel]".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thoth_nb.analytics.frames import EVENT_CATEGORIES, _pd

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "export_events", "export_spans", "read_events", "tool_calls"]

FORMATS = ("parquet", "jsonl", "otlp")
_JSON_COLUMNS = ("tool_args",)
_TIME_COLUMNS = ("occurred_at", "created_at", "resolved_at", "expires_at")
_META_KEY = b"thoth_nb"


def _frame(source: Any) -> Any:
    """An events frame from a frame, a store object, a store file path, or None (this process's store)."""
    if hasattr(source, "columns") and hasattr(source, "iloc"):
        return source
    from thoth_nb.analytics.frames import events

    if source is None:
        return events(tool_args=True)
    if isinstance(source, (str, os.PathLike)) or hasattr(source, "path"):
        return events(store=source, tool_args=True)
    raise TypeError(f"export_events needs an events DataFrame, a store or a store path; got {type(source).__name__}")


def _format(path: Any, format: str | None) -> str:
    if format is not None:
        chosen = format.lower().replace("-", "").replace("json_lines", "jsonl")
        chosen = {"jsonlines": "jsonl", "ndjson": "jsonl", "otel": "otlp", "opentelemetry": "otlp"}.get(chosen, chosen)
        if chosen not in FORMATS:
            raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
        return chosen
    text = str(path)
    if text.startswith(("http://", "https://")):
        return "otlp"
    suffix = Path(text).suffix.lower()
    found = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix)
    if found is None:
        raise ValueError(f"cannot tell the format of {text!r}: name it .parquet or .jsonl, pass an http(s) OTLP "
                         "endpoint, or give format='parquet' | 'jsonl' | 'otlp'")
    return found


def export_events(source: Any, path: str | os.PathLike[str], *, format: str | None = None,
                  **options: Any) -> Any:
    """Write the events of `source` (a frame from `thoth_nb.events()`, a store, a store path, or None
    for this process's store) to `path` as Parquet or JSON lines, or send them as spans to the OTLP
    endpoint `path` (`format` defaults from the suffix / URL). Returns the path written, or for OTLP
    the number of spans sent. `options` go to `export_spans` for OTLP (headers, service_name, ...)."""
    chosen = _format(path, format)
    frame = _frame(source)
    if chosen == "otlp":
        return export_spans(frame, str(path), **options)
    if options:
        raise TypeError(f"unexpected option(s) for {chosen}: {', '.join(sorted(options))}")
    target = Path(path).expanduser()
    if target.parent and not target.parent.exists():
        raise FileNotFoundError(f"the folder {target.parent} does not exist; create it first")
    if chosen == "parquet":
        _write_parquet(frame, target)
    else:
        _write_jsonl(frame, target)
    return target


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _dump(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True)


def _write_parquet(frame: Any, target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = frame.copy()
    for column in _JSON_COLUMNS:
        if column in out.columns:
            out[column] = [_dump(v) for v in out[column]]
    table = pa.Table.from_pandas(out, preserve_index=False)
    meta = {**(table.schema.metadata or {}), _META_KEY: json.dumps({
        "json_columns": [c for c in _JSON_COLUMNS if c in frame.columns],
        "object_columns": [str(c) for c in frame.columns if frame[c].dtype == object and c not in _JSON_COLUMNS],
        "attrs": {k: v for k, v in (frame.attrs.get("thoth") or {}).items() if isinstance(v, (str, bool, int))},
    }).encode()}
    pq.write_table(table.replace_schema_metadata(meta), target)


def _write_jsonl(frame: Any, target: Path) -> None:
    pd = _pd()
    columns = list(frame.columns)
    with open(target, "w", encoding="utf-8") as sink:
        for values in frame.itertuples(index=False, name=None):
            record = {}
            for column, value in zip(columns, values, strict=True):
                if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
                    value = None
                elif hasattr(value, "isoformat"):
                    value = value.isoformat()
                elif hasattr(value, "item") and not isinstance(value, (list, dict)):
                    value = value.item()  # numpy scalars
                record[column] = value
            sink.write(json.dumps(record, default=_json_default, ensure_ascii=False) + "\n")


def read_events(path: str | os.PathLike[str], *, format: str | None = None) -> pd.DataFrame:
    """An events frame back from `export_events`' Parquet or JSON lines file. Parquet gives back the same
    columns and dtypes; JSON lines the same columns and values, with the dtypes of `thoth_nb.events()`
    for its known columns (times, categories, seq, numbers) and Python objects for the rest."""
    pd = _pd()
    chosen = _format(path, format)
    if chosen == "otlp":
        raise ValueError("read_events reads files; spans sent to an OTLP endpoint are read with that backend")
    target = Path(path).expanduser()
    if chosen == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(target)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        frame = table.to_pandas()
        for column in meta.get("object_columns", []):  # plain Python values, as written (not inferred strings)
            frame[column] = pd.Series(table.column(column).to_pylist(), index=frame.index, dtype=object)
        for column in meta.get("json_columns", []):
            frame[column] = pd.Series([json.loads(v) if isinstance(v, str) else None for v in frame[column]],
                                      index=frame.index, dtype=object)
        if meta.get("attrs"):
            frame.attrs["thoth"] = {**meta["attrs"], "source": "parquet"}
        return frame  # type: ignore[no-any-return]
    with open(target, encoding="utf-8") as source:
        rows = [json.loads(line) for line in source if line.strip()]
    frame = pd.DataFrame(rows, dtype=object)  # JSON has no schema: text stays Python str/None unless known below
    for column in _TIME_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    for column in (*EVENT_CATEGORIES, "outcome"):
        if column in frame.columns:
            frame[column] = frame[column].astype("category")
    if "seq" in frame.columns and frame["seq"].notna().all():
        frame["seq"] = frame["seq"].astype("int64")
    for column in ("risk_score", "duration_ms"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in _JSON_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.Series([v if isinstance(v, dict) else None for v in frame[column]],
                                      index=frame.index, dtype=object)
    return frame  # type: ignore[no-any-return]


# --- OpenTelemetry --------------------------------------------------------------------------------


def _otel() -> Any:
    try:
        from openinference.semconv import trace as semconv
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError:
        raise ImportError('exporting spans needs OpenTelemetry: pip install "thoth-nb[otel]"') from None
    return semconv, OTLPSpanExporter, sdk_trace


def tool_calls(frame: Any) -> Any:
    """One row per call: the PRE event's columns plus the outcome's decision, reason, risk_score,
    violation_id, duration_ms, outcome and end time (NaN/None when the call has no outcome event)."""
    from thoth_nb.analytics.replay import call_numbers

    pd = _pd()
    if "event_type" not in frame.columns:
        return frame.assign(ended_at=frame["occurred_at"])
    kinds = frame["event_type"].astype(str)
    numbers = call_numbers(frame)
    is_pre = (kinds == "TOOL_CALL_PRE").to_numpy()
    answered = kinds.isin(["TOOL_CALL_POST", "TOOL_CALL_BLOCK"]).to_numpy() & (numbers >= 0)
    pre = frame[is_pre].copy()
    done = frame[answered].copy()
    for part, mask in ((pre, is_pre), (done, answered)):
        part["_session"] = part["session_id"].astype(str)
        part["_tool"] = part["tool_name"].astype(str)
        part["_k"] = numbers[mask]
    wanted = [c for c in ("decision", "reason", "risk_score", "violation_id", "duration_ms", "outcome",
                          "event_id", "event_type") if c in done.columns]
    ends = done[["_session", "_tool", "_k", "occurred_at", *wanted]].rename(
        columns={"occurred_at": "ended_at", "event_id": "end_event_id", "event_type": "end_type"})
    keep = [c for c in pre.columns if c not in wanted or c in ("event_id", "event_type")]
    merged = pre[keep].merge(ends, on=["_session", "_tool", "_k"], how="left", suffixes=("", "_end"))
    merged = merged.drop(columns=["_session", "_tool", "_k"])
    return merged.sort_values([c for c in ("occurred_at", "seq") if c in merged.columns], kind="stable").reset_index(
        drop=True) if len(merged) else pd.DataFrame(columns=merged.columns)


def _ns(value: Any) -> int | None:
    if value is None:
        return None
    try:
        if value != value:  # NaT / NaN
            return None
    except (TypeError, ValueError):
        pass
    return int(value.value) if hasattr(value, "value") else None


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        return value.item()
    return value


def export_spans(events: Any, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 service_name: str = "thoth-nb", timeout: float = 10.0, batch_size: int = 512) -> int:
    """Send the calls in `events` as OpenInference tool spans to the OTLP/HTTP `endpoint` (a base URL
    such as http://127.0.0.1:4318, or one ending in /v1/traces). Returns the number of spans sent;
    raises RuntimeError when the collector refuses a batch."""
    semconv, exporter_class, sdk_trace = _otel()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    attrs, kinds = semconv.SpanAttributes, semconv.OpenInferenceSpanKindValues
    frame = _frame(events)
    if "tool_args" not in frame.columns and (frame.attrs.get("thoth") or {}).get("source") == "store":
        frame = frame.thoth.with_args()
    calls = tool_calls(frame)
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http(s) URL of an OTLP/HTTP collector; got {endpoint!r}")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    collected = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("thoth_nb.analytics.export")
    for session, group in calls.groupby(calls["session_id"].astype(str), sort=False) if len(calls) else []:
        starts = [_ns(v) for v in group["occurred_at"]]
        ends = [_ns(v) for v in group["ended_at"]] if "ended_at" in group.columns else starts
        first = min(s for s in starts if s is not None)
        last = max([e for e in ends if e is not None] + [s for s in starts if s is not None])
        agent = str(group["agent_id"].iloc[0]) if "agent_id" in group.columns else "agent"
        root = tracer.start_span(f"agent {agent}", start_time=first, attributes={
            attrs.OPENINFERENCE_SPAN_KIND: kinds.AGENT.value, attrs.AGENT_NAME: agent, attrs.SESSION_ID: session,
            "thoth.agent_id": agent})
        parent = set_span_in_context(root)
        for row, start, end in zip(group.to_dict("records"), starts, ends, strict=True):
            tool = str(row["tool_name"])
            decision = _clean(row.get("decision"))
            metadata = {k: _clean(row.get(k)) for k in ("agent_id", "decision", "reason", "risk_score",
                                                        "violation_id", "outcome", "duration_ms")}
            span_attrs: dict[str, Any] = {
                attrs.OPENINFERENCE_SPAN_KIND: kinds.TOOL.value, attrs.TOOL_NAME: tool,
                attrs.SESSION_ID: session, attrs.METADATA: json.dumps(metadata, default=str),
                "thoth.agent_id": str(row.get("agent_id") or ""), "thoth.tool_name": tool,
            }
            if row.get("tool_args") is not None:
                span_attrs[attrs.INPUT_VALUE] = json.dumps(row["tool_args"], default=str, ensure_ascii=False)
                span_attrs[attrs.INPUT_MIME_TYPE] = "application/json"
            if _clean(row.get("user_id")):
                span_attrs[attrs.USER_ID] = str(row["user_id"])
            for key, name in (("decision", "thoth.decision"), ("reason", "thoth.reason"),
                              ("violation_id", "thoth.violation_id"), ("event_id", "thoth.event_id"),
                              ("end_event_id", "thoth.end_event_id"), ("outcome", "thoth.outcome")):
                value = _clean(row.get(key))
                if value is not None:
                    span_attrs[name] = str(value)
            risk = _clean(row.get("risk_score"))
            if risk is not None:
                span_attrs["thoth.risk_score"] = float(risk)
            if decision is not None:
                span_attrs[attrs.TAG_TAGS] = [f"thoth:{decision}"]
            span = tracer.start_span(tool, context=parent, start_time=start, attributes=span_attrs)
            if decision == "BLOCK":
                span.set_status(Status(StatusCode.ERROR, str(_clean(row.get("reason")) or "blocked by policy")))
            elif decision is not None:
                span.set_status(Status(StatusCode.OK))
            duration = _clean(row.get("duration_ms"))
            stop = end if end is not None else (start + int(float(duration) * 1e6) if duration and start else start)
            span.end(end_time=stop)
        root.end(end_time=last)
    spans = collected.get_finished_spans()
    from urllib.parse import urlsplit

    import requests

    session = requests.Session()
    if urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1"):
        session.trust_env = False  # a local collector (Phoenix on this machine) is never behind a proxy
    exporter = exporter_class(endpoint=url, headers=dict(headers or {}), timeout=timeout, session=session)
    try:
        for i in range(0, len(spans), batch_size):
            if exporter.export(spans[i:i + batch_size]) is not SpanExportResult.SUCCESS:
                raise RuntimeError(f"the OTLP collector at {url} refused spans {i}-{min(i + batch_size, len(spans))} "
                                   "(see the log for its status); check the endpoint and headers")
    finally:
        exporter.shutdown()
        provider.shutdown()
    return len(spans)


