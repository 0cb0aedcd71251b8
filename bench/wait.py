"""What ``syncline wait`` costs (its catalogue check), and how long it takes after a DDL.

``wait`` first checks that the capture has acted on the catalogue as it is now (a DDL that
rewrote rows, dropped or renamed is not in the stream: the capture learns of it from its
poll, once a second), then waits for the views. Measured on a private PostgreSQL with 200
followed tables of 8 columns, one ``syncline run`` feeding a PostgreSQL replica, in the
same process and rounds (rotated order), each sample after a committed one-row write:

* ``position only``: the source's WAL position read over a new connection, then the views
  waited for: what ``GET /wait`` did before the catalogue check (the baseline);
* ``wait``: :func:`~syncline.sources.postgres.admin.followed_position` (the catalogue
  check, the tables not followed yet, then the position) over a new connection, then the
  views waited for: what ``syncline wait`` does;
* ``wait, pooled connection``: the same over a connection borrowed from a pool of four
  (:class:`~syncline.sources.postgres.admin.SourceSessions`): what ``GET /wait`` does;
* ``wait after a DDL``: an ``ALTER TABLE … ALTER COLUMN … TYPE … USING`` that changes a
  column's type (int to bigint and back, per table) and rewrites a 100-row table, then ``wait``
  (a new connection, as ``syncline wait``): bounded by the capture's poll interval and the table's copy.

Every sample's row must be in the replica when the wait returns, and every rewritten table
must hold the rewritten values (a miss fails the benchmark). Per variant, the position
step alone (what the check adds) and the whole wait (which includes the replica applying the
write, seen by polling every 20 ms): medians and p99, with each round's median for the
spread. Written to ``docs/benchmarks-wait.md``::

    .venv/bin/python bench/wait.py                    # 3 rounds of 200 samples (20 DDL) per variant
    .venv/bin/python bench/wait.py --rounds 1 --samples 50 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from lag import first_copy_done
from run import BENCH_SETTINGS, Syncline, end_position, machine, rotated, say
from syncline.runtime.status import wait_caught_up
from syncline.sources.postgres.admin import SourceSessions, followed_position, source_position
from syncline.testing.pgcluster import PgCluster

TABLES = 200
Sample = tuple[float, float]
"""One sample: the position step and the whole wait, in seconds."""
OUT: list[str] = []


def out(line: str) -> None:
    say(line)
    OUT.append(line)


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def schema() -> str:
    cols = ", ".join(f"c{i} int" for i in range(6))
    return ";".join(
        [f"CREATE TABLE t{n} (id int PRIMARY KEY, v text, {cols})" for n in range(TABLES)]
        + ["CREATE TABLE probe (id int PRIMARY KEY, at timestamptz)"]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=200, help="per variant and round (a tenth with DDL)")
    ap.add_argument("--output", default=str(Path(__file__).parent.parent / "docs" / "benchmarks-wait.md"))
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    # synchronous_commit on: off, the server hands a commit to its walsenders up to
    # wal_writer_delay (200 ms) later, which every wait would include
    cluster = PgCluster(settings={**BENCH_SETTINGS, "synchronous_commit": "on"})
    got: dict[str, list[list[Sample]]] = {
        "position only": [],
        "wait": [],
        "wait, pooled connection": [],
        "wait after a DDL": [],
    }
    failures: list[str] = []
    info: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="syncline-bench-wait-") as tmp:
        try:
            cluster.init()
            cluster.start()
            info = machine(cluster)
            cluster.psql("CREATE DATABASE src")
            cluster.psql("CREATE DATABASE replica")
            src = cluster.dsn("src")
            with psycopg.connect(src, autocommit=True) as conn:
                conn.execute(schema())
                for n in range(0, TABLES, 10):  # ten tables the DDL variant rewrites, 100 rows each
                    conn.execute(
                        f"INSERT INTO t{n} (id, v) SELECT g, 'v' || g FROM generate_series(1, 100) g"
                    )
            s = Syncline(
                Path(tmp) / "s", src, "bench_wait", replica_dsn=cluster.dsn("replica"), tables=("public.*",)
            )
            s.start()
            pool = SourceSessions(s.cfg, pool_size=4)  # as the HTTP server's
            try:
                s.wait(end_position(src), 300)
                first_copy_done(s, 300)  # else the first waits wait for the first copies
                names = s.names
                probe = [0]
                rewrites = [0]
                types: dict[str, str] = {}

                def write(conn: psycopg.Connection[object]) -> int:
                    probe[0] += 1
                    conn.execute("INSERT INTO probe VALUES (%s, now())", (probe[0],))
                    return probe[0]

                def applied(i: int) -> None:
                    with psycopg.connect(cluster.dsn("replica")) as r:
                        if r.execute("SELECT count(*) FROM public.probe WHERE id = %s", (i,)).fetchone() != (
                            1,
                        ):
                            failures.append(f"probe row {i} not in the replica when wait returned")

                def timed(position: Callable[[], int]) -> Callable[[psycopg.Connection[object]], Sample]:
                    """A sample: one write, then ``position`` and the views waited for."""

                    def sample(conn: psycopg.Connection[object]) -> Sample:
                        i = write(conn)
                        t0 = time.perf_counter()
                        lsn = position()
                        t1 = time.perf_counter()
                        if not wait_caught_up(s.cfg, lsn, names, 60):
                            failures.append("a wait timed out")
                        took = time.perf_counter() - t0
                        applied(i)
                        return t1 - t0, took

                    return sample

                baseline = timed(lambda: source_position(s.cfg))
                checked = timed(lambda: followed_position(s.cfg, time.monotonic() + 60))
                pooled = timed(lambda: followed_position(s.cfg, time.monotonic() + 60, sessions=pool))

                def after_ddl(conn: psycopg.Connection[object]) -> Sample:
                    table = f"t{(rewrites[0] % (TABLES // 10)) * 10}"
                    rewrites[0] += 1
                    # a type change (the capture cannot tell a same-type USING from nothing)
                    typ = types[table] = "int" if types.get(table, "int") == "bigint" else "bigint"
                    conn.execute(
                        f"ALTER TABLE {table} ALTER COLUMN c0 TYPE {typ} USING id * 1000 + {rewrites[0]}"
                    )
                    t0 = time.perf_counter()
                    lsn = followed_position(s.cfg, time.monotonic() + 60)
                    t1 = time.perf_counter()
                    ok = wait_caught_up(s.cfg, lsn, names, 60)
                    took = time.perf_counter() - t0
                    want = f"sum of c0 {sum(i * 1000 + rewrites[0] for i in range(1, 101))}"
                    with psycopg.connect(cluster.dsn("replica")) as r:
                        row = r.execute(f"SELECT sum(c0) FROM public.{table}").fetchone()
                    if not ok or row is None or f"sum of c0 {row[0]}" != want:
                        failures.append(f"after the rewrite of {table} the replica held {row} ({want})")
                    return t1 - t0, took

                variants: dict[str, tuple[Callable[[psycopg.Connection[object]], Sample], int]] = {
                    "position only": (baseline, args.samples),
                    "wait": (checked, args.samples),
                    "wait, pooled connection": (pooled, args.samples),
                    "wait after a DDL": (after_ddl, max(1, args.samples // 10)),
                }
                with psycopg.connect(src, autocommit=True) as conn:
                    for r in range(args.rounds):
                        for k in rotated(list(variants), r):
                            fn, n = variants[k]
                            got[k].append([fn(conn) for _ in range(n)])
                        say(
                            f"round {r + 1}: "
                            + ", ".join(
                                f"{k} {statistics.median(t for _, t in v[-1]) * 1e3:.1f} ms"
                                for k, v in got.items()
                            )
                        )
            finally:
                pool.close()
                s.stop()
        finally:
            cluster.cleanup()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out(f"wait, {TABLES} followed tables, one PostgreSQL replica view ({args.rounds} rounds, rotated)")
    out("")
    out("| variant | samples | position step: median, p99 | whole wait: median, p99 | round medians |")
    out("|---|---:|---:|---:|---|")
    for k, rounds in got.items():
        steps = [st for r in rounds for st, _ in r]
        whole = [t for r in rounds for _, t in r]
        meds = ", ".join(f"{statistics.median(t for _, t in r) * 1e3:.1f}" for r in rounds)
        step = f"{statistics.median(steps) * 1e3:.1f}, {pct(steps, 0.99) * 1e3:.1f} ms"
        out(
            f"| {k} | {len(whole)} | {step} | {statistics.median(whole) * 1e3:.1f}, "
            f"{pct(whole, 0.99) * 1e3:.1f} ms | {meds} ms |"
        )
    base = statistics.median([st for r in got["position only"] for st, _ in r])
    now = statistics.median([st for r in got["wait"] for st, _ in r])
    out("")
    pooled_now = statistics.median([st for r in got["wait, pooled connection"] for st, _ in r])
    out(f"position step, wait / position only (medians): {now / base:.2f} ({(now - base) * 1e3:+.1f} ms)")
    out(
        f"position step, pooled wait / position only (medians): {pooled_now / base:.2f} "
        f"({(pooled_now - base) * 1e3:+.1f} ms)"
    )
    out(
        "check: "
        + (
            "every row applied and every rewrite in the replica when wait returned"
            if not failures
            else f"FAILED: {failures[:5]}"
        )
    )
    if not args.no_report:
        command = " ".join([".venv/bin/python", "bench/wait.py", *sys.argv[1:]])
        head = [
            "# What `wait` costs",
            "",
            f"Written by `bench/wait.py` on {stamp}; command: `{command}`.",
            "",
        ]
        head += [f"Machine: {', '.join(f'{k} {v}' for k, v in info.items())}.", ""]
        Path(args.output).write_text("\n".join([*head, *OUT, ""]))
        print(f"wrote {args.output}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
