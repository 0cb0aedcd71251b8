"""Snapshot benchmark (issue 10): copying a ``--rows`` table into the replica and DuckDB views.

Per round, in rotated order, on one private cluster and the same table
``bench(id int primary key, v text, n int)``:

  (a) ``COPY bench TO STDOUT`` by ``psql`` to /dev/null: what the server can hand out;
  (b) syncline's first start: the slot first, then the table copied by watermark chunks
      (``copy_parallel`` at once) while the stream runs, until both views hold every row;
  (c) the watermark copy a table gets when it appears (a rename) while ``run`` streams,
      until both views hold every row. Meanwhile a probe commits one row into a small
      table every 50 ms and waits until the replica shows it: the live stream's lag during
      the copy, against the same probe for the 5 s before it (idle).

Rates are rows per second of the whole table; ratios are taken per round against (a), then
the median over rounds. Every syncline run's views are checked (count, sum and md5 of every
row, and the probe table's rows) against the source: a mismatch fails the benchmark.
Written to ``docs/benchmarks-snapshot.md``.

    .venv/bin/python bench/snapshot.py                  # 2,000,000 rows, 3 rounds
    .venv/bin/python bench/snapshot.py --rows 100000 --rounds 3 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from run import (
    BENCH_SETTINGS,
    PUB,
    ROOT,
    Syncline,
    drop_slot,
    duck_checksum,
    end_position,
    pg_checksum,
    quiet,
    rotated,
    say,
    sql,
)
from syncline.runtime.status import views_caught_up
from syncline.testing.pgcluster import PgCluster, kill_group

KINDS = {
    "a": "(a) `COPY bench TO STDOUT` (psql → /dev/null)",
    "b": "(b) syncline first snapshot → replica + DuckDB",
    "c": "(c) syncline watermark copy of a table that appears → replica + DuckDB",
}


def fill(dsn: str, rows: int, name: str = "bench") -> None:
    sql(dsn, f"CREATE TABLE {name} (id int PRIMARY KEY, v text, n int)")
    sql(dsn, f"INSERT INTO {name} SELECT g, md5(g::text), g %% 1000 FROM generate_series(1, {rows}) g")
    sql(dsn, f"VACUUM ANALYZE {name}")


def probe(src: str, rdsn: str, stop: threading.Event, lags: list[float]) -> None:
    """Commit one row, wait until the replica shows it, record the time; every 50 ms."""
    with psycopg.connect(src, autocommit=True) as s, psycopg.connect(rdsn, autocommit=True) as r:
        row = s.execute("SELECT coalesce(max(id), 0) FROM probe").fetchone()
        i = int(row[0]) if row else 0
        while not stop.is_set():
            i += 1
            s.execute("INSERT INTO probe VALUES (%s)", (i,))
            t0 = time.monotonic()
            while not r.execute("SELECT 1 FROM public.probe WHERE id = %s", (i,)).fetchone():
                if time.monotonic() - t0 > 300:
                    raise SystemExit(f"probe row {i} did not reach the replica in 300 s")
                time.sleep(0.002)
            lags.append(time.monotonic() - t0)
            time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def raw_copy(cluster: PgCluster, dsn: str) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [str(cluster.bindir / "psql"), "-X", "-q", "-d", dsn, "-c", "COPY bench TO STDOUT"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.monotonic() - t0


def syncline_copy(
    cluster: PgCluster,
    work: Path,
    r: int,
    kind: str,
    rows: int,
    want: tuple[str, ...],
    lags: dict[str, list[float]],
) -> float:
    db, rep = f"snap_{kind}{r}", f"snaprep_{kind}{r}"
    for d in (db, rep):
        sql(cluster.dsn(), f"DROP DATABASE IF EXISTS {d}")
        sql(cluster.dsn(), f"CREATE DATABASE {d}")
    src, rdsn = cluster.dsn(db), cluster.dsn(rep)
    if kind == "b":
        fill(src, rows)
    else:
        fill(src, rows, "staging")
        sql(src, "CREATE TABLE probe (id int PRIMARY KEY)")
    sql(src, f"DROP PUBLICATION IF EXISTS {PUB}")
    s = Syncline(
        work / f"{kind}{r}",
        src,
        f"snap_{kind}{r}",
        replica_dsn=rdsn,
        duckdb_path=work / f"{kind}{r}.duckdb",
        tables=("public.bench", "public.probe"),
    )
    try:
        if kind == "b":
            t0 = time.monotonic()
            s.start()
        else:
            s.start()
            deadline = time.monotonic() + 120
            while "streaming from slot" not in s.output(100_000):
                assert time.monotonic() < deadline, s.output()
                time.sleep(0.05)
            while "copy of public.probe done" not in s.output(100_000):  # the probe table is in
                assert time.monotonic() < deadline, s.output()
                time.sleep(0.05)
            idle: list[float] = []
            stop = threading.Event()
            t = threading.Thread(target=probe, args=(src, rdsn, stop, idle))
            t.start()
            time.sleep(5)
            stop.set()
            t.join()
            lags["idle"] += idle
            stop = threading.Event()
            during: list[float] = []
            t = threading.Thread(target=probe, args=(src, rdsn, stop, during))
            t0 = time.monotonic()
            sql(src, "ALTER TABLE staging RENAME TO bench")
            t.start()
        try:
            target = None  # one position once the copy is logged: the probe keeps writing
            while True:
                time.sleep(0.05)
                if "copy of public.bench done" not in s.output(100_000):
                    continue
                target = target or end_position(src)
                if views_caught_up(s.cfg, target, s.names):
                    break
                assert s.proc is not None and s.proc.poll() is None, s.output()
            took = time.monotonic() - t0
        finally:
            if kind == "c":
                stop.set()
                t.join()
                lags["copy"] += during
        if kind == "c":
            deadline = time.monotonic() + 60
            while not views_caught_up(s.cfg, end_position(src), s.names):
                assert time.monotonic() < deadline, s.output()
                time.sleep(0.1)
            probes = sql(src, "SELECT count(*), coalesce(sum(id), 0) FROM probe")
            got = sql(rdsn, "SELECT count(*), coalesce(sum(id), 0) FROM public.probe")
            if probes != got:
                raise SystemExit(f"content check failed (probe, round {r}): replica {got}, source {probes}")
    finally:
        kill_group(s.proc)
        drop_slot(src, s.slot)
        if os.environ.get("SNAPBENCH_DEBUG"):
            print(s.output())
    got_pg = pg_checksum(rdsn)
    got_duck = duck_checksum(work / f"{kind}{r}.duckdb")
    if got_pg != want or got_duck != want:
        raise SystemExit(
            f"content check failed ({kind}, round {r}): replica {got_pg}, DuckDB {got_duck}, source {want}"
        )
    for d in (db, rep):
        sql(cluster.dsn(), f"DROP DATABASE {d}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--kinds", default="abc", help="which copies to run (a report needs all three)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncline-snapbench-"))
    cluster = PgCluster(settings=BENCH_SETTINGS)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    lags: dict[str, list[float]] = {"idle": [], "copy": []}
    try:
        cluster.init()
        cluster.start()
        sql(cluster.dsn(), "CREATE DATABASE snapsrc")
        src = cluster.dsn("snapsrc")
        fill(src, args.rows)
        want = pg_checksum(src)
        for r in range(args.rounds):
            for kind in rotated([k for k in KINDS if k in args.kinds], r):
                quiet(args, KINDS[kind])
                t = (
                    raw_copy(cluster, src)
                    if kind == "a"
                    else syncline_copy(cluster, work, r, kind, args.rows, want, lags)
                )
                times[kind].append(t)
                say(f"round {r + 1}: {KINDS[kind]}: {args.rows / t:,.0f} rows/s ({t:.1f} s)")
    finally:
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    if set(args.kinds) != set(KINDS):
        print("a partial run (--kinds): no report")
        return 0
    lines = [
        "# Snapshot benchmark",
        "",
        f"Written by `bench/snapshot.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{args.rounds} rounds of a {args.rows:,}-row table `bench(id int primary key, v text, n int)`, "
        "consumers in rotated order, every syncline run's replica and DuckDB checked against the source "
        "(all equal).",
        "",
        "| copy | rows/s (median) | range | vs (a), per round (median, range) |",
        "|---|---:|---:|---:|",
    ]
    for kind, label in KINDS.items():
        rates = [args.rows / t for t in times[kind]]
        ratios = [times["a"][i] / t for i, t in enumerate(times[kind])]
        lines.append(
            f"| {label} | {statistics.median(rates):,.0f} | {min(rates):,.0f} to {max(rates):,.0f} | "
            f"{100 * statistics.median(ratios):.1f} % "
            f"({100 * min(ratios):.0f} to {100 * max(ratios):.0f} %) |"
        )
    lines += [
        "",
        "Goal (issue 10): a copy into DuckDB and the replica at ≥ 60 % of raw COPY. syncline's time "
        "runs until both views hold every row (capture, log, and both views applying).",
        "",
        "## The live stream during a copy",
        "",
        "A probe commits one row every 50 ms into a small followed table and waits until the replica "
        "view shows it (commit → visible in the replica), during (c) and for the 5 s before it.",
        "",
        "| probe | samples | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("idle", "idle (5 s before the copy)"), ("copy", "during the watermark copy")):
        v = lags[name]
        lines.append(
            f"| {label} | {len(v)} | {1000 * pct(v, 0.5):.0f} ms | {1000 * pct(v, 0.99):.0f} ms | "
            f"{1000 * max(v):.0f} ms |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_report:
        (ROOT / "docs" / "benchmarks-snapshot.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
