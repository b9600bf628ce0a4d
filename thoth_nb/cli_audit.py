"""`thoth-nb audit verify | export`: check the event store's hash chains, or bundle them for elsewhere.

Exit codes: 0 intact, 1 tampering found (each finding printed with where it is), 2 usage error.
Kept out of cli.py so the CLI imports nothing it does not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_audit_commands"]

_SHOWN = 50  # findings printed in text mode; --json prints up to audit.MAX_FINDINGS


def _fail(message: str) -> int:
    print(f"thoth-nb: {message}", file=sys.stderr)
    return 2


def _print_report(report: Any, what: str, as_json: bool, extra: dict[str, Any] | None = None) -> int:
    if as_json:
        print(json.dumps({**report.to_dict(), **(extra or {})}, indent=2))
        return 0 if report.ok else 1
    tenants = len(report.tenants)
    summary = f"{report.events} events in {report.chains} chains of {tenants} tenant{'s' * (tenants != 1)}"
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"{what}: intact ({summary})")
        return 0
    print(f"{what}: TAMPERED: {report.total_findings} finding(s) in {summary}")
    for finding in report.findings[:_SHOWN]:
        print(f"  {finding}")
    if report.total_findings > _SHOWN:
        print(f"  ... and {report.total_findings - _SHOWN} more (--json lists up to 1000)")
    return 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from thoth_nb._exceptions import ThothConfigError
    from thoth_nb.engine.audit import BundleError, load_manifest, manifest_fingerprint, verify_bundle, verify_store

    if args.bundle is not None:
        if args.db or args.anchor or args.tenant:
            return _fail("--bundle verifies a whole bundle on its own; drop --db/--anchor/--tenant")
        try:
            manifest, report = verify_bundle(args.bundle)
        except BundleError as exc:
            return _fail(str(exc))
        fingerprint = manifest_fingerprint(manifest)
        if not args.json:
            print(f"manifest fingerprint: {fingerprint}")
        return _print_report(report, str(args.bundle), args.json, {"manifest_fingerprint": fingerprint})
    anchors: list[dict[str, Any]] = []
    if args.anchor is not None:
        try:
            anchors = list(load_manifest(args.anchor).get("chains") or [])
        except BundleError as exc:
            return _fail(str(exc))
    from thoth_nb.cli_db import open_existing_store

    try:
        store = open_existing_store(args.db)
    except ThothConfigError as exc:
        return _fail(str(exc))
    try:
        report = verify_store(store, args.tenant, allow_pruned=args.allow_pruned, anchors=anchors)
    finally:
        store.close()
    label = str(getattr(store, "path", None) or "store")
    return _print_report(report, label + (f" tenant {args.tenant!r}" if args.tenant else ""), args.json)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from thoth_nb._exceptions import ThothConfigError
    from thoth_nb.cli_db import open_existing_store
    from thoth_nb.engine.audit import export_bundle, manifest_fingerprint

    try:
        store = open_existing_store(args.db)
    except ThothConfigError as exc:
        return _fail(str(exc))
    try:
        manifest, report = export_bundle(store, args.out, tenant_id=args.tenant,
                                         source=str(getattr(store, "path", "") or ""))
    except FileExistsError as exc:
        return _fail(str(exc))
    except OSError as exc:  # disk full, permissions: nothing half-written is left as a bundle
        return _fail(f"could not write the bundle to {args.out}: {exc}")
    finally:
        store.close()
    print(f"exported {manifest['events']} events in {len(manifest['chains'])} chains to {args.out}")
    print(f"manifest fingerprint: {manifest_fingerprint(manifest)} (keep it elsewhere to pin this bundle)")
    if not report.ok:
        print(f"warning: the store already fails verification ({report.total_findings} finding(s)); "
              "the bundle keeps the evidence: run `thoth-nb audit verify` for the list", file=sys.stderr)
        return 1
    return 0


def add_audit_commands(subparsers: Any) -> None:
    """Register `audit verify|export` on an argparse subparsers object; each sets `fn`."""
    audit = subparsers.add_parser("audit", help="tamper evidence: verify the event hash chains, export a bundle")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    db_help = "a SQLite path or postgresql:// URL (default: THOTH_DATABASE_URL, else $THOTH_HOME/thoth.db)"

    verify = asub.add_parser("verify", help="detect edited, inserted or deleted events and say where")
    verify.add_argument("--db", help=db_help)
    verify.add_argument("--tenant", help="only this tenant's chains (default: all)")
    verify.add_argument("--bundle", type=Path, help="verify an exported bundle (directory or .zip) instead of a store")
    verify.add_argument("--anchor", type=Path, metavar="MANIFEST",
                        help="an earlier export's manifest.json (or bundle): its chain heads must still be present")
    verify.add_argument("--allow-pruned", action="store_true",
                        help="accept chains starting after position 0 (records removed by `thoth-nb db prune`)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(fn=cmd_audit_verify)

    export = asub.add_parser("export", help="write events + a chain manifest, verifiable without the store")
    export.add_argument("--out", required=True, type=Path, metavar="DIR_OR_ZIP",
                        help="a new directory, or a file ending in .zip")
    export.add_argument("--tenant", help="only this tenant (default: all)")
    export.add_argument("--db", help=db_help)
    export.set_defaults(fn=cmd_audit_export)
