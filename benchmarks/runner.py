"""Run the benchmark groups, print one table, write it as JSON (and optionally as RESULTS.md)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._core import Result, Sizes, load_average

__all__ = ["GROUPS", "format_markdown", "format_table", "run"]

HERE = Path(__file__).resolve().parent
LATEST = HERE / "results" / "latest.json"

Bench = Callable[[Sizes], list[Result]]


def _groups() -> dict[str, list[Bench]]:
    from benchmarks import embedded, emitter, notebook, pg_scale, policy_engine, server, store

    return {
        "embedded": embedded.BENCHES,
        "emitter": emitter.BENCHES,
        "policy": policy_engine.BENCHES,
        "store": store.BENCHES,
        "server": server.BENCHES,
        "postgres": pg_scale.BENCHES,
        "notebook": notebook.BENCHES,
    }


GROUPS = ("embedded", "emitter", "policy", "store", "server", "postgres", "notebook")


def run(sizes: Sizes, only: Sequence[str] = (), log: Callable[[str], None] | None = None) -> list[Result]:
    """Every benchmark of the chosen groups; a benchmark that raises becomes an `error` row, not a crash."""
    results: list[Result] = []
    for group, benches in _groups().items():
        if only and group not in only:
            continue
        for bench in benches:
            name = bench.__name__.removeprefix("bench_")
            if log:
                log(f"… {group}/{name}")
            t0 = time.monotonic()
            try:
                rows = bench(sizes)
            except Exception as exc:
                rows = [Result(group, name, None, "", note=f"{type(exc).__name__}: {exc}", status="error")]
                if log:
                    log(traceback.format_exc())
            if log:
                log(f"  done in {time.monotonic() - t0:.1f} s")
            results.extend(rows)
    return results


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _rows(results: Sequence[Result]) -> list[list[str]]:
    out = []
    for r in results:
        value = f"{_num(r.value)} {r.unit}".strip() if r.value is not None else "n/a"
        baseline = f"{_num(r.baseline)} ({r.baseline_label})" if r.baseline is not None else (r.baseline_label or "—")
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        out.append([r.group, r.figure, value, baseline, ratio, r.target or "—", r.status])
    return out


HEADER = ["group", "figure", "value", "baseline (same run)", "ratio", "target", "result"]


def format_table(results: Sequence[Result]) -> str:
    rows = _rows(results)
    widths = [min(70, max(len(h), *(len(row[i]) for row in rows))) if rows else len(h) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row, r in zip(rows, results, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if r.note:
            lines.append("    " + r.note)
    return "\n".join(lines)


def format_markdown(results: Sequence[Result], meta: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER[1:]) + " |", "|" + "---|" * (len(HEADER) - 1)]
    group = None
    for row, r in zip(_rows(results), results, strict=True):
        if r.group != group:
            group = r.group
            lines.append(f"| **{group}** |" + " |" * (len(HEADER) - 2))
        status = {"pass": "✅ pass", "FAIL": "❌ FAIL"}.get(r.status, r.status)
        cells = [*row[1:6], status]
        if r.note:
            cells[0] += f"<br><sub>{r.note}</sub>"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    head = (f"Measured {meta['when']} on {meta['machine']} (Python {meta['python']}, {meta['cpus']} CPUs), "
            f"`python -m benchmarks{' --smoke' if meta['smoke'] else ''}` in {meta['seconds']:.0f} s; "
            f"1-minute load average {meta['load_average'][0]:g} at the start and {meta['load_average'][1]:g} at the "
            "end (the machine is shared; above the CPU count, wall-clock figures include queueing for a CPU).")
    return head + "\n\n" + "\n".join(lines) + "\n"


def metadata(sizes: Sizes, seconds: float, load_before: float) -> dict[str, Any]:
    return {
        "load_average": [round(load_before, 2), round(load_average(), 2)],
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "smoke": sizes.smoke,
        "seconds": seconds,
        "sizes": {k: getattr(sizes, k) for k in sizes.__dataclass_fields__},
    }


def write_json(results: Sequence[Result], meta: dict[str, Any], path: Path = LATEST) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=2,
                               ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


def add_arguments(parser: Any) -> None:
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes (numbers are noise)")
    parser.add_argument("--only", action="append", choices=GROUPS, default=[],
                        help="run only this group (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help=f"where to write the JSON table (default {LATEST})")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run_cli(args: Any) -> int:
    # no frame keeper behind the figures' backs: benchmarks that store many events would start it and it
    # would take CPU from the next figure (the first-frame figure turns it on where it measures it)
    os.environ.setdefault("THOTH_FRAME_KEEPER", "0")
    sizes = Sizes.tiny() if args.smoke else Sizes.full()
    t0 = time.monotonic()
    load_before = load_average()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    results = run(sizes, args.only, log)
    meta = metadata(sizes, time.monotonic() - t0, load_before)
    print(format_table(results))
    print(f"\nload average {meta['load_average'][0]:g} → {meta['load_average'][1]:g} on {meta['cpus']} CPUs; "
          f"{meta['seconds']:.0f} s")
    path = write_json(results, meta, args.json or (LATEST if not args.smoke else LATEST.with_name("smoke.json")))
    print(f"\nwritten: {path}")
    if args.markdown:
        args.markdown.write_text(format_markdown(results, meta), encoding="utf-8")
        print(f"written: {args.markdown}")
    errors = [r for r in results if r.status == "error"]
    return 1 if errors else 0
