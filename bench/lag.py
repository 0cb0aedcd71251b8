"""Lag benchmark (issue 12): how long after its commit a change is applied in every view,
under a steady load of small OLTP transactions.

One private PostgreSQL cluster with the benchmark's settings (``bench/run.py``), except
``synchronous_commit = on``: with it off, the server hands a commit to its walsenders up to
``wal_writer_delay`` (200 ms) later, a delay no consumer can remove. Per round, a fresh
database initialised by ``pgbench -i`` (scale 1; ``pgbench_history`` given a key), and
``syncline run`` with all four views at once (PostgreSQL replica, DuckDB, Redis, tantivy)
following every table. When the first copy is applied:

* ``pgbench`` runs its TPC-B-like transactions (three updates, one insert: 4 row changes)
  at ``--rate`` transactions per second (default 1,250: 5,000 row changes/s) for
  ``--seconds``;
* a probe commits one row every 100 ms in its own transaction, takes the position after
  it (as ``syncline.client.current_position`` does) and polls every 2 ms until each view
  has applied it (the log's consumer positions, which a view moves only after its store
  committed): commit returned → applied, per view. The first ``--warmup`` seconds are left
  out.

After each round ``syncline verify`` compares every view with the source (a difference
fails the benchmark). Percentiles are over all rounds' samples, with each round's p99 for
the spread. Written to ``docs/benchmarks-lag.md``.

    .venv/bin/python bench/lag.py                       # 3 rounds of 30 s
    .venv/bin/python bench/lag.py --rounds 1 --seconds 10 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from procs import Sampler
from run import BENCH_SETTINGS, ROOT, Syncline, end_position, machine, rotated, say, sql
from syncline.log import open_observer
from syncline.runtime.status import caught_up
from syncline.sources.postgres.lsn import parse_lsn
from syncline.sources.registry import open_admin
from syncline.testing.harness import RedisServer
from syncline.testing.pgcluster import PgCluster

ALL_VIEWS = ("replica", "warehouse", "cache", "search")
GOALS_MS = {"log": 50, "replica": 50, "cache": 50, "warehouse": 250, "search": 250}
"""Issue 12: p99 commit → visible, with the views' default commit intervals."""
TRACE = bool(os.environ.get("LAG_TRACE"))
KINDS = {
    "log": "the capture: received in the log",
    "replica": "PostgreSQL",
    "warehouse": "DuckDB",
    "cache": "Redis",
    "search": "tantivy",
}


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def probe(
    src: str,
    s: Syncline,
    views: tuple[str, ...],
    stop: threading.Event,
    warm_until: float,
    lags: dict[str, list[float]],
) -> None:
    """Every 100 ms: commit a row, then time each view until it applied it."""
    obs = open_observer(s.cfg.log)
    try:
        with psycopg.connect(src, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO probe VALUES (%s, now())", (i,))
                t0 = time.monotonic()
                row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                assert row is not None
                lsn = parse_lsn(str(row[0]))
                todo = ["log", *views]
                while todo:
                    now = time.monotonic()
                    for name in list(todo):
                        if caught_up(obs, lsn, [] if name == "log" else [name]):
                            todo.remove(name)
                            if t0 >= warm_until:
                                lags[name].append(now - t0)
                                if TRACE:
                                    print(f"{t0:.3f} {name} {(now - t0) * 1000:.0f}", file=sys.stderr)
                    if now - t0 > 120:
                        raise RuntimeError(f"probe row {i} not applied by {todo} in 120 s")
                    time.sleep(0.002)
                stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))
    finally:
        obs.close()


def first_copy_done(s: Syncline, timeout: float) -> None:
    """Wait until the first start's watermark copies have all finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obs = open_observer(s.cfg.log)
        try:
            if obs.meta("state") == "streaming" and not open_admin(s.cfg).copying(obs):
                return
        finally:
            obs.close()
        time.sleep(0.2)
    raise RuntimeError(f"the first copy did not finish in {timeout:.0f} s")


def run_config(
    cluster: PgCluster,
    work: Path,
    r: int,
    views: tuple[str, ...],
    args: argparse.Namespace,
    redis: RedisServer,
) -> dict[str, object]:
    """One configuration (``views`` in one ``syncline run``) of round ``r``."""
    tag = f"{r}_{'_'.join(views) if len(views) < len(ALL_VIEWS) else 'all'}"
    db = f"lag_{tag}"
    cluster.psql(f"CREATE DATABASE {db}")
    cluster.psql(f"CREATE DATABASE replica_{tag}")
    redis_db = len(SEEN) % 16
    SEEN.append(tag)
    src = cluster.dsn(db)
    pgbench = str(cluster.bindir / "pgbench")
    conn = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", db]
    subprocess.run([pgbench, "-i", "-q", "-s", "1", *conn], check=True, capture_output=True)
    sql(src, "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
    sql(src, "CREATE TABLE probe (id int PRIMARY KEY, at timestamptz)")
    base = redis.url.rsplit("/", 1)[0]
    s = Syncline(
        work / tag,
        src,
        f"lag_{tag}",
        replica_dsn=cluster.dsn(f"replica_{tag}") if "replica" in views else None,
        duckdb_path=work / tag / "wh.duckdb" if "warehouse" in views else None,
        redis_url=f"{base}/{redis_db}" if "cache" in views else None,
        tantivy_path=work / tag / "index" if "search" in views else None,
        tables=("public.pgbench_*", "public.probe"),
        text_fields=("filler",),
    )
    say(f"round {r + 1}, {label(views)}: syncline run, first copy of pgbench scale 1")
    pid = s.start()
    out: dict[str, object] = {}
    try:
        s.wait(end_position(src), 600)
        first_copy_done(s, 600)
        s.wait(end_position(src), 600)
        lags: dict[str, list[float]] = {v: [] for v in ("log", *views)}
        stop = threading.Event()
        warm_until = time.monotonic() + args.warmup
        failure: list[BaseException] = []

        def probing() -> None:
            try:
                probe(src, s, views, stop, warm_until, lags)
            except BaseException as e:  # reported below
                failure.append(e)

        sampler = Sampler(pid, label=s.label).start()
        t = threading.Thread(target=probing, daemon=True)
        t.start()
        load_s = args.seconds + args.warmup
        say(f"round {r + 1}, {label(views)}: pgbench at {args.rate} tps for {load_s:.0f} s")
        bench = subprocess.run(
            [
                pgbench,
                "-n",
                "-c",
                "4",
                "-j",
                "1",
                "-R",
                str(args.rate),
                "-T",
                str(int(args.seconds + args.warmup)),
                "-M",
                "prepared",
                *conn,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        stop.set()
        t.join(130)
        sampler.stop()
        if failure:
            raise failure[0]
        m = re.search(r"tps = ([0-9.]+)", bench.stdout)
        out["tps"] = float(m.group(1)) if m else 0.0
        out["lags"] = lags
        out["cpu"] = sampler.by_label()
        out["peak_tree_mb"] = sampler.peak_tree_mb()
        s.wait(end_position(src), 600)
        s.stop()
        say(f"round {r + 1}, {label(views)}: syncline verify")
        v = subprocess.run(
            [sys.executable, "-m", "syncline", "verify", "-c", str(s.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        out["verified"] = v.returncode == 0
        out["verify"] = (v.stdout + v.stderr).strip().splitlines()[-1:] or [""]
        if v.returncode != 0:
            say(f"round {r + 1}, {label(views)}: views differ from the source:\n{v.stdout}{v.stderr}")
    finally:
        s.kill()
    return out


def label(views: tuple[str, ...]) -> str:
    return "all four views" if len(views) == len(ALL_VIEWS) else " + ".join(views)


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    configs: list[tuple[str, ...]],
    runs: dict[tuple[str, ...], list[dict[str, object]]],
    command: str,
) -> str:
    every = [r for rs in runs.values() for r in rs]
    lines = [
        "# Lag benchmark",
        "",
        f"Written by `bench/lag.py` on {info['date']}; command: `{command}`.",
        f"{args.rounds} rounds; in each, every configuration below in rotated order, each a fresh"
        f" `syncline run` under {args.seconds:.0f} s (after {args.warmup:.0f} s of warm-up) of pgbench's"
        f" TPC-B-like transactions at {args.rate:,} transactions/s ({4 * args.rate:,} row changes/s;"
        " achieved: " + ", ".join(f"{float(r['tps']):,.0f}" for r in every) + " tps). After each run,"
        " `syncline verify` compared every view with the source: "
        + ("all equal." if all(r["verified"] for r in every) else "**some differed** (see below)."),
        "",
        "Lag: from a probe transaction's commit returning to the view having applied it (its store"
        " committed), polled every 2 ms; one probe every 100 ms (the next once every view of the run"
        " has the last). `log`: the capture has it durably in the log. pgbench and PostgreSQL use"
        " about one of the machine's two cores at this rate.",
        "",
        "| run | view | samples | p50 | p90 | p99 | max | p99 per round | goal (p99) | |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for views in configs:
        rounds = runs[views]
        for v in ("log", *views):
            all_l = [x for r in rounds for x in r["lags"][v]]  # type: ignore[index]
            if not all_l:
                continue
            per = [pct(r["lags"][v], 0.99) * 1000 for r in rounds]  # type: ignore[index]
            p99 = pct(all_l, 0.99) * 1000
            ok = "met" if p99 <= GOALS_MS[v] else "**missed**"
            lines.append(
                f"| {label(views)} | {v} ({KINDS[v]}) | {len(all_l)} | {pct(all_l, 0.5) * 1000:.0f} ms"
                f" | {pct(all_l, 0.9) * 1000:.0f} ms | {p99:.0f} ms | {max(all_l) * 1000:.0f} ms"
                f" | {' / '.join(f'{p:.0f}' for p in per)} ms | {GOALS_MS[v]} ms | {ok} |"
            )
    secs = args.seconds + args.warmup
    lines += [
        "",
        "CPU of `syncline run`'s processes during the load (cores: CPU seconds per second; the"
        " round with the median tps):",
        "",
        "| run | process | peak RSS (MB) | CPU (cores) |",
        "|---|---|---:|---:|",
    ]
    for views in configs:
        rounds = runs[views]
        mid = sorted(rounds, key=lambda r: float(r["tps"]))[len(rounds) // 2]
        cpu = mid["cpu"]
        assert isinstance(cpu, dict)
        for name, (mb, c) in sorted(cpu.items(), key=lambda kv: -kv[1][1]):
            if name != "mp resource tracker":
                lines.append(f"| {label(views)} | {name} | {mb:.0f} | {c / secs:.2f} |")
    lines += [
        "",
        "## Machine and settings",
        "",
        *(f"- {k}: {v}" for k, v in info.items() if k != "date"),
        "- cluster settings: pgcluster's defaults (`fsync`, `full_page_writes` off) plus "
        + ", ".join(f"`{k} = {v}`" for k, v in {**BENCH_SETTINGS, **LAG_SETTINGS}.items()),
        "",
    ]
    return "\n".join(lines)


LAG_SETTINGS = {"synchronous_commit": "on"}
SEEN: list[str] = []
"""Runs so far (each gets its own Redis database)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds of load per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before probes count")
    ap.add_argument("--rate", type=int, default=1250, help="pgbench transactions/s (4 row changes each)")
    ap.add_argument("--output", default=str(ROOT / "docs" / "benchmarks-lag.md"))
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument(
        "--runs",
        default="replica;cache;warehouse;search;all",
        help="configurations, ';'-separated: views joined by ',', or 'all' (default: each alone, then all)",
    )
    args = ap.parse_args()
    configs: list[tuple[str, ...]] = []
    for part in args.runs.split(";"):
        names = ALL_VIEWS if part.strip() == "all" else tuple(v for v in ALL_VIEWS if v in part.split(","))
        if not names:
            ap.error(f"--runs: {part!r} names no view of {', '.join(ALL_VIEWS)}")
        configs.append(names)
    command = " ".join([".venv/bin/python", "bench/lag.py", *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="syncline-lag-"))
    cluster = PgCluster(settings={**BENCH_SETTINGS, **LAG_SETTINGS})
    redis = RedisServer(work / "redis")
    runs: dict[tuple[str, ...], list[dict[str, object]]] = {c: [] for c in configs}
    try:
        cluster.init()
        cluster.start()
        info = machine(cluster)
        info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        for r in range(args.rounds):
            for views in rotated(configs, r):
                res = run_config(cluster, work, r, views, args, redis)
                runs[views].append(res)
                say(
                    f"round {r + 1}, {label(views)}: "
                    + ", ".join(f"{v} p99 {pct(res['lags'][v], 0.99) * 1000:.0f} ms" for v in ("log", *views))  # type: ignore[index]
                )
    finally:
        redis.stop()
        cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, info, configs, runs, command)
    print(text)
    if not args.no_report:
        Path(args.output).write_text(text)
        say(f"wrote {args.output}")
    ok = all(r["verified"] for rs in runs.values() for r in rs)
    if not ok:
        say("FAILED: a view differed from the source")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
