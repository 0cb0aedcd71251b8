"""Apply throughput of one Redis view with 1 and with 2 appliers (``partitions = 2``).

The log is filled once: ``--rows`` inserts (1,000 rows per transaction) then ``--rows``
single-row updates (100 per transaction), captured by ``syncline capture`` into an embedded
log, which is then stopped. Each round then applies the whole log into a fresh private
redis-server (no persistence) with ``syncline apply --view cache``, once per mode, the
modes in an order rotated per round. A run's time goes from the first applier reporting
``running`` (its process started, the view opened) to every applier having applied the
log's last record; the rate is change events per second. Each run's content is checked
against the source (count, sum, md5 of every row; a mismatch fails the bench), and the CPU
seconds of the appliers and of redis-server are reported, since on a 2-core machine the
appliers share the cores with Redis itself.

    .venv/bin/python bench/apply.py                       # 250k rows, 3 rounds
    .venv/bin/python bench/apply.py --rows 20000 --no-report   # quick
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from run import (
    BENCH_SETTINGS,
    ROOT,
    create_source,
    describe,
    end_position,
    machine,
    pg_checksum,
    quiet,
    redis_checksum,
    redis_version,
    rotated,
    say,
    sql,
)
from syncline.config import load_config
from syncline.core.config_models import Config
from syncline.log import log_ready, open_observer
from syncline.log.base import by_view
from syncline.testing.harness import RedisServer
from syncline.testing.pgcluster import PgCluster

MODES = {"1": 1, "2": 2}
"""Mode name -> appliers (partitions)."""


@dataclass
class Run:
    mode: str
    seconds: float
    events: int
    applier_cpu: float
    redis_cpu: float
    ok: bool
    check: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def config(work: Path, dsn: str, log: Path, redis_url: str, partitions: int) -> Path:
    p = work / f"syncline-{partitions}.toml"
    p.write_text(
        "\n".join(
            [
                "[source]",
                f'dsn = "{dsn}"',
                'tables = ["public.bench"]',
                'slot = "bench_apply"',
                'publication = "bench_pub"',
                "[log]",
                f'path = "{log}"',
                'retention = "keep"',
                "[http]",
                'listen = "off"',
                "[views.cache]",
                'kind = "redis"',
                f'url = "{redis_url}"',
                f"partitions = {partitions}",
            ]
        )
        + "\n"
    )
    return p


def fill_log(cfg_path: Path, dsn: str, args: argparse.Namespace, work: Path) -> tuple[int, int]:
    """Capture the workload into the log; (records, events) it holds."""
    with open(work / "capture.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncline", "capture", "-c", str(cfg_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cfg = load_config(cfg_path)
    try:
        deadline = time.monotonic() + 120
        while not streaming(cfg):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the capture did not start:\n{(work / 'capture.log').read_text()[-2000:]}")
            time.sleep(0.2)
        say(f"workload: {args.rows:,} inserts, then {args.rows:,} updates")
        sql(dsn, "CALL bench_insert(%s, %s)", (args.rows, 1000))
        sql(dsn, "CALL bench_update(%s, %s)", (args.rows, 100))
        end = end_position(dsn)
        while int(meta(cfg, "received_lsn") or 0) < end:
            if proc.poll() is not None:
                raise SystemExit(f"the capture exited:\n{(work / 'capture.log').read_text()[-2000:]}")
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(60)
    obs = open_observer(cfg.log)
    try:
        first, n = obs.held()
        hw = int(obs.meta("hw", "0"))
        events, _ = obs.events_after(0, hw)
    finally:
        obs.close()
    say(f"log holds {n:,} records ({first}..{hw}), {events:,} change events")
    return hw, events


def streaming(cfg: Config) -> bool:
    return meta(cfg, "state") == "streaming"


def meta(cfg: Config, key: str) -> str:
    if not log_ready(cfg.log):
        return ""
    obs = open_observer(cfg.log)
    try:
        return obs.meta(key)
    except Exception:
        return ""
    finally:
        obs.close()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apply_once(
    work: Path, dsn: str, log: Path, mode: str, hw: int, events: int, want: tuple[str, ...], r: int
) -> Run:
    server = RedisServer(work / f"redis-{r}-{mode}")
    assert server.proc is not None
    try:
        cfg_path = config(work, dsn, log, server.url, MODES[mode])
        cfg = load_config(cfg_path)
        names = cfg.consumers()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        redis_before = cpu_of(server.proc.pid)
        with open(work / f"apply-{r}-{mode}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncline", "apply", "-c", str(cfg_path), "--view", "cache"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started: float | None = None
        deadline = time.monotonic() + 1800
        obs = open_observer(cfg.log)
        try:
            while True:
                now = time.monotonic()
                raw = obs.consumers()
                mine = {n: c for n, c in raw.items() if n in names}
                if started is None and any(c.state in ("running", "stopped") for c in mine.values()):
                    started = now
                row = by_view(mine).get("cache")
                if started is not None and row is not None and row.seq >= hw and row.state == "running":
                    break
                if proc.poll() is not None or now > deadline:
                    tail = (work / f"apply-{r}-{mode}.log").read_text()[-3000:]
                    raise SystemExit(f"apply ({mode}) stopped or timed out:\n{tail}")
                time.sleep(0.01)
        finally:
            obs.close()
        seconds = time.monotonic() - started
        redis_cpu = cpu_of(server.proc.pid) - redis_before
        proc.terminate()
        proc.wait(60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        applier_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        got = redis_checksum(server.url)
        ok = got == want
        check = "ok" if ok else f"MISMATCH: Redis {describe(got)} vs source {describe(want)}"
        run = Run(mode, seconds, events, applier_cpu, redis_cpu, ok, check)
        say(
            f"round {r + 1} mode {mode}: {run.rate:,.0f} events/s in {seconds:.2f}s, appliers "
            f"{applier_cpu:.1f} CPU s, redis-server {redis_cpu:.1f} CPU s, content {check}"
        )
        return run
    finally:
        server.stop()


def report(args: argparse.Namespace, info: dict[str, str], runs: list[Run], command: str, events: int) -> str:
    by = {m: [x for x in runs if x.mode == m] for m in MODES}
    med = {m: statistics.median(x.rate for x in by[m]) for m in MODES}
    ratios = sorted(b.rate / a.rate for a, b in zip(by["1"], by["2"], strict=True))  # per round
    lines = [
        "# Apply throughput: one Redis view with 1 and with 2 appliers",
        "",
        f"Generated by `{command}` on {info['date']}. Machine: {info.get('CPU', '?')}, "
        f"PostgreSQL {info['PostgreSQL']}, Redis {info.get('Redis', '?')}.",
        "",
        f"The log holds {events:,} change events ({args.rows:,} inserts in transactions of 1,000, "
        f"then {args.rows:,} single-row updates in transactions of 100), captured once; each run "
        "applies all of it into a fresh redis-server (`syncline apply --view cache`, "
        "`partitions = 1` or `2`), timed from the first applier running to the last record "
        f"applied. {args.rounds} rounds, modes in rotated order; every run's content checked "
        "against the source.",
        "",
        "| appliers | events/s (median) | range | applier CPU s (median) | redis-server CPU s (median) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for m in MODES:
        xs = by[m]
        lines.append(
            f"| {m} | {med[m]:,.0f} | {min(x.rate for x in xs):,.0f}-{max(x.rate for x in xs):,.0f} | "
            f"{statistics.median(x.applier_cpu for x in xs):.1f} | "
            f"{statistics.median(x.redis_cpu for x in xs):.1f} |"
        )
    lines += [
        "",
        f"**2 appliers vs 1: {statistics.median(ratios):.2f}x** (median of per-round ratios; "
        f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x).",
        "",
        "Per run:",
        "",
        "| round | appliers | events/s | seconds | applier CPU s | redis-server CPU s | content |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, x in enumerate(runs):
        lines.append(
            f"| {i // len(MODES) + 1} | {x.mode} | {x.rate:,.0f} | {x.seconds:.2f} | {x.applier_cpu:.1f} | "
            f"{x.redis_cpu:.1f} | {x.check} |"
        )
    cores = os.cpu_count() or 1
    busy = {m: statistics.median((x.applier_cpu + x.redis_cpu) / x.seconds for x in by[m]) for m in MODES}
    lines += [
        "",
        f"Cores kept busy by the appliers and redis-server together (CPU seconds / wall seconds, "
        f"median; this machine has {cores}): "
        + ", ".join(f"{busy[m]:.2f} with {m} applier{'s' if m != '1' else ''}" for m in MODES)
        + ". A second applier gains what the cores left over allow.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=250_000, help="rows inserted, then updated (default 250k)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=20, help="seconds to wait for an idle machine")
    ap.add_argument("--output", default=str(ROOT / "docs" / "benchmarks-apply.md"))
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="syncline-bench-apply-"))
    cluster = PgCluster(settings=BENCH_SETTINGS)
    runs: list[Run] = []
    try:
        cluster.init()
        cluster.start()
        info = machine(cluster)
        info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        info["Redis"] = redis_version()
        dsn = create_source(cluster, "bench_apply")
        log = work / "log"
        hw, events = fill_log(config(work, dsn, log, "redis://127.0.0.1:1/0", 1), dsn, args, work)
        want = pg_checksum(dsn)
        for r in range(args.rounds):
            for mode in rotated(list(MODES), r):
                quiet(args, f"apply {mode}")
                runs.append(apply_once(work, dsn, log, mode, hw, events, want, r))
    finally:
        cluster.cleanup()
        if args.keep or any(not x.ok for x in runs):
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ok = all(x.ok for x in runs) and len(runs) == args.rounds * len(MODES)
    if runs and ok:
        text = report(args, info, runs, command, events)
        print(text)
        if not args.no_report:
            Path(args.output).write_text(text)
            say(f"wrote {args.output}")
    if not ok:
        say("FAILED: a run's content differed from the source")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
