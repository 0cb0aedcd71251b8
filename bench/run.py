"""syncline benchmark: one private PostgreSQL cluster, ``--rounds`` rounds, twelve consumers.

Workload on ``bench(id int primary key, v text, n int)``: ``--rows`` inserts (1,000 rows per
transaction), then ``--rows`` single-row UPDATE statements (100 per transaction), all
generated server side, in a fresh database per round. Every consumer's slot exists before
the workload, so each drains the same WAL afterwards, alone, in an order rotated per round:

  (a) ``pg_recvlogical`` (pgoutput, protocol 1, to /dev/null);
  (b) syncline capture into the embedded log (no views): until ``received_lsn`` >= end;
  (c) syncline end to end, views ``replica`` (PostgreSQL) and ``warehouse`` (DuckDB);
  (d) PostgreSQL's own logical replication (a subscription on a pre-created slot);
  (e) syncline end to end, one Redis view (a private redis-server, no persistence);
  (f) syncline end to end, one tantivy (search) view;
  (g) syncline end to end, all four views at once;
  (h) syncline capture into a NATS JetStream log (one private nats-server, R1), no views;
  (i) the same into a three-server JetStream cluster on this machine (R3);
  (j) syncline end to end, one DuckLake view (SQLite catalog, Parquet files);
  (k) syncline end to end, one Iceberg view (pyiceberg SQL catalog on SQLite, Parquet files);
  (l) syncline end to end, one DuckDB view (the third warehouse kind beside (j) and (k)).

Then ``--rounds`` single ``--big-rows`` transactions end to end, for memory (with (a) for
reference). Every run's content is checked against the source (a failed check fails the
benchmark: exit 1). Medians and ranges over the rounds are reported; ratios are taken per
round. Peak RSS and CPU time of every process (and of the walsenders) are sampled from
/proc. Before each run the script waits (``--quiet-wait``) for an idle machine.
Results are printed and written to ``docs/benchmarks.md`` (``--durable``:
``docs/benchmarks-durable.md``, PostgreSQL with fsync and synchronous_commit on).

    .venv/bin/python bench/run.py                 # full size (make bench)
    .venv/bin/python bench/run.py --rows 20000 --big-rows 100000 --no-report   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from procs import Profiler, Sampler, machine_busy, summarize, syncline_role
from syncline.config import load_config
from syncline.core.errors import LogError
from syncline.log import open_observer
from syncline.log.embedded.store import connect, get_meta
from syncline.runtime.status import views_caught_up
from syncline.sources.postgres.lsn import format_lsn, parse_lsn
from syncline.testing.pgcluster import PgCluster, kill_group

ROOT = Path(__file__).resolve().parent.parent

# Same cluster, same settings for every consumer. On top of pgcluster's DEFAULT_SETTINGS
# (fsync, synchronous_commit and full_page_writes off, wal_level logical):
BENCH_SETTINGS = {
    "logical_decoding_work_mem": "64MB",  # PostgreSQL's default (pgcluster uses 64kB for tests)
    "shared_buffers": "512MB",
    "max_wal_size": "16GB",  # no checkpoint storm while the workload runs
    "checkpoint_timeout": "30min",
    "autovacuum": "off",  # no background WAL between consumers: each reads the same stream
    "max_worker_processes": "16",
}

PUB = "bench_pub"
TABLE_DDL = "CREATE TABLE bench (id int PRIMARY KEY, v text, n int)"

PROCEDURES = """
CREATE PROCEDURE bench_insert(total int, batch int) LANGUAGE plpgsql AS $$
DECLARE i int := 0;
BEGIN
  WHILE i < total LOOP
    INSERT INTO bench SELECT g, md5(g::text), 0 FROM generate_series(i + 1, least(i + batch, total)) g;
    COMMIT;
    i := i + batch;
  END LOOP;
END $$;
CREATE PROCEDURE bench_update(total int, batch int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..total LOOP
    UPDATE bench SET n = n + 1 WHERE id = i;
    IF i % batch = 0 THEN COMMIT; END IF;
  END LOOP;
  COMMIT;
END $$;
"""

PG_CHECKSUM = (
    "SELECT count(*), coalesce(sum(n), 0),"
    " md5(coalesce(string_agg(id::text || ':' || v || ':' || n::text, ',' ORDER BY id), ''))"
    " FROM public.bench"
)
DUCK_CHECKSUM = (
    "SELECT count(*), coalesce(sum(n), 0),"
    " md5(coalesce(string_agg(CAST(id AS VARCHAR) || ':' || v || ':' || CAST(n AS VARCHAR), ','"
    " ORDER BY id), '')) FROM public.bench"
)

MB = 1024 * 1024
PROFILE_DIR: Path | None = None
"""--profile: where py-spy's collapsed stacks go (None: not profiling)."""
PROFILE_NATIVE = False
"""--native: py-spy also samples native frames, every thread."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- PostgreSQL helpers ---------------------------------------------------------------------


def sql(dsn: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def end_position(dsn: str) -> int:
    """An LSN at or after the end of every transaction committed so far, with the WAL flushed
    beyond it (the workload commits asynchronously; decoding only reads flushed WAL)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT txid_current()")  # a synchronous commit: flushes the WAL past it
    return parse_lsn(str(row[0]))


def slot_pid(dsn: str, slot: str) -> int:
    rows = sql(dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return int(rows[0][0]) if rows and rows[0][0] else 0  # type: ignore[call-overload]


def pg_checksum(dsn: str) -> tuple[str, ...]:
    row = sql(dsn, PG_CHECKSUM)[0]
    return tuple(str(x) for x in row)


def duck_checksum(path: Path) -> tuple[str, ...]:
    import duckdb

    return _duck_rows(duckdb.connect(str(path), read_only=True))


def lake_checksum(path: Path) -> tuple[str, ...]:
    """The bench table as the DuckLake view holds it (catalog ``PATH.sqlite``)."""
    from syncline.views.ducklake import lake

    return _duck_rows(lake.connect(f"{path}.sqlite", str(path), read_only=True))


def iceberg_checksum(path: Path, view: str = "iceberg") -> tuple[str, ...]:
    """The bench table as the Iceberg view ``view`` holds it (catalog ``PATH.sqlite``,
    warehouse ``PATH``), read by DuckDB's iceberg extension at the newest batch."""
    from syncline.views.iceberg import lake

    con, _read = lake.reading_connection(lake.open_catalog(f"{path}.sqlite", str(path)), view)
    return _duck_rows(con)


def _duck_rows(con: Any) -> tuple[str, ...]:
    """``DUCK_CHECKSUM`` on a DuckDB connection (closed after)."""
    try:
        row = con.execute(DUCK_CHECKSUM).fetchone()
    finally:
        con.close()
    assert row is not None
    return tuple(str(int(x)) if not isinstance(x, str) else x for x in row)


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to ``max_wait`` s) until the machine is idle: less than ``threshold`` cores
    busy over two consecutive seconds (other people's work would distort the timings).
    Returns the cores busy in the last second."""
    deadline = time.monotonic() + max_wait
    quiet = 0
    load = 0.0
    while True:
        b0 = machine_busy()
        time.sleep(1.0)
        load = machine_busy() - b0
        quiet = quiet + 1 if load < threshold else 0
        if quiet >= 2 or time.monotonic() > deadline:
            return load


def quiet(args: argparse.Namespace, what: str) -> float:
    say(f"waiting for an idle machine, then {what}")
    load = wait_quiet(args.quiet_wait)
    if load >= 0.3:
        say(f"the machine is still busy ({load:.1f} cores used by others); measuring anyway")
    return load


# -- results --------------------------------------------------------------------------------


@dataclass
class Result:
    key: str
    title: str
    changes: int
    seconds: float | None = None
    error: str | None = None
    verified: str = ""
    sampler: Sampler | None = None
    extra: dict[str, float] = field(default_factory=dict)  # e.g. per-view catch-up times
    load_before: float = 0.0  # cores busy on the machine just before the run
    mismatch: str = ""  # timed, but the result differs from the source
    wrong: list[str] = field(default_factory=list)  # the views that differ
    profiles: dict[str, Path] = field(default_factory=dict)  # --profile: process -> collapsed stacks

    def others(self) -> float | None:
        """Cores used by everything not watched, on average during the run."""
        if self.sampler is None or not self.seconds:
            return None
        return self.sampler.others_cpu() / self.seconds

    @property
    def ok(self) -> bool:
        return self.seconds is not None and self.error is None and not self.mismatch

    @property
    def rate(self) -> float | None:
        return self.changes / self.seconds if self.ok and self.seconds else None


# -- syncline -------------------------------------------------------------------------------


class Syncline:
    """A ``syncline run`` process with its own config, log and views (no harness: the
    harness creates its own source database, and all consumers here share one)."""

    def __init__(
        self,
        workdir: Path,
        source_dsn: str,
        slot: str,
        replica_dsn: str | None = None,
        duckdb_path: Path | None = None,
        redis_url: str | None = None,
        tantivy_path: Path | None = None,
        lake_path: Path | None = None,
        iceberg_path: Path | None = None,
        tables: tuple[str, ...] = ("public.bench",),
        log_lines: tuple[str, ...] = (),
        text_fields: tuple[str, ...] = ("v",),
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "log"
        lines = [
            "[source]",
            f'dsn = "{source_dsn}"',
            "tables = [" + ", ".join(f'"{t}"' for t in tables) + "]",
            f'slot = "{slot}"',
            f'publication = "{PUB}"',
            "[log]",
            f'path = "{self.log_path}"',
            *log_lines,
        ]
        self.roles: dict[str, str] = {}
        self.replica_dsn = replica_dsn or ""
        self.replica_db = replica_dsn.rsplit("/", 1)[1] if replica_dsn else ""
        if replica_dsn:
            lines += ["[views.replica]", 'kind = "postgres"', f'dsn = "{replica_dsn}"']
            self.roles["*"] = "replica"
        if duckdb_path:
            lines += ["[views.warehouse]", 'kind = "duckdb"', f'path = "{duckdb_path}"']
            self.roles[duckdb_path.name] = "warehouse"
        if redis_url:
            lines += ["[views.cache]", 'kind = "redis"', f'url = "{redis_url}"']
        if lake_path:
            lines += [
                "[views.lake]",
                'kind = "ducklake"',
                f'catalog = "{lake_path}.sqlite"',
                f'data_path = "{lake_path}"',
            ]
        if iceberg_path:  # the kind's default batch settings
            lines += [
                "[views.iceberg]",
                'kind = "iceberg"',
                f'catalog = "{iceberg_path}.sqlite"',
                f'warehouse = "{iceberg_path}"',
            ]
        if tantivy_path:
            lines += [
                "[views.search]",
                'kind = "tantivy"',
                f'path = "{tantivy_path}"',
                "text_fields = [" + ", ".join(f'"{t}"' for t in text_fields) + "]",
            ]
        self.config_path = workdir / "syncline.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.cfg = load_config(self.config_path)
        self.names = [v.name for v in self.cfg.views]
        self.source_dsn = source_dsn
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.others: list[tuple[str, int]] = []
        """Other processes doing the view's work (label, pid), e.g. the redis-server."""

    def start(self) -> int:
        self.runs += 1
        with open(self.workdir / f"run{self.runs}.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncline", "run", "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.workdir,
            )
        return self.proc.pid

    def output(self, tail: int = 3000) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("run*.log")))
        return text[-tail:]

    def label(self, pid: int) -> str | None:
        assert self.proc is not None
        return syncline_role(pid, self.proc.pid, self.roles)

    def meta(self, key: str) -> str:
        if self.cfg.log.kind != "embedded":
            try:
                obs = open_observer(self.cfg.log)
            except LogError:
                return ""
            try:
                return obs.meta(key)
            finally:
                obs.close()
        try:
            conn = connect(self.log_path, readonly=True)
        except LogError:
            return ""
        try:
            return get_meta(conn, key)
        except sqlite3.Error:
            return ""
        finally:
            conn.close()

    def failures(self) -> str | None:
        if self.meta("capture_state") == "failed":
            return f"capture failed: {self.meta('capture_error')}"
        if (self.log_path / "log.db").exists():
            try:
                conn = connect(self.log_path, readonly=True)
                try:
                    bad = conn.execute("SELECT name, error FROM consumers WHERE state = 'failed'").fetchall()
                finally:
                    conn.close()
            except sqlite3.Error:
                bad = []
            if bad:
                return "; ".join(f"view {n} failed: {e}" for n, e in bad)
        if self.proc is not None and self.proc.poll() is not None:
            return f"syncline run exited with {self.proc.returncode}"
        return None

    def caught_up(self, lsn: int, names: list[str] | None = None) -> bool:
        try:
            return views_caught_up(self.cfg, lsn, self.names if names is None else names)
        except sqlite3.Error:  # the log is being created
            return False

    def wait(self, lsn: int, timeout: float, t0: float | None = None, poll: float = 0.1) -> dict[str, float]:
        """Wait until the log received ``lsn`` and every view applied everything up to it.
        Returns the time (since ``t0``) at which each of "capture" and the views got there."""
        t0 = time.monotonic() if t0 is None else t0
        deadline = time.monotonic() + timeout
        done: dict[str, float] = {}
        todo = ["capture", *self.names]
        last_check = 0.0
        while True:
            now = time.monotonic()
            for name in list(todo):
                if self.caught_up(lsn, [] if name == "capture" else [name]):
                    done[name] = now - t0
                    todo.remove(name)
            if not todo:
                return done
            if now - last_check > 1.0:
                last_check = now
                bad = self.failures()
                if bad:
                    raise RuntimeError(f"{bad}\n--- syncline output ---\n{self.output()}")
            if now > deadline:
                raise RuntimeError(
                    f"not caught up with {format_lsn(lsn)} in {timeout:.0f}s (done: {done})\n"
                    f"--- syncline output ---\n{self.output()}"
                )
            time.sleep(poll)

    def stop(self, timeout: float = 120) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc = None

    def prime(self, timeout: float = 300) -> None:
        """First start: publication, slot, (empty) snapshot, views created; then stop."""
        self.start()
        try:
            self.wait(end_position(self.source_dsn), timeout)
        finally:
            self.stop()

    def backends(self) -> list[tuple[str, int]]:
        """The PostgreSQL backends serving the replica view (the target side's work), and
        ``others``."""
        if not self.replica_db:
            return list(self.others)
        rows = sql(
            self.source_dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()",
            (self.replica_db,),
        )
        return [("replica backend", int(r[0])) for r in rows] + self.others  # type: ignore[call-overload]

    def log_bytes(self) -> int:
        if self.cfg.log.kind != "embedded":
            obs = open_observer(self.cfg.log)
            try:
                return obs.size_bytes()
            finally:
                obs.close()
        return sum(f.stat().st_size for f in self.log_path.glob("*.db*") if f.is_file())


# -- consumers ------------------------------------------------------------------------------


def run_recvlogical(
    cluster: PgCluster, db: str, slot: str, endpos: int, changes: int, timeout: float, key: str
) -> Result:
    res = Result(key, "pg_recvlogical (pgoutput → /dev/null)", changes)
    dsn = cluster.dsn(db)
    cmd = [
        str(cluster.bindir / "pg_recvlogical"),
        "-d",
        dsn,
        "-S",
        slot,
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={PUB}",
        "-E",
        format_lsn(endpos),
        "-f",
        "/dev/null",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = Sampler(
        proc.pid, label=lambda pid: "pg_recvlogical", extra=lambda: [("walsender", slot_pid(dsn, slot))]
    ).start()
    try:
        _out, err = proc.communicate(timeout=timeout)
        res.seconds = time.monotonic() - t0
        if proc.returncode != 0:
            res.error = f"pg_recvlogical exited {proc.returncode}: {err.decode(errors='replace')[-500:]}"
        else:
            res.verified = f"reached --endpos {format_lsn(endpos)}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        res.error = f"timeout after {timeout:.0f}s"
    finally:
        sampler.stop()
    res.sampler = sampler
    return res


def run_syncline(
    s: Syncline,
    endpos: int,
    changes: int,
    timeout: float,
    key: str,
    title: str,
    expect: Callable[[], str],
    settle: tuple[str, ...] = (),
) -> Result:
    """Start ``syncline run``, time it until caught up with ``endpos``, stop it, check the
    result with ``expect``. ``settle``: consumers to wait for (untimed) before stopping."""
    res = Result(key, title, changes)
    t0 = time.monotonic()
    pid = s.start()
    sampler = Sampler(
        pid, label=s.label, extra=lambda: [("walsender", slot_pid(s.source_dsn, s.slot)), *s.backends()]
    ).start()
    spy = None
    if PROFILE_DIR:
        spy = Profiler(pid, s.label, PROFILE_DIR, f"{key}-{s.slot}", native=PROFILE_NATIVE).start()
    try:
        done = s.wait(endpos, timeout, t0=t0)
        res.seconds = time.monotonic() - t0
        res.extra = done
        sampler.stop()
        if spy is not None:
            spy.stop()
            res.profiles = dict(spy.files)
        deadline = time.monotonic() + timeout
        while settle and not s.caught_up(endpos, list(settle)) and time.monotonic() < deadline:
            time.sleep(0.2)
        s.stop()
        res.verified = expect()
    except Mismatch as e:
        res.mismatch, res.wrong = str(e), e.wrong
        say(f"{key}: wrong result: {e}")
    except Exception as e:
        res.error = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        say(f"{key} failed:\n{e}")
        sampler.stop()
        s.kill()
    res.sampler = sampler
    return res


def log_checksum(log_path: Path) -> tuple[str, ...]:
    """The bench table as the compacted log holds it, in the form of PG_CHECKSUM."""
    from syncline.core.events import RowChange, SchemaChange
    from syncline.log.embedded.compact import iter_compacted

    rows: list[tuple[int, str]] = []
    total = 0
    idx = (0, 1, 2)
    for txn in iter_compacted(log_path):
        for it in txn.items:
            if isinstance(it, SchemaChange):
                names = [c.name for c in it.relation.columns]
                idx = (names.index("id"), names.index("v"), names.index("n"))
            elif isinstance(it, RowChange) and it.new is not None:
                i, v, n = (it.new[j] for j in idx)
                rows.append((int(str(i)), f"{i}:{v}:{n}"))
                total += int(str(n))
    rows.sort()
    digest = hashlib.md5(",".join(t for _i, t in rows).encode(), usedforsecurity=False).hexdigest()
    return (str(len(rows)), str(total), digest)


def verify_log(source_dsn: str, s: Syncline) -> str:
    """(b): what the log holds, read through the compacted log, equals the source."""
    received = f"received_lsn {format_lsn(int(s.meta('received_lsn') or 0))}, {s.log_bytes() / MB:,.0f} MB"
    want = pg_checksum(source_dsn)
    got = log_checksum(s.log_path)  # a check that cannot run fails the run
    if got != want:
        raise Mismatch(f"the compacted log has {describe(got)} (source: {describe(want)})", ["log"])
    return f"{received}; compacted log equal to the source ({describe(want)})"


class Mismatch(Exception):
    def __init__(self, text: str, wrong: list[str]) -> None:
        super().__init__(text)
        self.wrong = wrong


def describe(c: tuple[str, ...]) -> str:
    return f"{int(c[0]):,} rows, sum(n) {int(c[1]):,}, md5 {c[2][:8]}"


def redis_checksum(url: str) -> tuple[str, ...]:
    """The bench table as the Redis view holds it (hashes ``public.bench:{id}``)."""
    import redis

    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        keys = list(r.scan_iter(match="public.bench:*", count=10_000))
        rows: list[tuple[int, str]] = []
        total = 0
        for i in range(0, len(keys), 10_000):
            pipe = r.pipeline(transaction=False)
            for k in keys[i : i + 10_000]:
                pipe.hgetall(k)
            for h in pipe.execute():
                rows.append((int(h["id"]), f"{h['id']}:{h.get('v')}:{h.get('n')}"))
                total += int(h.get("n") or 0)
    finally:
        r.close()
    rows.sort()
    digest = hashlib.md5(",".join(t for _i, t in rows).encode(), usedforsecurity=False).hexdigest()
    return (str(len(rows)), str(total), digest)


def tantivy_checksum(path: Path) -> tuple[str, ...]:
    """The bench table as the tantivy view holds it (stored ``_row`` of every document)."""
    import json

    import tantivy

    from syncline.views.tantivy.view import F_ROW, F_TABLE

    index: Any = tantivy.Index.open(str(path))
    index.reload()
    searcher = index.searcher()
    query = tantivy.Query.term_query(index.schema, F_TABLE, "public.bench")
    n = searcher.search(query, 1).count or 0
    rows: list[tuple[int, str]] = []
    total = 0
    for _score, addr in searcher.search(query, n).hits if n else []:
        raw = searcher.doc(addr).get_first(F_ROW)
        row = json.loads(bytes(raw) if not isinstance(raw, str) else raw)
        rows.append((int(row["id"]), f"{row['id']}:{row.get('v')}:{row.get('n')}"))
        total += int(row.get("n") or 0)
    rows.sort()
    digest = hashlib.md5(",".join(t for _i, t in rows).encode(), usedforsecurity=False).hexdigest()
    return (str(len(rows)), str(total), digest)


def run_native(
    cluster: PgCluster, src_db: str, dst_db: str, slot: str, endpos: int, changes: int, timeout: float
) -> Result:
    res = Result("d", "PostgreSQL logical replication (subscription)", changes)
    src, dst = cluster.dsn(src_db), cluster.dsn(dst_db)
    conninfo = f"host=127.0.0.1 port={cluster.port} dbname={src_db} user=postgres"

    def apply_pid() -> int:
        rows = sql(
            dst, "SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_sub' AND pid IS NOT NULL"
        )
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    # no process tree of ours (root -1): only the PostgreSQL workers' CPU
    sampler = Sampler(-1, extra=lambda: [("walsender", slot_pid(src, slot)), ("apply worker", apply_pid())])
    t0 = time.monotonic()
    sql(
        dst,
        f"CREATE SUBSCRIPTION bench_sub CONNECTION '{conninfo}' PUBLICATION {PUB}"
        f" WITH (create_slot = false, slot_name = '{slot}', copy_data = false)",
    )
    sampler.start()
    try:
        deadline = t0 + timeout
        while True:
            rows = sql(
                src,
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            if rows and rows[0][0] is not None and int(rows[0][0]) >= endpos:  # type: ignore[call-overload]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscription not caught up in {timeout:.0f}s")
            time.sleep(0.1)
        res.seconds = time.monotonic() - t0
        sampler.stop()
        want, got = pg_checksum(src), pg_checksum(dst)
        if want != got:
            raise Mismatch(f"target has {describe(got)} (source: {describe(want)})", ["target"])
        res.verified = f"target equal to the source ({describe(want)})"
    except Mismatch as e:
        res.mismatch, res.wrong = str(e), e.wrong
    except Exception as e:
        res.error = str(e)[:300]
        sampler.stop()
    finally:
        with contextlib.suppress(Exception):
            sql(dst, "ALTER SUBSCRIPTION bench_sub DISABLE")
            sql(dst, "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)")
            sql(dst, "DROP SUBSCRIPTION bench_sub")
    res.sampler = sampler
    return res


def drop_slot(dsn: str, slot: str) -> None:
    for _ in range(100):
        try:
            sql(
                dsn,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)


# -- the machine ----------------------------------------------------------------------------


def redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return "?"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "?"


def machine(cluster: PgCluster) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    pg = str(sql(cluster.dsn(), "SHOW server_version")[0][0])
    import duckdb

    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": mem,
        "PostgreSQL": pg,
        "Python": sys.version.split()[0],
        "DuckDB": duckdb.__version__,
        "OS": f"{os.uname().sysname} {os.uname().release}",
    }


# -- rounds ---------------------------------------------------------------------------------

CONSUMERS: dict[str, str] = {
    "a": "pg_recvlogical (pgoutput → /dev/null)",
    "b": "syncline capture → embedded log",
    "c": "syncline end to end (replica + DuckDB views)",
    "d": "PostgreSQL logical replication (subscription)",
    "e": "syncline end to end (Redis view)",
    "f": "syncline end to end (tantivy view)",
    "g": "syncline end to end (all four views)",
    "h": "syncline capture → NATS JetStream log (R1)",
    "i": "syncline capture → NATS JetStream log (R3, 3 local servers)",
    "j": "syncline end to end (DuckLake view)",
    "k": "syncline end to end (Iceberg view)",
    "l": "syncline end to end (DuckDB view)",
}
"""Every consumer of the main workload, in the first round's order."""

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""``--durable``: PostgreSQL's own defaults for the settings pgcluster turns off for tests."""


@dataclass
class Round:
    index: int
    order: list[str]
    results: dict[str, Result] = field(default_factory=dict)
    workload: dict[str, float] = field(default_factory=dict)


def rotated(keys: list[str], r: int) -> list[str]:
    """Round ``r`` runs the consumers in the first round's order rotated by ``r``, so that
    every consumer runs early and late (the first reader of fresh WAL, a warm or busy
    machine) in some round."""
    if not keys:
        return []
    k = r % len(keys)
    return keys[k:] + keys[:k]


def create_source(cluster: PgCluster, db: str, procedures: bool = True) -> str:
    cluster.psql(f"CREATE DATABASE {db}")
    cluster.psql(TABLE_DDL, db)
    if procedures:
        cluster.psql(PROCEDURES, db)
    cluster.psql(f"CREATE PUBLICATION {PUB} FOR TABLE bench WITH (publish_via_partition_root = true)", db)
    return cluster.dsn(db)


def run_round(
    cluster: PgCluster,
    work: Path,
    args: argparse.Namespace,
    r: int,
    keys: list[str],
    redis_url: Callable[[int], str],
    redis_pid: int,
    pipes: list[Syncline],
    nats_urls: dict[str, list[str]],
    nats_pids: dict[str, list[int]],
) -> Round:
    """One round: a fresh source database, every consumer's slot created (and syncline's
    views primed) before the workload, then each consumer drains the same WAL alone, in
    this round's order."""
    tag = f"r{r}"
    rnd = Round(r, rotated(keys, r))
    src = create_source(cluster, f"src_{tag}")
    base = work / tag
    changes = 2 * args.rows
    if "a" in keys:
        sql(src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"a_{tag}",))
    if "d" in keys:
        cluster.psql(f"CREATE DATABASE native_{tag}")
        cluster.psql(TABLE_DDL, f"native_{tag}")
        sql(src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"d_{tag}",))
    made: dict[str, Syncline] = {}
    for key in keys:
        if key in "ad":
            continue
        opts: dict[str, Any] = {}
        if key in "cg":
            cluster.psql(f"CREATE DATABASE replica_{key}_{tag}")
            opts["replica_dsn"] = cluster.dsn(f"replica_{key}_{tag}")
        if key in "cgl":
            opts["duckdb_path"] = base / key / "wh.duckdb"
        if key in "eg":
            opts["redis_url"] = redis_url(2 * r + (key == "g"))
        if key in "fg":
            opts["tantivy_path"] = base / key / "index"
        if key == "j":
            opts["lake_path"] = base / key / "lake"
        if key == "k":
            opts["iceberg_path"] = base / key / "iceberg"
        if key in "hi":
            urls = nats_urls[key]
            opts["log_lines"] = (
                'kind = "nats"',
                "servers = [" + ", ".join(f'"{u}"' for u in urls) + "]",
                f'stream = "{key}_{tag}"',
                f"replicas = {len(urls)}",
            )
        s = made[key] = Syncline(base / key, src, f"{key}_{tag}", **opts)
        if key in "eg" and redis_pid:
            s.others = [("redis-server", redis_pid)]
        if key in "hi":
            s.others = [("nats-server", pid) for pid in nats_pids[key]]
        pipes.append(s)
        say(f"round {r + 1}: priming ({key}) {CONSUMERS[key]}")
        try:
            s.prime()
        except Exception as e:
            say(f"({key}) could not be primed: {e}")
            rnd.results[key] = Result(key, CONSUMERS[key], changes, error=f"priming: {str(e)[:300]}")

    say(f"round {r + 1}: workload: {args.rows:,} inserts, then {args.rows:,} single-row updates")
    start_lsn = parse_lsn(str(sql(src, "SELECT pg_current_wal_insert_lsn()::text")[0][0]))
    t = time.monotonic()
    sql(src, "CALL bench_insert(%s, %s)", (args.rows, args.insert_batch))
    rnd.workload["insert_s"] = time.monotonic() - t
    t = time.monotonic()
    sql(src, "CALL bench_update(%s, %s)", (args.rows, args.update_batch))
    rnd.workload["update_s"] = time.monotonic() - t
    endpos = end_position(src)
    rnd.workload["endpos"] = endpos
    rnd.workload["wal_bytes"] = endpos - start_lsn
    say(
        f"round {r + 1}: workload done ({rnd.workload['wal_bytes'] / MB:.0f} MB WAL);"
        f" order {' '.join(rnd.order)}"
    )

    def checker(key: str, s: Syncline) -> Callable[[], str]:
        if key in "bhi":
            return lambda: verify_log(src, s)
        checks: dict[str, Callable[[], tuple[str, ...]]] = {}
        if key in "cg":
            rep = s.replica_dsn
            checks["replica"] = lambda: pg_checksum(rep)
        if key in "cgl":
            duck = base / key / "wh.duckdb"
            checks["warehouse"] = lambda: duck_checksum(duck)
        if key in "eg":
            url = redis_url(2 * r + (key == "g"))
            checks["cache"] = lambda: redis_checksum(url)
        if key in "fg":
            idx = base / key / "index"
            checks["search"] = lambda: tantivy_checksum(idx)
        if key == "j":
            lk = base / key / "lake"
            checks["lake"] = lambda: lake_checksum(lk)
        if key == "k":
            ice = base / key / "iceberg"
            checks["iceberg"] = lambda: iceberg_checksum(ice)
        return lambda: verify_all(src, checks)

    for key in rnd.order:
        if key in rnd.results:  # could not be primed
            continue
        load = quiet(args, f"round {r + 1}: ({key}) {CONSUMERS[key]}")
        if key == "a":
            res = run_recvlogical(cluster, f"src_{tag}", f"a_{tag}", endpos, changes, args.timeout, "a")
        elif key == "d":
            res = run_native(
                cluster, f"src_{tag}", f"native_{tag}", f"d_{tag}", endpos, changes, args.timeout
            )
        else:
            s = made[key]
            res = run_syncline(
                s,
                endpos,
                changes,
                args.timeout,
                key,
                CONSUMERS[key],
                checker(key, s),
                settle=("_compactor",) if key in "bhi" else (),
            )
            s.kill()
        res.title = CONSUMERS[key]
        res.load_before = load
        rnd.results[key] = res
        say(f"({key}) " + (f"{res.seconds:.1f} s, {fmt_rate(res.rate)}/s" if res.ok else check_text(res)))
        drop_slot(src, f"{key}_{tag}")
    return rnd


def verify_all(source_dsn: str, checks: dict[str, Callable[[], tuple[str, ...]]]) -> str:
    """Every view equal to the source (count, sum and md5 over all rows), else Mismatch."""
    want = pg_checksum(source_dsn)
    got = {name: check() for name, check in checks.items()}
    wrong = [name for name, c in got.items() if c != want]
    if wrong:
        text = "; ".join(f"{n} has {describe(got[n])}" for n in wrong)
        raise Mismatch(f"{text} (source: {describe(want)})", wrong)
    return f"{'every view' if len(got) > 1 else 'view'} equal to the source ({describe(want)})"


def big_round(
    cluster: PgCluster, work: Path, args: argparse.Namespace, r: int, pipes: list[Syncline]
) -> Round:
    """One ``--big-rows`` transaction into a fresh database: pg_recvlogical and syncline end
    to end (replica + DuckDB), in an order that alternates between rounds."""
    tag = f"big{r}"
    rnd = Round(r, ["big_a", "big"] if r % 2 == 0 else ["big", "big_a"])
    src = create_source(cluster, f"src_{tag}", procedures=False)
    cluster.psql(f"CREATE DATABASE replica_{tag}")
    sql(src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"a_{tag}",))
    s = Syncline(
        work / tag,
        src,
        f"s_{tag}",
        replica_dsn=cluster.dsn(f"replica_{tag}"),
        duckdb_path=work / tag / "wh.duckdb",
    )
    pipes.append(s)
    say(f"big round {r + 1}: priming")
    title = f"syncline end to end (replica + DuckDB), one {args.big_rows:,}-row transaction"
    try:
        s.prime()
    except Exception as e:
        rnd.results["big"] = Result("big", title, args.big_rows, error=f"priming: {str(e)[:300]}")
    start = parse_lsn(str(sql(src, "SELECT pg_current_wal_insert_lsn()::text")[0][0]))
    sql(src, "INSERT INTO bench SELECT g, md5(g::text), 0 FROM generate_series(1, %s) g", (args.big_rows,))
    endpos = end_position(src)
    rnd.workload["wal_bytes"] = endpos - start
    rep, duck = cluster.dsn(f"replica_{tag}"), work / tag / "wh.duckdb"
    for key in rnd.order:
        if key in rnd.results:
            continue
        load = quiet(args, f"big round {r + 1}: ({key})")
        if key == "big_a":
            res = run_recvlogical(cluster, f"src_{tag}", f"a_{tag}", endpos, args.big_rows, args.timeout, key)
            drop_slot(src, f"a_{tag}")
        else:
            res = run_syncline(
                s,
                endpos,
                args.big_rows,
                args.timeout,
                key,
                title,
                lambda: verify_all(
                    src, {"replica": lambda: pg_checksum(rep), "warehouse": lambda: duck_checksum(duck)}
                ),
            )
            s.kill()
            drop_slot(src, f"s_{tag}")
        res.load_before = load
        rnd.results[key] = res
        say(f"({key}) " + (f"{res.seconds:.1f} s" if res.ok else check_text(res)))
    return rnd


# -- statistics -----------------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    """:func:`statistics.median`, None for no values."""
    return statistics.median(xs) if xs else None


@dataclass
class Series:
    """One consumer over every round."""

    key: str
    runs: list[Result]

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def rates(self) -> list[float]:
        return [r.rate for r in self.runs if r.rate]

    def median_rate(self) -> float | None:
        return median(self.rates())

    def spread(self) -> str:
        rates = self.rates()
        if not rates:
            return "-"
        m = median(rates) or 1.0
        half = (max(rates) - min(rates)) / 2 / m * 100
        return f"{fmt_rate(min(rates))} to {fmt_rate(max(rates))} (±{half:.0f} %)"

    def representative(self) -> Result:
        """The run with the median time (for the per-process table)."""
        good = sorted((r for r in self.runs if r.ok and r.seconds), key=lambda r: r.seconds or 0.0)
        return good[len(good) // 2] if good else self.runs[0]

    def view_rates(self, name: str) -> list[float]:
        return [r.changes / r.extra[name] for r in self.runs if r.ok and r.extra.get(name)]


def ratios(rounds: list[Round], key: str, base: str, view: str | None = None) -> list[float]:
    """Per round: ``key``'s rate (or one of its views') over ``base``'s rate in the same round."""
    out = []
    for rnd in rounds:
        r, b = rnd.results.get(key), rnd.results.get(base)
        if r is None or b is None or not r.ok or not b.rate:
            continue
        rate = r.changes / r.extra[view] if view else r.rate
        if view and not r.extra.get(view):
            continue
        if rate:
            out.append(rate / b.rate)
    return out


def fmt_ratio(xs: list[float]) -> str:
    m = median(xs)
    if m is None:
        return "-"
    return (
        f"{m * 100:.1f} % ({min(xs) * 100:.0f} to {max(xs) * 100:.0f} %)"
        if len(xs) > 1
        else f"{m * 100:.1f} %"
    )


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


def check_text(r: Result) -> str:
    if r.error:
        return f"FAILED: {r.error}"
    if r.mismatch:
        return f"**WRONG RESULT**: {r.mismatch}"
    return r.verified


def verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher else value <= target
    return "**met**" if ok else "**missed**"


# -- the report -----------------------------------------------------------------------------


def build_report(
    args: argparse.Namespace, info: dict[str, str], rounds: list[Round], bigs: list[Round], command: str
) -> str:
    keys = [k for k in CONSUMERS if any(k in rnd.results for rnd in rounds)]
    series = {k: Series(k, [rnd.results[k] for rnd in rounds if k in rnd.results]) for k in keys}
    big = Series("big", [b.results["big"] for b in bigs if "big" in b.results])
    big_a = Series("big_a", [b.results["big_a"] for b in bigs if "big_a" in b.results])
    all_runs = [r for rnd in rounds + bigs for r in rnd.results.values()]
    failed = [r for r in all_runs if not r.ok]
    n = args.rows
    wal = median([rnd.workload["wal_bytes"] for rnd in rounds if "wal_bytes" in rnd.workload]) or 0
    settings = (
        "durable (PostgreSQL's defaults: fsync, synchronous_commit, full_page_writes on)"
        if args.durable
        else ("fast (pgcluster's test defaults: fsync, synchronous_commit, full_page_writes off)")
    )
    L = [
        "# Benchmarks" + (" (durable settings)" if args.durable else ""),
        "",
        f"Written by `bench/run.py` on {info['date']}; command: `{command}`.",
        f"{len(rounds)} rounds of {2 * n:,} row changes, consumers in rotated order; "
        f"{len(bigs)} rounds of one {args.big_rows:,}-row transaction. Cluster settings: {settings}.",
        "",
        (
            f"**{len(failed)} of {len(all_runs)} runs FAILED** (error or wrong content): the figures below"
            " do not hold. " + "; ".join(f"({r.key}) {check_text(r)}" for r in failed[:5])
            if failed
            else f"Every one of the {len(all_runs)} runs was checked against the source and was equal."
        ),
        "",
        "Figures are medians over the rounds; ranges are the lowest and highest. A ratio is computed",
        "per round (both consumers drained the same WAL in that round), then its median is taken.",
        "",
        "## Targets (issue 12)",
        "",
        "| target | measured (median, range) | |",
        "|---|---:|---|",
    ]

    def target(what: str, xs: list[float], goal: float, unit: str = "ratio") -> str:
        m = median(xs)
        shown = fmt_ratio(xs) if unit == "ratio" else (f"{fmt_rate(m)}/s" if m else "-")
        return f"| {what} | {shown} | {verdict(m, goal)} |"

    rss = [r.sampler.peak_tree_mb() for r in big.runs if r.ok and r.sampler is not None]
    rss_med = median(rss)
    L += [
        target("(g) all four views ≥ 50 % of (a)", ratios(rounds, "g", "a"), 0.50),
        target("replica in (c) ≥ 100 % of native replication (d)", ratios(rounds, "c", "d", "replica"), 1.0),
        target("(e) Redis ≥ 90 % of (a)", ratios(rounds, "e", "a"), 0.90),
        target("DuckDB in (c) ≥ 60 % of (a)", ratios(rounds, "c", "a", "warehouse"), 0.60),
        target(
            "(f) tantivy ≥ 40,000 changes/s", series["f"].rates() if "f" in series else [], 40_000, "rate"
        ),
        f"| peak RSS of the `syncline run` tree ≤ 250 MB through one {args.big_rows:,}-row transaction |"
        + (
            f" {rss_med:,.0f} MB ({min(rss):,.0f} to {max(rss):,.0f}) |"
            f" {verdict(rss_med, 250, higher=False)} |"
            if rss_med
            else " - | not measured |"
        ),
        "",
        "The lag targets are measured by `bench/lag.py` (docs/benchmarks-lag.md), the snapshot"
        " ratio by `bench/snapshot.py` (docs/benchmarks-snapshot.md); `make bench` runs all three."
        " Where the time goes, per process: `bench/run.py --profile DIR` (py-spy; docs/profiles/).",
        "",
        "## Results",
        "",
        "| consumer | row changes/s (median) | range | vs (a) | vs (d) | runs | checks |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for k, s in series.items():
        per_run = " / ".join(
            f"{fmt_rate(rnd.results[k].rate) if rnd.results[k].ok else 'FAILED'} (#{rnd.order.index(k) + 1})"
            for rnd in rounds
            if k in rnd.results and k in rnd.order
        )
        checks = f"{sum(r.ok for r in s.runs)}/{len(s.runs)} equal" if s.runs else "-"
        L.append(
            f"| ({k}) {CONSUMERS[k]} | {fmt_rate(s.median_rate())} | {s.spread()} |"
            f" {fmt_ratio(ratios(rounds, k, 'a'))} | {fmt_ratio(ratios(rounds, k, 'd'))} |"
            f" {per_run} | {checks} |"
        )
        if k in "bcefghi":
            names = ["capture"] + (
                [] if k in "bhi" else sorted({n for r in s.runs for n in r.extra} - {"capture"})
            )
            for name in names:
                rates = s.view_rates(name)
                what = "log received everything" if name == "capture" else f"view `{name}` caught up"
                L.append(
                    f"| ({k}) … {what} | {fmt_rate(median(rates))} |"
                    f" {fmt_rate(min(rates)) if rates else '-'} to {fmt_rate(max(rates)) if rates else '-'} |"
                    f" {fmt_ratio(ratios(rounds, k, 'a', name))} |"
                    f" {fmt_ratio(ratios(rounds, k, 'd', name))} | | |"
                )
    L += [
        "",
        "*runs*: each round's rate, with the consumer's place in that round's order (#1 drained the",
        "WAL first). *checks*: runs whose content equalled the source (row count, sum, md5 over all rows).",
        "",
    ]
    if big.runs or big_a.runs:
        bw = median([b.workload["wal_bytes"] for b in bigs if "wal_bytes" in b.workload]) or 0
        L += [
            f"## One {args.big_rows:,}-row transaction",
            "",
            f"A fresh source database per round; one `INSERT … SELECT generate_series(1, {args.big_rows})`"
            f" ({bw / MB:,.0f} MB of WAL). It exceeds `logical_decoding_work_mem`: the server streams it to",
            "syncline in protocol 2 and spills it to disk for pg_recvlogical.",
            "",
            "| consumer | row changes/s (median) | range | peak RSS of the tree (MB) | checks |",
            "|---|---:|---:|---:|---|",
            f"| (a) pg_recvlogical | {fmt_rate(big_a.median_rate())} | {big_a.spread()} | - |"
            f" {sum(r.ok for r in big_a.runs)}/{len(big_a.runs)} reached --endpos |",
            f"| syncline end to end (replica + DuckDB) | {fmt_rate(big.median_rate())} | {big.spread()} |"
            f" {', '.join(f'{x:,.0f}' for x in rss) or '-'} |"
            f" {sum(r.ok for r in big.runs)}/{len(big.runs)} equal |",
            "",
        ]
        rep = big.representative() if big.runs else None
        if rep is not None and rep.sampler is not None and rep.ok:
            top = max(rep.sampler.ours(), key=lambda p: p.hwm_kb)
            L += [
                f"Median run: peak RSS of the whole tree (sum of VmRSS, sampled every 0.1 s)"
                f" {rep.sampler.peak_tree_mb():,.0f} MB; sum of each process's own peak (VmHWM)"
                f" {rep.sampler.sum_hwm_mb():,.0f} MB; largest single process: {top.label},"
                f" {top.hwm_kb / 1024:,.0f} MB.",
                "",
            ]
    L += [
        "## Where the time goes: processes (the median run of each consumer)",
        "",
        "From /proc: peak RSS (`VmHWM`) and CPU time (user + system) of every process of the",
        "consumer. `walsender`, `apply worker` and `replica backend` are PostgreSQL processes (CPU only).",
        "",
        "| run | wall (s) | process | peak RSS (MB) | CPU (s) | CPU / wall |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for key, s in [*series.items(), ("big_a", big_a), ("big", big)]:
        if not s.runs:
            continue
        r = s.representative()
        if r.sampler is None or not r.seconds:
            continue
        by = r.sampler.by_label()
        for label, (mb, cpu) in sorted(by.items(), key=lambda kv: -kv[1][1]):
            rss_txt = f"{mb:,.0f}" if mb >= 0 else "-"
            L.append(
                f"| {key} | {r.seconds:.1f} | {label} | {rss_txt} | {cpu:.1f} |"
                f" {cpu / r.seconds * 100:.0f} % |"
            )
        total = sum(c for _m, c in by.values())
        L.append(f"| {key} | | **all of the above** | | {total:.1f} | {total / r.seconds:.2f} cores |")
    notes = observations(rounds, series)
    if notes:
        L += ["", "## Observations", "", *[f"- {x}" for x in notes]]
    n_tx = -(-n // args.insert_batch) + -(-n // args.update_batch)
    L += [
        "",
        "## Workload and method",
        "",
        f"Table `bench(id int primary key, v text, n int)`: {n:,} inserts ({args.insert_batch:,} rows per",
        f"transaction), then {n:,} single-row `UPDATE` statements ({args.update_batch} per transaction),",
        f"i.e. **{2 * n:,} row changes** in {n_tx:,} transactions, {wal / MB:,.0f} MB of WAL (median).",
        "",
        "Each round uses a fresh source database. Every consumer's slot is created *before* the",
        "workload (syncline's by a first `syncline run` that took its empty snapshot, created its",
        "views and was stopped); afterwards each consumer drains the same WAL alone, one after the",
        "other, in the round's order (the first round's order rotated by the round's number), timed",
        "from its start until it had everything up to the end position:",
        "",
        "- **(a)** `pg_recvlogical` on a pgoutput slot (`proto_version=1`, same publication) writing",
        "  to `/dev/null`, with `--endpos`: the server's decoding and sending;",
        "- **(b)** `syncline run` with no views (capture, plus the internal compactor that always runs):",
        "  until the embedded log's durable `received_lsn` ≥ the end position; checked through the",
        "  compacted log;",
        "- **(c)** `syncline run` with views `replica` (PostgreSQL, another database of the same cluster)",
        "  and `warehouse` (DuckDB): until each view applied everything;",
        "- **(d)** PostgreSQL's own logical replication: `CREATE SUBSCRIPTION … WITH (create_slot = false,",
        "  copy_data = false)` on the pre-created slot, into another database of the same cluster;",
        "- **(e)** `syncline run` with one Redis view (a hash per row) on a private `redis-server`;",
        '- **(f)** `syncline run` with one tantivy view (`text_fields = ["v"]`);',
        "- **(j)** `syncline run` with one DuckLake view (SQLite catalog, Parquet files under `data_path`);",
        "- **(k)** `syncline run` with one Iceberg view (pyiceberg's SQL catalog on SQLite, Parquet files",
        "  under `warehouse`; the kind's default batch settings), read back by DuckDB's iceberg extension;",
        "- **(g)** `syncline run` with all four views at once.",
        "",
        "Times include start-up (for syncline about a second). Every run's result is checked against",
        "the source: row count, sum(n) and an md5 over all rows, read back from every view (the",
        "replica and the subscriber by SQL, DuckDB by SQL, every Redis hash, every tantivy document);",
        "a run that fails its check fails the benchmark (exit 1).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items() if k != "date"],
        "- cluster settings, the same for all consumers: pgcluster's defaults"
        + (
            " with " + ", ".join(f"`{k} = {v}`" for k, v in DURABLE.items())
            if args.durable
            else " (`fsync`, `synchronous_commit`, `full_page_writes` off, …)"
        )
        + " plus "
        + ", ".join(f"`{k} = {v}`" for k, v in BENCH_SETTINGS.items()),
        "",
    ]
    return "\n".join(L)


def observations(rounds: list[Round], series: dict[str, Series]) -> list[str]:
    out: list[str] = []
    a = series.get("a")
    if a is not None and a.rates():
        firsts = [
            rnd.results["a"].rate
            for rnd in rounds
            if rnd.order and rnd.order[0] == "a" and rnd.results["a"].rate
        ]
        later = [
            rnd.results["a"].rate
            for rnd in rounds
            if rnd.order and rnd.order[0] != "a" and rnd.results["a"].rate
        ]
        if firsts and later:
            out.append(
                f"(a) drained first: {fmt_rate(median(firsts))}/s;"
                f" later in the round: {fmt_rate(median(later))}/s."
            )
    for key in ("a", "b"):
        s = series.get(key)
        if s is None:
            continue
        cpu = [r.sampler.by_label().get("walsender", (0, 0.0))[1] for r in s.runs if r.ok and r.sampler]
        if cpu:
            out.append(f"({key}): the walsender used {median(cpu):.1f} s of CPU (median) to serve it.")
    for key, s in series.items():
        loads = [x for x in (r.others() for r in s.runs) if x is not None]
        if loads and max(loads) >= 0.3:
            out.append(
                f"({key}) shared the machine in some round: other processes used up to {max(loads):.1f}"
                " cores during the run."
            )
    return out


def print_summary(rounds: list[Round], bigs: list[Round]) -> None:
    print()
    for rnd in rounds + bigs:
        for k in rnd.order:
            r = rnd.results.get(k)
            if r is None:
                continue
            secs = f"{r.seconds:.1f}" if r.seconds else "FAILED"
            print(f"round {rnd.index + 1} {k:<6} {secs:>7} s {fmt_rate(r.rate):>10}/s  {check_text(r)}")
    for k in CONSUMERS:
        xs = ratios(rounds, k, "a")
        if xs:
            print(f"({k}) / (a): {fmt_ratio(xs)}")


# -- main -----------------------------------------------------------------------------------


def nats_group(work: Path, n: int) -> list[Any]:
    """``n`` private JetStream servers on this machine, clustered when ``n`` > 1."""
    from syncline.testing.natsserver import nats_cluster

    return list(nats_cluster(work, n))


def nats_version() -> str:
    from syncline.testing.natsserver import nats_server_binary

    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout
    return out.strip().removeprefix("nats-server: ")


def write_profiles(out: Path, rounds: list[Round], command: str) -> None:
    """Where each process of each profiled run spent its busy time (``summary.md`` in
    ``out``, beside the collapsed stacks it is computed from)."""
    lines = [
        "# Where the time goes (py-spy)",
        "",
        f"Command: `{command}`. Shares are of the samples in which the process was busy"
        " (idle waits left out); *self*: the function itself, *total*: it or what it called.",
        "",
    ]
    for rnd in rounds:
        for key in rnd.order:
            res = rnd.results.get(key)
            if res is None or not res.profiles:
                continue
            lines += [f"## ({key}) {res.title}, round {rnd.index + 1}", ""]
            for proc, path in sorted(res.profiles.items()):
                rows = summarize(path) if path.exists() else []
                lines += [f"### {proc} (`{path.name}`)", "", "| function | self | total |", "|---|---:|---:|"]
                lines += [f"| `{f}` | {a:.0%} | {b:.0%} |" for f, a, b in rows]
                lines.append("")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    say(f"wrote {out / 'summary.md'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=250_000, help="rows inserted, then updated (default 250k)")
    ap.add_argument("--big-rows", type=int, default=2_000_000, help="rows of the single big transaction")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each consumer once per round; default 3)")
    ap.add_argument("--insert-batch", type=int, default=1000, help="rows per insert transaction")
    ap.add_argument("--update-batch", type=int, default=100, help="updates per transaction")
    ap.add_argument(
        "--only",
        default="a,b,c,d,e,f,g,h,i,j,k,l,big",
        help="consumers to run (default a,b,c,d,e,f,g,h,i,j,k,l,big)",
    )
    ap.add_argument("--durable", action="store_true", help="PostgreSQL with fsync/synchronous_commit on")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per consumer")
    ap.add_argument("--output", default=None, help="the report (default docs/benchmarks[-durable].md)")
    ap.add_argument("--no-report", action="store_true", help="print only, do not write the report")
    ap.add_argument(
        "--quiet-wait", type=float, default=20, help="seconds to wait for an idle machine before each run"
    )
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="attach py-spy to every syncline process and write collapsed stacks and a summary to DIR"
        " (slows the runs: for finding where time goes, not for figures)",
    )
    ap.add_argument(
        "--native",
        action="store_true",
        help="with --profile: also sample native frames and every Python thread (what the Rust and"
        " C libraries do, e.g. tantivy's JSON parsing; blocks each process while sampling)",
    )
    args = ap.parse_args()
    global PROFILE_DIR, PROFILE_NATIVE
    PROFILE_NATIVE = bool(args.native)
    PROFILE_DIR = Path(args.profile).resolve() if args.profile else None
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    only = args.only.split(",")
    keys = [k for k in CONSUMERS if k in only]
    output = args.output or str(
        ROOT / "docs" / ("benchmarks-durable.md" if args.durable else "benchmarks.md")
    )
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])

    work = Path(tempfile.mkdtemp(prefix="syncline-bench-"))
    say(f"working directory {work}")
    cluster = PgCluster(settings={**BENCH_SETTINGS, **(DURABLE if args.durable else {})})
    rounds: list[Round] = []
    bigs: list[Round] = []
    pipes: list[Syncline] = []
    servers: list[Any] = []
    failed = False
    try:
        cluster.init()
        cluster.start()
        info = machine(cluster)
        info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        say(f"cluster on port {cluster.port}, PostgreSQL {info['PostgreSQL']}")
        from syncline.testing.harness import RedisServer

        redis_server = RedisServer(work / "redis", start=bool(set(keys) & {"e", "g"}))
        servers.append(redis_server)
        redis_pid = redis_server.proc.pid if redis_server.proc is not None else 0
        if redis_pid:
            info["Redis"] = redis_version()
        base_url = redis_server.url.rsplit("/", 1)[0]
        nats_urls: dict[str, list[str]] = {}
        nats_pids: dict[str, list[int]] = {}
        for key, n in (("h", 1), ("i", 3)):
            if key in keys:
                group = nats_group(work / f"nats-{key}", n)
                servers += group
                nats_urls[key] = [g.url for g in group]
                nats_pids[key] = [g.proc.pid for g in group if g.proc is not None]
        if nats_urls:
            info["nats-server"] = nats_version()

        for r in range(args.rounds):
            rounds.append(
                run_round(
                    cluster,
                    work,
                    args,
                    r,
                    keys,
                    lambda db: f"{base_url}/{db}",
                    redis_pid,
                    pipes,
                    nats_urls,
                    nats_pids,
                )
            )
            for p in pipes:
                p.kill()
            pipes.clear()
        if "big" in only:
            for r in range(args.rounds):
                bigs.append(big_round(cluster, work, args, r, pipes))
                for p in pipes:
                    p.kill()
                pipes.clear()
    except BaseException:
        failed = True
        raise
    finally:
        for p in pipes:
            p.kill()
        for srv in servers:
            srv.stop()
        cluster.cleanup()
        bad = any(not r.ok for rnd in rounds + bigs for r in rnd.results.values())
        if args.keep or failed or bad:
            say(f"kept {work} (syncline logs: */*/run*.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print_summary(rounds, bigs)
    if PROFILE_DIR is not None:
        write_profiles(PROFILE_DIR, rounds, command)
    if not args.no_report:
        text = build_report(args, info, rounds, bigs, command)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
        say(f"wrote {output}")
    ok = all(r.ok for rnd in rounds + bigs for r in rnd.results.values())
    if not ok:
        say("FAILED: a run failed or its content differed from the source (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
