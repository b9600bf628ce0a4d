"""Tamper evidence for the event store: verify each session's SHA-256 chain, export a bundle.

On ingest (store.py, store_pg.py) every event of a (tenant, session) gets `chain_index` (its position,
0, 1, 2, ...), `previous_hash` (the hash of the record before it, "" for the first) and
`hash = sha256(previous_hash + body)`, where `body` is the exact JSON text stored, which itself holds
`chain_index` and `previous_hash`. This module recomputes all of that, streaming rows in `seq` order
(memory is one entry per chain, not per event), and says where it breaks:

- **edited**: a record's content no longer matches its hash, a column disagrees with the hashed body,
  or a record was rewritten with a fresh hash (then the next record's `previous_hash` no longer links);
- **inserted**: a record claims a position its chain already has;
- **deleted**: a position is missing (a gap, or a chain not starting at 0), or a record anchored by an
  earlier export (`--anchor manifest.json`) is gone.

Limits, stated plainly: the chain is keyless, so someone able to rewrite the whole database can
recompute every later hash; deleting the last records of a chain leaves no gap. Both are caught only
against an anchor taken before the change: the manifest of an `audit export` kept elsewhere (its
SHA-256 fingerprint is printed so it can be written down or signed).

A bundle is a directory (or a `.zip` of it) with `events.jsonl` (one stored row per line, `body` being
the hashed JSON text) and `manifest.json` (counts, the file's SHA-256 and every chain's first and last
link). `verify_bundle` checks it with no store at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BUNDLE_FORMAT",
    "AuditReport",
    "BundleError",
    "ChainVerifier",
    "Finding",
    "export_bundle",
    "load_manifest",
    "manifest_fingerprint",
    "verify_bundle",
    "verify_rows",
    "verify_store",
]

BUNDLE_FORMAT = "thoth-nb-audit/1"
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"
MAX_FINDINGS = 1000  # a wholesale rewrite would otherwise hold one finding per event in memory

# Columns copied from the event into indexed columns on ingest; each must equal the hashed body.
_BODY_COLUMNS = ("event_id", "tenant_id", "session_id", "agent_id", "user_id", "tool_name", "event_type")


class BundleError(ValueError):
    """An audit bundle that cannot be read (missing file, bad JSON, unknown format)."""


@dataclass(frozen=True)
class Finding:
    """One break in a chain, located by tenant, session, position (`chain_index`) and event id."""

    kind: str  # "edited" | "inserted" | "deleted"
    tenant_id: str
    session_id: str
    position: int | None
    event_id: str | None
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"tenant {self.tenant_id!r} session {self.session_id!r}"
        if self.position is not None:
            where += f" position {self.position}"
        if self.event_id:
            where += f" event {self.event_id}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{self.kind.upper()}: {where}: {self.detail}"


@dataclass
class _Chain:
    tenant_id: str
    session_id: str
    first_index: int
    first_previous_hash: str
    head_index: int
    head_hash: str
    head_event_id: str
    count: int = 1


@dataclass
class AuditReport:
    """What a verification found: `ok` is True only with no findings."""

    events: int = 0
    chains: int = 0
    tenants: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    total_findings: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total_findings == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "chains": self.chains, "tenants": sorted(self.tenants),
                "total_findings": self.total_findings, "findings": [asdict(f) for f in self.findings],
                "notes": self.notes}


def _digest(previous_hash: str, body: str) -> str:
    return hashlib.sha256((previous_hash + body).encode()).hexdigest()


def _same_time(a: Any, b: Any) -> bool:
    from thoth_nb.engine.store import parse_ts

    try:
        left = a if isinstance(a, dt.datetime) else parse_ts(str(a))
        right = b if isinstance(b, dt.datetime) else parse_ts(str(b))
    except ValueError:
        return False
    return left == right


class ChainVerifier:
    """Feed stored rows in `seq` order (`feed`), then `finish()` for the report.

    `allow_pruned`: a chain may start after position 0 (`thoth-nb db prune` deletes old records); the
    first remaining record is then trusted as the start. `anchors`: chain heads from an earlier export
    manifest, each of which must still be present with the same hash.
    """

    def __init__(self, *, allow_pruned: bool = False, anchors: Iterable[Mapping[str, Any]] = ()) -> None:
        self.allow_pruned = allow_pruned
        self.report = AuditReport()
        self._chains: dict[tuple[str, str], _Chain] = {}
        self._anchors: dict[tuple[str, str], tuple[int, str, str]] = {}
        for anchor in anchors:
            key = (str(anchor["tenant_id"]), str(anchor["session_id"]))
            self._anchors[key] = (int(anchor["head_index"]), str(anchor["head_hash"]),
                                  str(anchor.get("head_event_id") or ""))
        self._anchors_seen: set[tuple[str, str]] = set()
        self._pruned = 0

    def flag(self, kind: str, key: tuple[str, str], position: int | None, event_id: str | None,
              seq: int | None, detail: str) -> None:
        self.report.total_findings += 1
        if len(self.report.findings) < MAX_FINDINGS:
            self.report.findings.append(Finding(kind, key[0], key[1], position, event_id, seq, detail))

    def feed(self, row: Mapping[str, Any]) -> None:
        """Check one stored row: its own hash, its columns against its body, its link to its chain."""
        key = (str(row.get("tenant_id", "")), str(row.get("session_id", "")))
        event_id = str(row.get("event_id", "")) or None
        seq = row.get("seq")
        seq = int(seq) if isinstance(seq, int) else None
        self.report.events += 1
        self.report.tenants.add(key[0])
        try:
            index = int(row["chain_index"])
            stored_hash = str(row["hash"])
            previous = str(row["previous_hash"])
            body_text = str(row["body"])
        except (KeyError, TypeError, ValueError) as exc:
            self.flag("edited", key, None, event_id, seq, f"record lacks a readable chain field ({exc})")
            return
        if _digest(previous, body_text) != stored_hash:
            self.flag("edited", key, index, event_id, seq,
                       "content does not match its stored hash (the record was changed after ingest)")
        else:
            self._check_columns(row, body_text, key, index, event_id, seq)
        self._link(key, index, previous, stored_hash, event_id, seq)
        anchor = self._anchors.get(key)
        if anchor is not None and anchor[0] == index:
            self._anchors_seen.add(key)
            if anchor[1] != stored_hash:
                self.flag("edited", key, index, event_id, seq, "hash differs from the anchored export "
                          f"(was {anchor[1][:16]}..., now {stored_hash[:16]}...)")

    def _check_columns(self, row: Mapping[str, Any], body_text: str, key: tuple[str, str], index: int,
                       event_id: str | None, seq: int | None) -> None:
        try:
            body = json.loads(body_text)
        except ValueError:
            self.flag("edited", key, index, event_id, seq, "hashed body is not JSON")
            return
        if not isinstance(body, dict):
            self.flag("edited", key, index, event_id, seq, "hashed body is not a JSON object")
            return
        wrong: list[str] = []
        for column in _BODY_COLUMNS:
            if column in row and str(row[column] or "") != str(body.get(column) or ""):
                wrong.append(f"{column} is {row[column]!r} but the hashed record says {body.get(column)!r}")
        if body.get("chain_index") != index:
            wrong.append(f"chain_index is {index} but the hashed record says {body.get('chain_index')!r}")
        if str(body.get("previous_hash", "")) != str(row["previous_hash"]):
            wrong.append("previous_hash differs from the hashed record")
        for column in ("occurred_at", "ingested_at"):
            if column in row and not _same_time(row[column], body.get(column)):
                wrong.append(f"{column} is {row[column]!s} but the hashed record says {body.get(column)!r}")
        if "decision" in row:
            metadata = body.get("metadata")
            hashed = metadata.get("authorization_decision") if isinstance(metadata, dict) else None
            if (row["decision"] or None) != (hashed if isinstance(hashed, str) else None):
                wrong.append(f"decision is {row['decision']!r} but the hashed record says {hashed!r}")
        if "violation_id" in row and (row["violation_id"] or None) != (body.get("violation_id") or None):
            wrong.append(f"violation_id is {row['violation_id']!r} but the hashed record says "
                         f"{body.get('violation_id')!r}")
        if wrong:
            self.flag("edited", key, index, event_id, seq, "; ".join(wrong))

    def _link(self, key: tuple[str, str], index: int, previous: str, stored_hash: str, event_id: str | None,
              seq: int | None) -> None:
        chain = self._chains.get(key)
        if chain is None:
            self._chains[key] = _Chain(key[0], key[1], index, previous, index, stored_hash, event_id or "")
            if index != 0 or previous:
                if self.allow_pruned:
                    self._pruned += 1
                else:
                    self.flag("deleted", key, 0, event_id, seq,
                               f"chain starts at position {index}: position(s) 0..{index - 1} are missing "
                               "(deleted; if `thoth-nb db prune` removed them, pass --allow-pruned)")
            return
        expected = chain.head_index + 1
        if index < expected:
            self.flag("inserted", key, index, event_id, seq,
                       f"position {index} is already taken in this chain (its last position was "
                       f"{chain.head_index}): an extra record was inserted")
            return  # keep the genuine chain: its next record still links to the current head
        if index > expected:
            missing = str(expected) if index == expected + 1 else f"{expected}..{index - 1}"
            self.flag("deleted", key, expected, event_id, seq,
                       f"position(s) {missing} missing before this record (after event {chain.head_event_id})")
        elif previous != chain.head_hash:
            self.flag("edited", key, chain.head_index, chain.head_event_id, None,
                       f"record at position {chain.head_index} was replaced or rewritten: the next record "
                       f"(event {event_id}, position {index}) links to a different hash")
        chain.head_index, chain.head_hash, chain.head_event_id = index, stored_hash, event_id or ""
        chain.count += 1

    def finish(self) -> AuditReport:
        for key, (index, _hash, anchored_id) in self._anchors.items():
            if key in self._anchors_seen:
                continue
            chain = self._chains.get(key)
            if chain is None:
                detail = "the whole chain anchored by the export is missing"
            else:
                detail = f"anchored record is missing (the chain now ends at position {chain.head_index})"
            self.flag("deleted", key, index, anchored_id or None, None, detail)
        if self._pruned:
            self.report.notes.append(f"{self._pruned} chain(s) start after position 0 (pruned; accepted by "
                                     "--allow-pruned)")
        self.report.chains = len(self._chains)
        return self.report

    def chain_heads(self) -> list[dict[str, Any]]:
        """Every chain's first and last link, for a bundle manifest or a later `--anchor`."""
        return [{"tenant_id": c.tenant_id, "session_id": c.session_id, "first_index": c.first_index,
                 "first_previous_hash": c.first_previous_hash, "head_index": c.head_index,
                 "head_hash": c.head_hash, "head_event_id": c.head_event_id, "count": c.count}
                for c in self._chains.values()]


def _rows(store: Any, tenant_id: str | None) -> Iterator[dict[str, Any]]:
    for batch in store.iter_event_rows(tenant_id):
        yield from batch


def verify_rows(rows: Iterable[Mapping[str, Any]], *, allow_pruned: bool = False,
                anchors: Iterable[Mapping[str, Any]] = ()) -> AuditReport:
    verifier = ChainVerifier(allow_pruned=allow_pruned, anchors=anchors)
    for row in rows:
        verifier.feed(row)
    return verifier.finish()


def verify_store(store: Any, tenant_id: str | None = None, *, allow_pruned: bool = False,
                 anchors: Iterable[Mapping[str, Any]] = ()) -> AuditReport:
    """Verify every chain of a SQLite or PostgreSQL store (one tenant, or all)."""
    anchors = [a for a in anchors if tenant_id is None or a.get("tenant_id") == tenant_id]
    return verify_rows(_rows(store, tenant_id), allow_pruned=allow_pruned, anchors=anchors)


def _row_json(row: Mapping[str, Any]) -> str:
    from thoth_nb.engine.store import format_ts

    out = {k: (format_ts(v) if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    return json.dumps(out, ensure_ascii=False, sort_keys=True)


def export_bundle(store: Any, out: str | Path, *, tenant_id: str | None = None,
                  source: str = "") -> tuple[dict[str, Any], AuditReport]:
    """Write `events.jsonl` + `manifest.json` to directory `out` (or a zip if `out` ends in `.zip`),
    verifying while writing. Returns (manifest, report); a store that already fails verification is
    still exported (the bundle then shows the same findings) so the evidence is kept."""
    target = Path(out)
    if target.suffix != ".zip" and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty directory; choose a new --out path")
    if target.suffix == ".zip" and target.exists():
        raise FileExistsError(f"{target} exists; choose a new --out path")
    try:
        return _write_bundle(store, target, tenant_id, source)
    except BaseException:
        partial = target.with_name(target.name + ".partial")
        if target.suffix == ".zip":
            partial.unlink(missing_ok=True)
        else:  # leave no directory that looks like a bundle
            for name in (EVENTS_FILE, MANIFEST_FILE):
                (target / name).unlink(missing_ok=True)
        raise


def _write_bundle(store: Any, target: Path, tenant_id: str | None,
                  source: str) -> tuple[dict[str, Any], AuditReport]:
    from thoth_nb.engine.store import format_ts

    verifier = ChainVerifier(allow_pruned=True)
    hasher = hashlib.sha256()

    def write_events(stream: IO[bytes]) -> None:
        for row in _rows(store, tenant_id):
            verifier.feed(row)
            line = (_row_json(row) + "\n").encode()
            hasher.update(line)
            stream.write(line)

    def manifest_text() -> tuple[dict[str, Any], str]:
        manifest = {
            "format": BUNDLE_FORMAT,
            "exported_at": format_ts(),
            "source": source,
            "tenant_id": tenant_id,
            "events": verifier.report.events,
            "events_sha256": hasher.hexdigest(),
            "store_findings": verifier.report.total_findings,
            "chains": sorted(verifier.chain_heads(), key=lambda c: (c["tenant_id"], c["session_id"])),
        }
        return manifest, json.dumps(manifest, indent=2, sort_keys=True) + "\n"

    if target.suffix == ".zip":
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open(EVENTS_FILE, "w", force_zip64=True) as stream:
                write_events(stream)
            report = verifier.finish()
            manifest, text = manifest_text()
            archive.writestr(MANIFEST_FILE, text)
        partial.replace(target)
    else:
        target.mkdir(parents=True, exist_ok=True)
        with (target / EVENTS_FILE).open("wb") as stream:
            write_events(stream)
        report = verifier.finish()
        manifest, text = manifest_text()
        (target / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return manifest, report


def manifest_fingerprint(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical manifest: write it down (or sign it) to pin the bundle."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _open_bundle(path: Path) -> tuple[dict[str, Any], IO[bytes], zipfile.ZipFile | None]:
    if not path.exists():
        raise BundleError(f"no audit bundle at {path}")
    try:
        if path.is_dir():
            manifest_text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
            events: IO[bytes] = (path / EVENTS_FILE).open("rb")
            archive = None
        else:
            archive = zipfile.ZipFile(path)
            manifest_text = archive.read(MANIFEST_FILE).decode("utf-8")
            events = archive.open(EVENTS_FILE)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not an audit bundle (needs {MANIFEST_FILE} and {EVENTS_FILE}): {exc}") from exc
    try:
        manifest = json.loads(manifest_text)
    except ValueError as exc:
        events.close()
        raise BundleError(f"{path}: {MANIFEST_FILE} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        events.close()
        raise BundleError(f"{path}: {MANIFEST_FILE} is not a {BUNDLE_FORMAT} manifest")
    return manifest, events, archive


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a bundle (directory or zip) or a bare manifest.json, e.g. for `--anchor`."""
    target = Path(path)
    if target.is_file() and target.suffix == ".json":
        try:
            manifest = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{target}: cannot read the manifest ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{target} is not a {BUNDLE_FORMAT} manifest")
        return manifest
    manifest, events, archive = _open_bundle(target)
    events.close()
    if archive is not None:
        archive.close()
    return manifest


def verify_bundle(path: str | Path) -> tuple[dict[str, Any], AuditReport]:
    """Verify an exported bundle with no store: every chain, the file checksum, and the manifest's
    counts and chain heads against the events."""
    manifest, events, archive = _open_bundle(Path(path))
    verifier = ChainVerifier(allow_pruned=True)
    hasher = hashlib.sha256()
    try:
        for number, line in enumerate(events, start=1):
            hasher.update(line)
            try:
                row = json.loads(line)
            except ValueError:
                verifier.flag("edited", ("", ""), None, None, None, f"{EVENTS_FILE} line {number} is not JSON")
                continue
            verifier.feed(row if isinstance(row, dict) else {})
    finally:
        events.close()
        if archive is not None:
            archive.close()
    report = verifier.finish()
    flag = verifier.flag
    if hasher.hexdigest() != manifest.get("events_sha256"):
        flag("edited", ("", ""), None, None, None, f"{EVENTS_FILE} SHA-256 does not match the manifest")
    expected_events = int(manifest.get("events") or 0)
    if report.events != expected_events:
        flag("deleted" if report.events < expected_events else "inserted", ("", ""), None, None, None,
             f"bundle holds {report.events} events, the manifest says {expected_events}")
    found = {(c["tenant_id"], c["session_id"]): c for c in verifier.chain_heads()}
    for expected in manifest.get("chains") or []:
        key = (str(expected.get("tenant_id")), str(expected.get("session_id")))
        actual = found.pop(key, None)
        if actual is None:
            flag("deleted", key, None, None, None, "chain listed in the manifest has no events in the bundle")
            continue
        for name in ("first_index", "first_previous_hash", "head_index", "head_hash", "count"):
            if actual[name] != expected.get(name):
                shorter = name in ("head_index", "count") and actual[name] < int(expected.get(name) or 0)
                flag("deleted" if shorter else "edited", key, actual["head_index"], actual["head_event_id"], None,
                     f"{name} is {actual[name]!r}, the manifest says {expected.get(name)!r}")
    for key, actual in found.items():
        flag("inserted", key, actual["first_index"], None, None, "chain not listed in the manifest")
    return manifest, report
