"""DuckLake benchmark (issue 14): what a DuckLake view's files weigh after ``--updates`` row
updates, without maintenance and with it, and the rate the view applied them at.

Per round, in rotated order, on one private cluster and a fresh source database each time:
a ``--rows``-row table ``bench(id int primary key, v text, n int)`` is copied into the lake
by the first start; then ``--updates`` single-row UPDATEs (100 per transaction, every row
updated in turn) run while ``syncline run`` applies them:

  (n) no maintenance (``maintenance_interval`` longer than the run): every batch's files and
      snapshots stay;
  (m) maintenance every ``--interval`` seconds with ``retention`` of the same length: rows
      flushed into Parquet, snapshots past retention expired, small files merged, files no
      snapshot needs deleted.

After the view has applied everything, the script waits twice ``--interval`` seconds and
commits one more update, so that (m) runs its maintenance once more over the whole history,
then measures the catalog (SQLite) and the data directory on disk, the Parquet files and the
snapshots the lake retains. Every run's lake is checked (count, sum and md5 of every row)
against the source: a mismatch fails the benchmark. Written to ``docs/benchmarks-lake.md``.

    .venv/bin/python bench/lake.py                        # 100,000 rows, 1,000,000 updates, 3 rounds
    .venv/bin/python bench/lake.py --rows 10000 --updates 50000 --rounds 1 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from run import (
    BENCH_SETTINGS,
    PROCEDURES,
    ROOT,
    TABLE_DDL,
    Syncline,
    drop_slot,
    end_position,
    lake_checksum,
    pg_checksum,
    quiet,
    rotated,
    say,
    sql,
)
from syncline.config import load_config
from syncline.testing.pgcluster import PgCluster

UPDATES = """
CREATE PROCEDURE lake_update(total int, nrows int, batch int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..total LOOP
    UPDATE bench SET n = n + 1 WHERE id = (i - 1) % nrows + 1;
    IF i % batch = 0 THEN COMMIT; END IF;
  END LOOP;
  COMMIT;
END $$;
"""
"""``total`` single-row updates over the ``nrows`` rows in turn, ``batch`` per transaction."""

KINDS = {
    "n": "(n) no maintenance",
    "m": "(m) maintenance",
}
MB = 1024 * 1024


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, Parquet files) under ``path``."""
    total = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            files += p.suffix == ".parquet"
    return total, files


def one_run(cluster: PgCluster, work: Path, r: int, kind: str, args: argparse.Namespace) -> dict[str, float]:
    db = f"lake_{kind}{r}"
    sql(cluster.dsn(), f"DROP DATABASE IF EXISTS {db}")
    sql(cluster.dsn(), f"CREATE DATABASE {db}")
    src = cluster.dsn(db)
    cluster.psql(TABLE_DDL, db)
    cluster.psql(PROCEDURES, db)
    cluster.psql(UPDATES, db)
    sql(src, "CALL bench_insert(%s, 1000)", (args.rows,))
    lake_path = work / f"{kind}{r}" / "lake"
    s = Syncline(work / f"{kind}{r}", src, f"lake_{kind}{r}", lake_path=lake_path)
    interval = args.interval if kind == "m" else 10 * 86400
    with s.config_path.open("a") as f:  # the lake's section is the config's last
        f.write(f"maintenance_interval = {interval}\nretention = {interval}\n")
    s.cfg = load_config(s.config_path)
    try:
        s.start()
        s.wait(end_position(src), args.timeout)  # the first copy
        t0 = time.monotonic()
        sql(src, "CALL lake_update(%s, %s, 100)", (args.updates, args.rows))
        s.wait(end_position(src), args.timeout)
        took = time.monotonic() - t0
        time.sleep(2 * args.interval)
        done = s.output(1_000_000).count("lake maintenance done")
        sql(src, "UPDATE bench SET n = n + 1 WHERE id = 1")  # one more batch: (m) maintains
        s.wait(end_position(src), args.timeout)
        deadline = time.monotonic() + args.timeout
        while kind == "m" and s.output(1_000_000).count("lake maintenance done") <= done:
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.2)
    finally:
        s.stop()
        drop_slot(src, s.slot)
    want, got = pg_checksum(src), lake_checksum(lake_path)
    if want != got:
        raise SystemExit(f"content check failed ({kind}, round {r + 1}): lake {got}, source {want}")
    from syncline.views.ducklake import lake

    con = lake.connect(f"{lake_path}.sqlite", str(lake_path), read_only=True)
    try:
        snaps = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    finally:
        con.close()
    data, files = tree_bytes(lake_path)
    catalog = sum(p.stat().st_size for p in lake_path.parent.glob("lake.sqlite*"))
    sql(cluster.dsn(), f"DROP DATABASE {db}")
    return {
        "rate": args.updates / took,
        "data": data,
        "catalog": catalog,
        "files": files,
        "snapshots": int(snaps[0]) if snaps else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--updates", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=5.0, help="(m): seconds between maintenance runs")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syncline-lakebench-"))
    cluster = PgCluster(settings=BENCH_SETTINGS)
    got: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    try:
        cluster.init()
        cluster.start()
        for r in range(args.rounds):
            for kind in rotated(list(KINDS), r):
                quiet(args, KINDS[kind])
                res = one_run(cluster, work, r, kind, args)
                got[kind].append(res)
                say(
                    f"round {r + 1}: {KINDS[kind]}: {res['rate']:,.0f} updates/s, data "
                    f"{res['data'] / MB:.1f} MB in {res['files']:.0f} Parquet files, catalog "
                    f"{res['catalog'] / MB:.1f} MB, {res['snapshots']:.0f} snapshots"
                )
    finally:
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def col(kind: str, key: str, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
        v = [x[key] / scale for x in got[kind]]
        return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))} to {fmt.format(max(v))})"

    lines = [
        "# DuckLake benchmark",
        "",
        f"Written by `bench/lake.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{args.rounds} rounds, in rotated order; per run a fresh {args.rows:,}-row table "
        f"`bench(id int primary key, v text, n int)`, then {args.updates:,} single-row updates "
        "(100 per transaction) applied by `syncline run` into one DuckLake view (SQLite catalog). "
        "Every run's lake was checked against the source (count, sum, md5 of every row): all equal.",
        "",
        "Medians (range). *rate*: updates per second from the workload's start until the view had "
        f"applied the last; (m) maintains every {args.interval:g} s with a retention of "
        f"{args.interval:g} s, (n) never.",
        "",
        "| run | rate (updates/s) | data directory (MB) | Parquet files | catalog (MB) "
        "| snapshots retained |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, label in KINDS.items():
        lines.append(
            f"| {label} | {col(kind, 'rate')} | {col(kind, 'data', MB, '{:,.1f}')} | {col(kind, 'files')} | "
            f"{col(kind, 'catalog', MB, '{:,.1f}')} | {col(kind, 'snapshots')} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_report:
        (ROOT / "docs" / "benchmarks-lake.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
