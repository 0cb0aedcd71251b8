"""Micro-benchmarks behind two figures in the code's documentation (not timed tests).

* ``documents``: building the tantivy view's JSON documents for the benchmark's table
  (``id int`` key, ``v text``, ``n int``): the plain loop over the columns
  (:func:`~syncline.views.tantivy.document.document_reference`) against the builder
  generated per shape (:func:`~syncline.views.tantivy.document.compile_document`);
  every document of both is compared.
* ``compactor``: the compacted log's upsert (``INSERT OR REPLACE INTO rows``) of 250,000
  random-key updates into a 250,000-row table, in transactions of 25,000, with the ``rows``
  table as a rowid table or ``WITHOUT ROWID`` and SQLite's default 2 MB page cache or the
  compactor's; the tables' contents are compared.

Each variant runs ``--rounds`` times in rotated order; medians and ranges are printed::

    .venv/bin/python bench/micro.py              # both
    .venv/bin/python bench/micro.py --only documents
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from syncline.core.events import Column, Relation
from syncline.log.embedded.compact import CACHE_KIB, SCHEMA
from syncline.views.tantivy.document import document_reference
from syncline.views.tantivy.view import _plan

Run = Callable[[], tuple[float, str]]
"""One measurement: (seconds per unit of work, a digest of what it produced)."""


def documents(n: int) -> dict[str, Run]:
    cols = (
        Column("id", 23, -1, "integer", "N", base="integer", in_identity=True),
        Column("v", 25, -1, "text", "S", base="text"),
        Column("n", 23, -1, "integer", "N", base="integer"),
    )
    plan = _plan(Relation(16384, "public", "bench", "d", cols, ("id",)), ("v",))
    rows = [(str(i), f"value {i} some text", str(i % 7)) for i in range(n)]

    def loop() -> tuple[float, str]:
        t = time.perf_counter()
        out = [document_reference(plan.shape, r) for r in rows]
        return (time.perf_counter() - t) / n, _digest(d[1] for d in out)

    def generated() -> tuple[float, str]:
        build = plan.document
        t = time.perf_counter()
        out = [build(r) for r in rows]
        return (time.perf_counter() - t) / n, _digest(d[1] for d in out)

    return {"plain loop": loop, "generated builder": generated}


def compactor(n: int, batch: int) -> dict[str, Run]:
    def variant(without_rowid: bool, cache_kib: int) -> Run:
        def run() -> tuple[float, str]:
            with tempfile.TemporaryDirectory() as d:
                conn = sqlite3.connect(str(Path(d) / "c.db"), isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA cache_size=-{cache_kib}")
                conn.executescript(SCHEMA if without_rowid else SCHEMA.replace(" WITHOUT ROWID", ""))
                sql = "INSERT OR REPLACE INTO rows (relid, key, relseq, row, seq) VALUES (?,?,?,?,?)"

                def upsert(seq: int, ids: list[int], k: int) -> None:
                    conn.execute("BEGIN")
                    conn.executemany(
                        sql, [(16384, b"k%d" % i, 1, b"value %d some text %d" % (i, k), seq) for i in ids]
                    )
                    conn.execute("COMMIT")

                for s in range(0, n, batch):
                    upsert(s, list(range(s, min(n, s + batch))), 0)
                rng = random.Random(1)
                t = time.process_time()
                for s in range(0, n, batch):
                    upsert(n + s, [rng.randrange(n) for _ in range(batch)], s)
                took = time.process_time() - t
                digest = _digest(
                    repr(r) for r in conn.execute("SELECT relid, key, row, seq FROM rows ORDER BY relid, key")
                )
                conn.close()
                return took, digest

        return run

    return {
        "rowid table, 2 MB cache": variant(False, 2000),
        f"rowid table, {CACHE_KIB // 1024} MB cache": variant(False, CACHE_KIB),
        "WITHOUT ROWID, 2 MB cache": variant(True, 2000),
        f"WITHOUT ROWID, {CACHE_KIB // 1024} MB cache (the compactor)": variant(True, CACHE_KIB),
    }


def _digest(parts: Iterable[object]) -> str:
    h = hashlib.md5()  # a content check, not security
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\n")
    return h.hexdigest()[:12]


OUT: list[str] = []
"""Every printed line, for the report."""


def say(line: str) -> None:
    print(line)
    OUT.append(line)


def measure(title: str, unit: str, scale: float, variants: dict[str, Run], rounds: int) -> bool:
    names = list(variants)
    got: dict[str, list[float]] = {k: [] for k in names}
    digests: set[str] = set()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            took, digest = variants[k]()
            got[k].append(took * scale)
            digests.add(digest)
    say(f"\n{title} ({rounds} rounds, rotated; {unit}: median, range)")
    for k in names:
        v = got[k]
        say(f"  {k:<48} {statistics.median(v):8.2f}   {min(v):.2f} to {max(v):.2f}")
    same = len(digests) == 1
    say("  check: every variant produced the same content" if same else "  check FAILED: contents differ")
    return same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="documents,compactor")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default=str(Path(__file__).parent.parent / "docs" / "benchmarks-micro.md"))
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    only = args.only.split(",")
    ok = True
    if "documents" in only:
        ok &= measure("tantivy documents, 200,000 rows", "µs a row", 1e6, documents(200_000), args.rounds)
    if "compactor" in only:
        ok &= measure(
            "compacted log, 250,000 random-key updates", "CPU s", 1.0, compactor(250_000, 25_000), args.rounds
        )
    if not args.no_report:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = " ".join([".venv/bin/python", "bench/micro.py", *sys.argv[1:]])
        head = ["# Micro-benchmarks", "", f"Written by `bench/micro.py` on {stamp}; command: `{command}`."]
        head.append("")
        Path(args.output).write_text("\n".join([*head, "```", *[x.lstrip("\n") for x in OUT], "```", ""]))
        print(f"wrote {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
