"""Decoding a log record: framed items parsed in Python (what every reader did before
records were packed) against a packed record read by msgspec, and what packing costs the
writer. Pure CPU, no services: ``--rows`` rows of ``bench(id int, v text, n int)`` per
record (inserts, and updates with their old key), ``--rounds`` rounds, the three
measurements in rotated order, medians and ranges in µs per row. Each round checks that the
packed record decodes to exactly the framed one's items (a difference fails the bench).
Written to ``docs/benchmarks-records.md``.

    .venv/bin/python bench/records.py
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from run import ROOT, rotated
from syncline.core.records import decode_items, encode_insert, encode_update, frame, pack_record


def items(rows: int) -> list[bytes]:
    out = []
    for i in range(rows):
        row = (str(i), hashlib.md5(str(i).encode()).hexdigest(), str(i % 7))
        out.append(
            encode_insert(16384, row) if i % 2 else encode_update(16384, row, (str(i), None, None), b"K")
        )
    return out


def per_row(f: Callable[[], object], rows: int, seconds: float = 1.0) -> float:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f()
        n += 1
    return (time.perf_counter() - t0) / n / rows * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000, help="rows per record")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", default=str(ROOT / "docs" / "benchmarks-records.md"))
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    msgs = items(args.rows)
    framed, packed = frame(msgs), pack_record(msgs)
    runs: dict[str, Callable[[], object]] = {
        "framed items decoded in Python (each reader, before)": lambda: list(decode_items(framed, {})),
        "packed record decoded by msgspec (each reader, now)": lambda: list(decode_items(packed, {})),
        "packing the record (the writer, once)": lambda: pack_record(msgs),
    }
    got: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        if list(decode_items(packed, {})) != list(decode_items(framed, {})):
            print("FAILED: the packed record decodes to other items than the framed one")
            return 1
        for k in rotated(list(runs), r):
            got[k].append(per_row(runs[k], args.rows))
    command = " ".join([".venv/bin/python", "bench/records.py", *sys.argv[1:]])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Decoding a log record",
        "",
        f"Written by `bench/records.py` on {date}; command: `{command}`.",
        f"{args.rounds} rounds, in rotated order; a record of {args.rows:,} rows (half inserts, half"
        " updates with their old key) of `bench(id int, v text, n int)`; every round checked that the"
        " packed record decodes to the framed one's items (equal).",
        "",
        "| what | µs per row (median) | range |",
        "|---|---:|---:|",
    ]
    for k, v in got.items():
        lines.append(f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} to {max(v):.2f} |")
    before, now = (statistics.median(got[k]) for k in list(runs)[:2])
    lines += [
        "",
        f"A reader decodes a packed record {before / now:.1f} times faster than the framed items.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_report:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
