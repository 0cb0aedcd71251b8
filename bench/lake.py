"""Lake benchmark (issue 14): what a DuckLake view's, and an Iceberg view's, files weigh after
a number of row updates, without maintenance and with it, and the rate the view applied them at.

Per round, in rotated order, on one private cluster and a fresh source database each time:
a ``--rows``-row table ``bench(id int primary key, v text, n int)`` is copied into the lake
by the first start; then single-row UPDATEs (100 per transaction, every row updated in turn;
``--updates`` of them into DuckLake, ``--iceberg-updates`` into Iceberg) run while
``syncline run`` applies them into one view (``--kind``: ducklake, iceberg or both):

  (n) DuckLake, no maintenance (``maintenance_interval`` longer than the run): every batch's
      files and snapshots stay;
  (m) DuckLake, maintenance every ``--interval`` seconds with ``retention`` of the same
      length: rows flushed into Parquet, snapshots past retention expired, small files
      merged, files no snapshot needs deleted;
  (in) Iceberg (the kind's default batch settings), no maintenance: every commit's data,
      manifest and metadata files stay;
  (im) Iceberg, maintenance every ``--interval`` seconds with ``retention`` of the same
      length and ``compact_files = --compact-files``: a table with that many data files
      rewritten into one, snapshots past retention expired, files no snapshot needs deleted.

After the view has applied everything, the script waits twice ``--interval`` seconds and
commits one more update, so that (m) and (im) run their maintenance once more over the whole
history, then measures the catalog (SQLite) and the data directory (DuckLake's ``data_path``,
Iceberg's ``warehouse``, which also holds the view's private DuckDB working copy, reported
apart) on disk, the Parquet files and the snapshots the lake retains. Every run's lake is
checked (count, sum and md5 of every row) against the source: a mismatch fails the benchmark.
Written to ``docs/benchmarks-lake.md`` (only the sections of the kinds that ran are replaced).

    .venv/bin/python bench/lake.py                        # both kinds, 3 rounds
    .venv/bin/python bench/lake.py --kind iceberg --iceberg-updates 200000
    .venv/bin/python bench/lake.py --rows 10000 --updates 50000 --rounds 1 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import statistics
import sys
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
    iceberg_checksum,
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
    "in": "(in) no maintenance",
    "im": "(im) maintenance",
}
LAKES = {"ducklake": ("n", "m"), "iceberg": ("in", "im")}
"""The runs of each ``--kind``."""
SECTIONS = {"ducklake": "## DuckLake", "iceberg": "## Iceberg"}
ICEBERG_UPDATES = 1_000_000
"""Default ``--iceberg-updates``."""
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
    iceberg = kind.startswith("i")
    updates = args.iceberg_updates if iceberg else args.updates
    db = f"lake_{kind}{r}"
    sql(cluster.dsn(), f"DROP DATABASE IF EXISTS {db}")
    sql(cluster.dsn(), f"CREATE DATABASE {db}")
    src = cluster.dsn(db)
    cluster.psql(TABLE_DDL, db)
    cluster.psql(PROCEDURES, db)
    cluster.psql(UPDATES, db)
    sql(src, "CALL bench_insert(%s, 1000)", (args.rows,))
    lake_path = work / f"{kind}{r}" / "lake"
    if iceberg:
        s = Syncline(work / f"{kind}{r}", src, f"lake_{kind}{r}", iceberg_path=lake_path)
    else:
        s = Syncline(work / f"{kind}{r}", src, f"lake_{kind}{r}", lake_path=lake_path)
    maintained = kind in ("m", "im")
    interval = args.interval if maintained else 10 * 86400
    with s.config_path.open("a") as f:  # the lake's section is the config's last
        f.write(f"maintenance_interval = {interval}\nretention = {interval}\n")
        if kind == "im":
            f.write(f"compact_files = {args.compact_files}\n")
    s.cfg = load_config(s.config_path)
    done_text = "Iceberg maintenance done" if iceberg else "lake maintenance done"
    try:
        s.start()
        s.wait(end_position(src), args.timeout)  # the first copy
        t0 = time.monotonic()
        sql(src, "CALL lake_update(%s, %s, 100)", (updates, args.rows))
        s.wait(end_position(src), args.timeout)
        took = time.monotonic() - t0
        time.sleep(2 * args.interval)
        done = s.output(10_000_000).count(done_text)
        sql(src, "UPDATE bench SET n = n + 1 WHERE id = 1")  # one more batch: (m) maintains
        s.wait(end_position(src), args.timeout)
        deadline = time.monotonic() + args.timeout
        while maintained and s.output(10_000_000).count(done_text) <= done:
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.2)
        maintenance = s.output(10_000_000).count(done_text)
    finally:
        s.stop()
        drop_slot(src, s.slot)
    want = pg_checksum(src)
    got = iceberg_checksum(lake_path) if iceberg else lake_checksum(lake_path)
    if want != got:
        raise SystemExit(f"content check failed ({kind}, round {r + 1}): lake {got}, source {want}")
    data, files = tree_bytes(lake_path)
    catalog = sum(p.stat().st_size for p in lake_path.parent.glob("lake.sqlite*"))
    out = {
        "rate": updates / took,
        "seconds": took,
        "data": data,
        "catalog": catalog,
        "files": files,
        "maintenance": maintenance,
    }
    if iceberg:
        from syncline.views.iceberg import lake as ice

        cat = ice.open_catalog(f"{lake_path}.sqlite", str(lake_path))
        work_copy = lake_path / ice.META
        private = sum(p.stat().st_size for p in work_copy.rglob("*") if p.is_file())
        out |= {
            "snapshots": len(cat.load_table(("public", "bench")).snapshots()),
            "positions": len(cat.load_table(ice.POSITIONS).snapshots()),
            "private": private,
            "lake": data - private,
            "metadata": sum(1 for p in lake_path.rglob("*") if p.suffix in (".json", ".avro")),
        }
    else:
        from syncline.views.ducklake import lake

        con = lake.connect(f"{lake_path}.sqlite", str(lake_path), read_only=True)
        try:
            snaps = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
        finally:
            con.close()
        out["snapshots"] = int(snaps[0]) if snaps else 0
    sql(cluster.dsn(), f"DROP DATABASE {db}")
    return out


def spread(v: list[float]) -> str:
    """± half the range, in % of the median."""
    m = statistics.median(v)
    return f"±{(max(v) - min(v)) / 2 / m * 100:.1f} %" if m else "-"


def ducklake_section(
    args: argparse.Namespace, got: dict[str, list[dict[str, float]]], when: str
) -> list[str]:
    def col(kind: str, key: str, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
        v = [x[key] / scale for x in got[kind]]
        return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))} to {fmt.format(max(v))})"

    lines = [
        SECTIONS["ducklake"],
        "",
        f"Written by `bench/lake.py` on {when} UTC; "
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
    for kind in LAKES["ducklake"]:
        lines.append(
            f"| {KINDS[kind]} | {col(kind, 'rate')} | {col(kind, 'data', MB, '{:,.1f}')} | "
            f"{col(kind, 'files')} | {col(kind, 'catalog', MB, '{:,.1f}')} | {col(kind, 'snapshots')} |"
        )
    return lines


def iceberg_section(
    args: argparse.Namespace, got: dict[str, list[dict[str, float]]], when: str, command: str
) -> list[str]:
    def col(kind: str, key: str, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
        v = [x[key] / scale for x in got[kind]]
        return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))} to {fmt.format(max(v))})"

    def rate(kind: str) -> str:
        return f"{col(kind, 'rate')}, {spread([x['rate'] for x in got[kind]])}"

    n, m = (statistics.median(x["lake"] for x in got[k]) for k in LAKES["iceberg"])
    lines = [
        SECTIONS["iceberg"],
        "",
        f"Written by `bench/lake.py` on {when} UTC; command: `{command}`. "
        f"{args.rounds} rounds, in rotated order; per run a fresh {args.rows:,}-row table "
        f"`bench(id int primary key, v text, n int)`, then **{args.iceberg_updates:,} single-row updates** "
        "(100 per transaction, every row in turn) applied by `syncline run` into one Iceberg view "
        "(pyiceberg's SQL catalog on SQLite, the kind's default batch settings: `batch_interval` 1 s, "
        "one copy-on-write commit per batch). "
        + (
            f"Fewer updates than DuckLake's {args.updates:,}: see the rates below. "
            if args.iceberg_updates != args.updates
            else ""
        )
        + "Every run's lake was checked against the source (count, sum, md5 of every row, read by "
        "DuckDB's iceberg extension at the newest batch): all equal.",
        "",
        "Medians (range). *rate*: updates per second from the workload's start until the view had "
        "applied the last (± half the range, in % of the median); (im) maintains every "
        f"{args.interval:g} s with a retention of {args.interval:g} s and `compact_files = "
        f"{args.compact_files}`, (in) never (`maintenance_interval` of ten days). *warehouse*: "
        "everything under the view's `warehouse`; *lake*: the same without the view's private DuckDB "
        "working copy (`_syncline/`), i.e. what Iceberg readers see; *metadata files*: JSON metadata, "
        "manifests and manifest lists; *snapshots*: of `public.bench` (of `_syncline.positions` "
        "after the slash).",
        "",
        "| run | rate (updates/s) | warehouse (MB) | lake (MB) | working copy (MB) | Parquet files "
        "| metadata files | catalog (MB) | snapshots retained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in LAKES["iceberg"]:
        lines.append(
            f"| {KINDS[kind]} | {rate(kind)} | {col(kind, 'data', MB, '{:,.1f}')} | "
            f"{col(kind, 'lake', MB, '{:,.1f}')} | {col(kind, 'private', MB, '{:,.1f}')} | "
            f"{col(kind, 'files')} | {col(kind, 'metadata')} | {col(kind, 'catalog', MB, '{:,.2f}')} | "
            f"{col(kind, 'snapshots')} / {col(kind, 'positions')} |"
        )
    lines += [
        "",
        f"Maintenance made the lake {n / m:,.1f} times smaller (medians)." if m else "",
        "",
        f"Source tree: {args.revision} (at the start). The machine has 2 cores and is noisy: "
        "each run waits up to `--quiet-wait` seconds for an idle machine, then measures anyway; "
        "compare the runs of one report, not rates across reports.",
    ]
    return lines


def revision() -> str:
    """The commit the benchmark ran on, and whether src/ had uncommitted changes."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (" with uncommitted changes in src/" if git("status", "--porcelain", "src") else "")


def write_sections(path: Path, sections: dict[str, list[str]]) -> str:
    """Replace the ``## DuckLake`` / ``## Iceberg`` sections of the report that ran (kept:
    the others as they were)."""
    old = path.read_text() if path.exists() else ""
    parts: dict[str, str] = {}
    for chunk in old.split("\n## ")[1:]:
        head = "## " + chunk.split("\n", 1)[0]
        parts[head] = "## " + chunk.rstrip("\n")
    for head, lines in sections.items():
        parts[head] = "\n".join(lines).rstrip("\n")
    body = [parts[h] for h in SECTIONS.values() if h in parts]
    body += [v for h, v in parts.items() if h not in SECTIONS.values()]
    text = "# Lake benchmarks\n\n" + "\n\n".join(body) + "\n"
    path.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("ducklake", "iceberg", "both"), default="both")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--updates", type=int, default=1_000_000, help="updates into DuckLake")
    ap.add_argument("--iceberg-updates", type=int, default=ICEBERG_UPDATES, help="updates into Iceberg")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=5.0, help="(m), (im): seconds between maintenance runs")
    ap.add_argument("--compact-files", type=int, default=4, help="(im): compact_files")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    args.revision = revision()
    lakes = list(LAKES) if args.kind == "both" else [args.kind]
    runs = [k for lk in lakes for k in LAKES[lk]]
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="syncline-lakebench-"))
    cluster = PgCluster(settings=BENCH_SETTINGS)
    got: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    try:
        cluster.init()
        cluster.start()
        for r in range(args.rounds):
            for kind in rotated(runs, r):
                label = f"{'Iceberg' if kind.startswith('i') else 'DuckLake'} {KINDS[kind]}"
                quiet(args, label)
                res = one_run(cluster, work, r, kind, args)
                got[kind].append(res)
                extra = (
                    f", lake {res['lake'] / MB:.1f} MB + working copy {res['private'] / MB:.1f} MB, "
                    f"{res['metadata']:.0f} metadata files, {res['positions']:.0f} positions snapshots"
                    if "lake" in res
                    else ""
                )
                say(
                    f"round {r + 1}: {label}: {res['rate']:,.0f} updates/s ({res['seconds']:.1f} s), data "
                    f"{res['data'] / MB:.1f} MB in {res['files']:.0f} Parquet files, catalog "
                    f"{res['catalog'] / MB:.2f} MB, {res['snapshots']:.0f} snapshots, "
                    f"{res['maintenance']:.0f} maintenance runs{extra}"
                )
    finally:
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    sections: dict[str, list[str]] = {}
    if "ducklake" in lakes:
        sections[SECTIONS["ducklake"]] = ducklake_section(args, got, when)
    if "iceberg" in lakes:
        sections[SECTIONS["iceberg"]] = iceberg_section(args, got, when, command)
    for lines in sections.values():
        print("\n".join(lines) + "\n")
    if not args.no_report:
        write_sections(ROOT / "docs" / "benchmarks-lake.md", sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
