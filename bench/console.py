"""What the console costs ``syncline run`` (issue 15): the CPU of the supervisor process
(where the HTTP listener, the console's sampler and its handlers run) at a steady 5,000 row
changes/s, with a browser's polling (``/status`` and ``/console/series`` every 2 s, as the
page does) and without any client.

One private PostgreSQL cluster; per run a fresh pipeline (one PostgreSQL replica view), a
writer committing ``--rate`` rows/s in transactions of 50 rows for ``--seconds``, and the
supervisor's CPU seconds over that window from /proc. ``--rounds`` rounds, the two modes in
rotated order; every run's replica is checked equal to the source (a difference fails the
benchmark). Medians and ranges, written to ``docs/benchmarks-console.md``.

    .venv/bin/python bench/console.py                     # 3 rounds of 40 s per mode
    .venv/bin/python bench/console.py --rounds 1 --seconds 10 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from procs import cpu_seconds
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import free_port, running_cluster

MODES = ("console open", "no client")


def writer(dsn: str, rate: int, stop: threading.Event, done: list[int]) -> None:
    per = 50
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            conn.execute(f"INSERT INTO items (v) SELECT md5(g::text) FROM generate_series(1, {per}) g")
            n += per
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        done.append(n)


def poller(base: str, stop: threading.Event, polls: list[int]) -> None:
    n = 0
    while not stop.is_set():
        for path in ("/", "/status", "/console/series") if n == 0 else ("/status", "/console/series"):
            with urllib.request.urlopen(base + path, timeout=30) as r:
                r.read()
        n += 1
        stop.wait(2.0)
    polls.append(n)


def one_run(pg: object, root: Path, mode: str, rate: int, seconds: float) -> dict[str, float]:
    port = free_port()
    p = Pipeline(pg, root, views=("postgres",), http_listen=f"127.0.0.1:{port}")  # type: ignore[arg-type]
    try:
        p.sql("CREATE TABLE items (id bigserial PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        assert p.proc is not None
        pid = p.proc.pid
        stop = threading.Event()
        done: list[int] = []
        polls: list[int] = []
        threads = [threading.Thread(target=writer, args=(p.source_dsn, rate, stop, done))]
        if mode == "console open":
            threads.append(threading.Thread(target=poller, args=(f"http://127.0.0.1:{port}", stop, polls)))
        time.sleep(3)  # the sampler's first samples, the API warm
        before = cpu_seconds(pid) or 0.0
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        after = cpu_seconds(pid) or 0.0
        wall = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        p.wait_caught_up(timeout=300)
        assert p.stop() == 0
        diffs = [d for ds in p.compare().values() for d in ds if not d.equal]
        if diffs:
            raise SystemExit(f"{mode}: the replica differs from the source: {diffs[:3]}")
        return {
            "cpu_pct": 100.0 * (after - before) / wall,
            "rows_per_s": done[0] / wall if done else 0.0,
            "polls": float(polls[0]) if polls else 0.0,
        }
    finally:
        p.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    got: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with running_cluster() as pg, tempfile.TemporaryDirectory(prefix="syncline-console-bench-") as tmp:
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                res = one_run(pg, Path(tmp) / f"r{r}-{mode.replace(' ', '-')}", mode, args.rate, args.seconds)
                got[mode].append(res)
                print(
                    f"round {r + 1}: {mode}: supervisor {res['cpu_pct']:.2f} % of a core, "
                    f"{res['rows_per_s']:,.0f} rows/s, {res['polls']:.0f} polls; replica equal",
                    flush=True,
                )
    lines = [
        "# Console benchmark",
        "",
        f"Written by `bench/console.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"command: `{' '.join(['.venv/bin/python', *sys.argv])}`. {args.rounds} rounds, the two modes "
        f"in rotated order, {args.seconds:g} s each at {args.rate:,} row changes/s (transactions of 50 "
        "rows) into one replica view; every run's replica checked equal to the source.",
        "",
        "*supervisor CPU*: CPU time of `syncline run`'s supervisor process (HTTP listener, console "
        "sampler, request handlers) over the window, in % of one core. *console open*: a client "
        "fetches `/status` and `/console/series` every 2 s, as the page does.",
        "",
        "| mode | supervisor CPU, % of a core (median, range) | rows/s written |",
        "|---|---:|---:|",
    ]
    for mode in MODES:
        cpu = [x["cpu_pct"] for x in got[mode]]
        rows = [x["rows_per_s"] for x in got[mode]]
        lines.append(
            f"| {mode} | {statistics.median(cpu):.2f} ({min(cpu):.2f} to {max(cpu):.2f}) | "
            f"{statistics.median(rows):,.0f} |"
        )
    cost = [a["cpu_pct"] - b["cpu_pct"] for a, b in zip(got["console open"], got["no client"], strict=True)]
    lines += [
        "",
        f"The open console costs {statistics.median(cost):.2f} % of a core "
        "(median of the rounds' differences).",
    ]
    print("\n".join(lines))
    if not args.no_report:
        out = Path(__file__).parent.parent / "docs" / "benchmarks-console.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
