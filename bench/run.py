"""syncline benchmark: one private PostgreSQL cluster, one workload, four consumers.

Workload on ``bench(id int primary key, v text, n int)``: ``--rows`` inserts (1,000 rows per
transaction), then ``--rows`` single-row UPDATE statements (100 per transaction), all
generated server side. Every consumer's slot exists before the workload, so each drains
the same WAL afterwards, one after the other:

  (a) ``pg_recvlogical`` (pgoutput, protocol 1, to /dev/null): the physical limit;
  (b) syncline capture into the embedded log (no views): until ``received_lsn`` >= end;
  (c) syncline end to end, views ``replica`` (PostgreSQL) and ``warehouse`` (DuckDB);
  (d) PostgreSQL's own logical replication (a subscription on a pre-created slot);
  (e) syncline end to end, one Redis view (a private redis-server, no persistence);
  (f) syncline end to end, one tantivy (search) view.

Then a single ``--big-rows`` transaction end to end, for memory (and (a) for reference).
Peak RSS and CPU time of every syncline process (and of the walsenders) are sampled from
/proc. Before each run the script waits (``--quiet-wait``) for an idle machine, and it
reports how much CPU other processes took during each run. Results are printed and written
to ``docs/benchmarks.md``.

    .venv/bin/python bench/run.py                 # full size (make bench)
    .venv/bin/python bench/run.py --rows 50000 --big-rows 200000 --no-report   # quick
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from procs import Sampler, machine_busy, syncline_role
from syncline.config import load_config
from syncline.core.errors import LogError
from syncline.core.lsn import format_lsn, parse_lsn
from syncline.log.embedded.store import connect, get_meta
from syncline.runtime.status import views_caught_up
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

    con = duckdb.connect(str(path), read_only=True)
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

    def view_ok(self, name: str) -> bool:
        return (
            self.seconds is not None and self.error is None and name in self.extra and name not in self.wrong
        )

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


def rate_of(results: dict[str, Result], key: str, seconds: float | None = None) -> float | None:
    r = results.get(key)
    if r is None or not r.ok:
        return None
    s = seconds if seconds is not None else r.seconds
    return r.changes / s if s else None


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
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "log"
        lines = [
            "[source]",
            f'dsn = "{source_dsn}"',
            'tables = ["public.bench"]',
            f'slot = "{slot}"',
            f'publication = "{PUB}"',
            "[log]",
            f'path = "{self.log_path}"',
        ]
        self.roles: dict[str, str] = {}
        self.replica_db = replica_dsn.rsplit("/", 1)[1] if replica_dsn else ""
        if replica_dsn:
            lines += ["[views.replica]", 'kind = "postgres"', f'dsn = "{replica_dsn}"']
            self.roles["*"] = "replica"
        if duckdb_path:
            lines += ["[views.warehouse]", 'kind = "duckdb"', f'path = "{duckdb_path}"']
            self.roles[duckdb_path.name] = "warehouse"
        if redis_url:
            lines += ["[views.cache]", 'kind = "redis"', f'url = "{redis_url}"']
        if tantivy_path:
            lines += [
                "[views.search]",
                'kind = "tantivy"',
                f'path = "{tantivy_path}"',
                'text_fields = ["v"]',
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
    try:
        done = s.wait(endpos, timeout, t0=t0)
        res.seconds = time.monotonic() - t0
        res.extra = done
        sampler.stop()
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
    try:
        got = log_checksum(s.log_path)
    except Exception as e:  # the compacted log's format is syncline's business: report, don't fail
        return f"{received}; content not checked ({type(e).__name__}: {e})"
    if got != want:
        raise Mismatch(f"the compacted log has {describe(got)} (source: {describe(want)})", ["log"])
    return f"{received}; compacted log equal to the source ({describe(want)})"


class Mismatch(Exception):
    def __init__(self, text: str, wrong: list[str]) -> None:
        super().__init__(text)
        self.wrong = wrong


def describe(c: tuple[str, ...]) -> str:
    return f"{int(c[0]):,} rows, sum(n) {int(c[1]):,}, md5 {c[2][:8]}"


def verify_views(source_dsn: str, replica_dsn: str, duckdb_path: Path) -> str:
    """Both views equal to the source (count, sum and md5 over all rows), else Mismatch."""
    want = pg_checksum(source_dsn)
    got = {"replica": pg_checksum(replica_dsn), "warehouse": duck_checksum(duckdb_path)}
    wrong = [name for name, c in got.items() if c != want]
    if wrong:
        text = "; ".join(f"{n} has {describe(got[n])}" for n in wrong)
        raise Mismatch(f"{text} (source: {describe(want)})", wrong)
    return f"both views equal to the source ({describe(want)})"


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


def verify_one(source_dsn: str, name: str, checksum: Callable[[], tuple[str, ...]]) -> str:
    want = pg_checksum(source_dsn)
    try:
        got = checksum()
    except Exception as e:  # the view's layout is its business: report, don't fail
        return f"content not checked ({type(e).__name__}: {str(e)[:200]})"
    if got != want:
        raise Mismatch(f"{name} has {describe(got)} (source: {describe(want)})", [name])
    return f"view equal to the source ({describe(want)})"


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


# -- the report -----------------------------------------------------------------------------


VIEW_TARGETS = (
    ("e", "Redis view end to end", 100_000),
    ("f", "tantivy view end to end", 50_000),
)
"""(run, what, row changes/s the issue asks for)."""


def base_of(results: dict[str, Result], key: str) -> str:
    """The (a) run a run is compared with: (f) may have a workload, and an (a), of its own."""
    return "f_a" if key in ("f", "f_a") and "f_a" in results else "a"


def target_row(results: dict[str, Result], key: str, what: str, floor: int, a: float | None) -> str:
    a = rate_of(results, base_of(results, key)) or a
    r = results.get(key)
    if r is None:
        return f"| ({key}) {what} ≥ {floor:,} row changes/s | - | not measured |"
    rate = r.rate
    note = "" if r.ok else (" (run failed)" if r.error else " (wrong result)")
    shown = f"{fmt_rate(rate)}/s ({fmt_pct(ratio(rate, a))} of ({base_of(results, key)}))" if rate else "-"
    return f"| ({key}) {what} ≥ {floor:,} row changes/s | {shown} | {verdict(rate, floor)}{note} |"


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


def fmt_pct(x: float | None) -> str:
    return f"{x * 100:.0f} %" if x is not None else "-"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher else value <= target
    return "**met**" if ok else "**missed**"


def check_text(r: Result) -> str:
    if r.error:
        return f"FAILED: {r.error}"
    if r.mismatch:
        return f"**WRONG RESULT**: {r.mismatch}"
    return r.verified


def build_report(
    args: argparse.Namespace,
    info: dict[str, str],
    results: dict[str, Result],
    workload: dict[str, float],
    command: str,
) -> str:
    a, b, c, d = (rate_of(results, k) for k in "abcd")
    rc = results.get("c")
    replica = None
    if rc is not None and rc.view_ok("replica"):
        replica = rc.changes / rc.extra["replica"]
    big = results.get("big")
    timed_big = big is not None and big.seconds is not None and big.sampler is not None
    big_rss = big.sampler.peak_tree_mb() if timed_big and big and big.sampler else None
    n = args.rows
    n_tx = -(-n // args.insert_batch) + -(-n // args.update_batch)
    rss_row = (
        f"| peak RSS ≤ 300 MB through one {args.big_rows:,}-row transaction (whole `syncline run` tree) |"
        f" {big_rss:,.0f} MB | {verdict(big_rss, 300, higher=False)} |"
        if big_rss is not None
        else f"| peak RSS ≤ 300 MB through one {args.big_rows:,}-row transaction | - | not measured |"
    )
    c_note = ""
    if rc is not None and not rc.ok:
        c_note = " (run failed)" if rc.error else " (a view's result was wrong)"
    L: list[str] = [
        "# Benchmarks",
        "",
        f"Written by `bench/run.py` on {info['date']}; command: `{command}`",
        f"({2 * n:,} row changes; machine and method below).",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| (b) capture ≥ 60 % of (a) | {fmt_pct(ratio(b, a))} | {verdict(ratio(b, a), 0.60)} |",
        f"| (c) end to end ≥ 35 % of (a) | {fmt_pct(ratio(c, a))} | {verdict(ratio(c, a), 0.35)}{c_note} |",
        f"| replica (c) ≥ PostgreSQL logical replication (d) | {fmt_pct(ratio(replica, d))} of (d) |"
        f" {verdict(ratio(replica, d), 1.0)} |",
        rss_row,
        *[target_row(results, k, what, floor, a) for k, what, floor in VIEW_TARGETS],
        "",
        "## Results",
        "",
        "| consumer | time (s) | row changes/s | vs (a) | others' load | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for k in ("a", "b", "c", "d", "e", "f_a", "f"):
        r = results.get(k)
        if r is None:
            continue
        t = f"{r.seconds:.1f}" if r.seconds else "-"
        load = f"{r.others():.1f} cores" if r.others() is not None else "-"
        vs = fmt_pct(ratio(r.rate, rate_of(results, base_of(results, k))))
        L.append(f"| ({k}) {r.title} | {t} | {fmt_rate(r.rate)} | {vs} | {load} | {check_text(r)} |")
        if k in ("b", "c", "e", "f") and r.seconds is not None and not r.error:
            for name, secs in r.extra.items():
                if k == "b" and name == "capture":
                    continue
                good = name == "capture" or r.view_ok(name)
                rr = r.changes / secs if secs and good else None
                what = "log received everything" if name == "capture" else f"view `{name}` caught up"
                L.append(
                    f"| ({k}) … {what} | {secs:.1f} | {fmt_rate(rr)} |"
                    f" {fmt_pct(ratio(rr, rate_of(results, base_of(results, k))))} | |"
                    + (" |" if good else " wrong result, not counted |")
                )
    L += [
        "",
        "*others' load*: CPU used during the run by processes not part of the consumer (other",
        "work on the machine, the benchmark's own polling), in cores; the machine has",
        f"{info['cores']}. Each run waited (up to {args.quiet_wait:.0f} s) for an idle machine first.",
        "",
    ]
    if big is not None:
        ab = results.get("big_a")
        L += [
            f"## One {args.big_rows:,}-row transaction",
            "",
            "A fresh source database and pipeline with both views; one"
            f" `INSERT … SELECT generate_series(1, {args.big_rows})`",
            f"({workload.get('big_wal_bytes', 0) / MB:,.0f} MB of WAL; it exceeds"
            " `logical_decoding_work_mem`, so the server streams it to syncline"
            " in protocol 2, and spills it to disk for pg_recvlogical).",
            "",
            "| consumer | time (s) | row changes/s | result |",
            "|---|---:|---:|---|",
        ]
        if ab is not None:
            t = f"{ab.seconds:.1f}" if ab.seconds else "-"
            L.append(f"| (a) pg_recvlogical | {t} | {fmt_rate(ab.rate)} | {check_text(ab)} |")
        t = f"{big.seconds:.1f}" if big.seconds else "-"
        L.append(f"| (c) syncline end to end | {t} | {fmt_rate(big.rate)} | {check_text(big)} |")
        if big.seconds is not None and not big.error:
            for name, secs in big.extra.items():
                good = name == "capture" or big.view_ok(name)
                rr = big.changes / secs if secs and good else None
                what = "log received everything" if name == "capture" else f"view `{name}` caught up"
                L.append(
                    f"| (c) … {what} | {secs:.1f} | {fmt_rate(rr)} |" + (" |" if good else " wrong result |")
                )
        if timed_big and big.sampler is not None:
            top = max(big.sampler.ours(), key=lambda p: p.hwm_kb)
            L += [
                "",
                f"Peak RSS of the whole `syncline run` process tree (sum of VmRSS, sampled every 0.1 s):"
                f" **{big.sampler.peak_tree_mb():,.0f} MB**; sum of each process's own peak (VmHWM, an upper"
                f" bound): {big.sampler.sum_hwm_mb():,.0f} MB; largest single process: {top.label},"
                f" {top.hwm_kb / 1024:,.0f} MB.",
            ]
        L.append("")
    L += [
        "## Where the time goes: processes",
        "",
        "Per run, from /proc: peak RSS (`VmHWM`) and CPU time (user + system) of every process of the",
        "consumer. `walsender`, `apply worker` and `replica backend` (the PostgreSQL backend the",
        "replica view writes through) are PostgreSQL processes: CPU only. A process busy for about",
        "the whole run is that consumer's bottleneck; a sum near the number of cores means the",
        "machine was saturated.",
        "",
        "| run | wall (s) | process | peak RSS (MB) | CPU (s) | CPU / wall |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for key in ("a", "b", "c", "d", "e", "f_a", "f", "big_a", "big"):
        r = results.get(key)
        if r is None or r.sampler is None or not r.seconds:
            continue
        labels = sorted(r.sampler.by_label().items(), key=lambda kv: -kv[1][1])
        for label, (mb, cpu) in labels:
            rss = f"{mb:,.0f}" if mb >= 0 else "-"
            L.append(
                f"| {key} | {r.seconds:.1f} | {label} | {rss} | {cpu:.1f} | {cpu / r.seconds * 100:.0f} % |"
            )
        total = sum(cpu for _mb, cpu in r.sampler.by_label().values())
        L.append(f"| {key} | | **all of the above** | | {total:.1f} | {total / r.seconds:.2f} cores |")
    notes = observations(results)
    if notes:
        L += ["", "## Observations", "", *[f"- {x}" for x in notes]]
    L += [
        "",
        "## Workload and method",
        "",
        f"Table `bench(id int primary key, v text, n int)`: {n:,} inserts ({args.insert_batch:,} rows per",
        f"transaction, `INSERT … SELECT generate_series`), then {n:,} single-row `UPDATE` statements",
        f"({args.update_batch} per transaction: a PL/pgSQL procedure that commits every {args.update_batch}),"
        f" i.e. **{2 * n:,} row changes**",
        f"in {n_tx:,} transactions, {workload['wal_bytes'] / MB:,.0f} MB of WAL. The source itself took"
        f" {workload['insert_s']:.1f} s for the inserts and {workload['update_s']:.1f} s for the updates.",
        "",
        "Every consumer's slot was created *before* the workload (syncline's by a first `syncline run`",
        "that took its empty snapshot and was stopped); afterwards each consumer drained the same WAL",
        "alone, one after the other, timed from its start until it had everything up to the end",
        f"position {format_lsn(int(workload['endpos']))}:",
        "",
        "- **(a)** `pg_recvlogical` on a pgoutput slot (`proto_version=1`, same publication) writing",
        "  to `/dev/null`, with `--endpos`: the server's decoding and sending, the physical limit;",
        "- **(b)** `syncline run` with no views (capture, plus the internal compactor that always runs):",
        "  until the embedded log's durable `received_lsn` ≥ the end position;",
        "- **(c)** `syncline run` with both views (`replica`: PostgreSQL, another database of the same",
        "  cluster; `warehouse`: DuckDB): until `views_caught_up` for the end position (per-view times:",
        "  when each view had applied everything);",
        "- **(d)** PostgreSQL's own logical replication: `CREATE SUBSCRIPTION … WITH (create_slot = false,",
        "  copy_data = false)` on a slot created before the workload, into another database of the",
        "  same cluster: until the slot's `confirmed_flush_lsn` ≥ the end position;",
        "- **(e)** `syncline run` with one Redis view (`cache`, default options: a hash per row) on a",
        "  private `redis-server` (no persistence, same machine; its CPU is listed as `redis-server`):",
        "  until the view caught up; checked by reading every hash back;",
        '- **(f)** `syncline run` with one tantivy view (`search`, `text_fields = ["v"]`): until the',
        "  view caught up (its documents searchable); checked by reading every stored document back."
        + (
            f" Unless `--search-rows` is 0 it runs on a workload of its own, the same shape with"
            f" {args.search_rows:,} rows ({2 * args.search_rows:,} row changes), in another database,"
            " compared with a `pg_recvlogical` run on that workload (`f_a`), to keep `make bench` short."
            if args.search_rows and args.search_rows != args.rows
            else ""
        ),
        "",
        "Times include start-up (for syncline about a second: Python imports, spawning its processes).",
        "Results are checked afterwards against the source: row count, sum(n) and an md5 over all rows",
        "for (c) (both views) and (d), and for (b) the compacted log (after the timed part, the",
        "internal compactor is given time to finish); (a) must exit at `--endpos`.",
        "",
        "## Machine",
        "",
    ]
    L += [f"- {k}: {v}" for k, v in info.items() if k != "date"]
    L += [
        "- cluster settings, the same for all consumers: pgcluster's defaults (`fsync`,"
        " `synchronous_commit`, `full_page_writes` off, …) plus "
        + ", ".join(f"`{k} = {v}`" for k, v in BENCH_SETTINGS.items()),
        "",
    ]
    return "\n".join(L)


def observations(results: dict[str, Result]) -> list[str]:
    """Facts worth a sentence, computed from the measurements."""
    out: list[str] = []
    ra, rb = results.get("a"), results.get("b")

    def cpu(r: Result | None, label: str) -> float | None:
        if r is None or r.sampler is None:
            return None
        v = r.sampler.by_label().get(label)
        return v[1] if v else None

    if ra and rb and ra.rate and rb.rate and rb.rate > ra.rate:
        wa, wb = cpu(ra, "walsender"), cpu(rb, "walsender")
        extra = (
            f" Its walsender used {wa:.1f} s of CPU, against {wb:.1f} s for the same WAL when serving"
            " syncline: the server side is not a fixed cost, it depends on the client."
            if wa and wb
            else ""
        )
        out.append("(b) was faster than (a): pg_recvlogical is not a hard ceiling on this machine." + extra)
    for key in ("c", "big"):
        r = results.get(key)
        if r is None or r.sampler is None or not r.seconds:
            continue
        by = r.sampler.by_label()
        total = sum(c for _m, c in by.values())
        top = sorted(by.items(), key=lambda kv: -kv[1][1])[:3]
        out.append(
            f"({key}) used {total / r.seconds:.2f} cores on average; most CPU: "
            + ", ".join(f"{lab} {c:.1f} s" for lab, (_m, c) in top)
            + "."
        )
    for key, r in results.items():
        load = r.others()
        if load is not None and load >= 0.3:
            out.append(
                f"({key}) shared the machine: other processes used {load:.1f} of its cores on average"
                " during the run, so its time is inflated (run the benchmark again on a quiet machine)."
            )
    for key, r in results.items():
        if r.mismatch:
            out.append(f"({key}) finished, but {r.mismatch}: the view reported itself caught up.")
        elif r.error:
            out.append(f"({key}) failed: {r.error}")
    return out


def print_summary(results: dict[str, Result]) -> None:
    a = rate_of(results, "a")
    print()
    print(f"{'run':<6} {'seconds':>9} {'changes/s':>12} {'vs (a)':>7}  title")
    for k, r in results.items():
        secs = f"{r.seconds:.1f}" if r.seconds else "FAILED"
        base = rate_of(results, base_of(results, k))
        vs = fmt_pct(ratio(r.rate, base)) if k in ("a", "b", "c", "d", "e", "f", "f_a") else ""
        print(f"{k:<6} {secs:>9} {fmt_rate(r.rate):>12} {vs:>7}  {r.title}")
        print(f"       {check_text(r)}")
        others = r.others()
        print(
            f"       machine: {r.load_before:.1f} cores busy before;"
            + (
                f" {others:.1f} cores used by unwatched processes during the run"
                if others is not None
                else ""
            )
        )
        for name, s in r.extra.items():
            print(f"       {name} caught up after {s:.1f} s ({fmt_rate(r.changes / s if s else None)}/s)")
        if r.sampler is not None and r.sampler.ours():
            print(
                f"       peak RSS: tree {r.sampler.peak_tree_mb():.0f} MB (sampled),"
                f" sum of VmHWM {r.sampler.sum_hwm_mb():.0f} MB"
            )
        if r.sampler is not None:
            parts = [
                f"{lab} {cpu:.1f}s cpu" + (f"/{mb:.0f}MB" if mb >= 0 else "")
                for lab, (mb, cpu) in sorted(r.sampler.by_label().items())
            ]
            print("       " + ", ".join(parts))
    b, c, d = rate_of(results, "b"), rate_of(results, "c"), rate_of(results, "d")
    rc = results.get("c")
    replica = rc.changes / rc.extra["replica"] if rc and rc.view_ok("replica") else None
    print()
    print(f"(b)/(a) = {fmt_pct(ratio(b, a))}  (target ≥ 60 %)")
    print(f"(c)/(a) = {fmt_pct(ratio(c, a))}  (target ≥ 35 %)")
    print(f"replica (c)/(d) = {fmt_pct(ratio(replica, d))}  (target ≥ 100 %)")
    for k, what, floor in VIEW_TARGETS:
        rate = rate_of(results, k)
        a = rate_of(results, base_of(results, k))
        print(
            f"({k}) {what}: {fmt_rate(rate)} row changes/s, {fmt_pct(ratio(rate, a))} of (a)"
            f"  (target ≥ {floor:,})"
        )
    big = results.get("big")
    if big and big.seconds and big.sampler:
        print(f"peak RSS through the big transaction: {big.sampler.peak_tree_mb():.0f} MB (target ≤ 300 MB)")


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows inserted, then updated (default 1M)")
    ap.add_argument("--big-rows", type=int, default=2_000_000, help="rows of the single big transaction")
    ap.add_argument(
        "--search-rows",
        type=int,
        default=200_000,
        help="rows inserted, then updated, for the tantivy view (f), with its own (a); 0: --rows",
    )
    ap.add_argument("--insert-batch", type=int, default=1000, help="rows per insert transaction")
    ap.add_argument("--update-batch", type=int, default=100, help="updates per transaction")
    ap.add_argument("--only", default="a,b,c,d,e,f,big", help="consumers to run (default a,b,c,d,e,f,big)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per consumer")
    ap.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="the report")
    ap.add_argument("--no-report", action="store_true", help="print only, do not write the report")
    ap.add_argument(
        "--quiet-wait", type=float, default=20, help="seconds to wait for an idle machine before each run"
    )
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args()
    only = set(args.only.split(","))
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = shlex.join([python, os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])

    work = Path(tempfile.mkdtemp(prefix="syncline-bench-"))
    say(f"working directory {work}")
    cluster = PgCluster(settings=BENCH_SETTINGS)
    results: dict[str, Result] = {}
    workload: dict[str, float] = {}
    pipes: list[Syncline] = []
    servers: list[Any] = []
    failed = False
    try:
        cluster.init()
        cluster.start()
        info = machine(cluster)
        info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        say(f"cluster on port {cluster.port}, PostgreSQL {info['PostgreSQL']}")
        for db in ("bench_src", "bench_native", "bench_replica"):
            cluster.psql(f"CREATE DATABASE {db}")
        src = cluster.dsn("bench_src")
        cluster.psql(TABLE_DDL, "bench_src")
        cluster.psql(TABLE_DDL, "bench_native")
        cluster.psql(PROCEDURES, "bench_src")
        cluster.psql(
            f"CREATE PUBLICATION {PUB} FOR TABLE bench WITH (publish_via_partition_root = true)", "bench_src"
        )

        # slots first: every consumer drains the same WAL
        for slot in ("bench_recvlogical", "bench_native"):
            sql(src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        cap = Syncline(work / "capture", src, "bench_capture")
        e2e = Syncline(
            work / "e2e",
            src,
            "bench_e2e",
            replica_dsn=cluster.dsn("bench_replica"),
            duckdb_path=work / "e2e" / "wh.duckdb",
        )
        pipes += [cap, e2e]
        from syncline.testing.harness import RedisServer

        redis_server = RedisServer(work / "redis", start="e" in only)
        servers.append(redis_server)
        if redis_server.proc is not None:
            info["Redis"] = redis_version()
        cache = Syncline(work / "cache", src, "bench_cache", redis_url=redis_server.url)
        if redis_server.proc is not None:
            cache.others = [("redis-server", redis_server.proc.pid)]
        search = Syncline(work / "search", src, "bench_search", tantivy_path=work / "search" / "index")
        pipes += [cache, search]
        separate_search = bool(args.search_rows) and args.search_rows != args.rows
        for key, pipe, title in (("e", cache, "Redis"), ("f", search, "tantivy")):
            if key not in only or (key == "f" and separate_search):
                continue
            say(f"priming ({key}): syncline with one {title} view")
            try:
                pipe.prime()
            except Exception as e:
                say(f"({key}) could not be primed: {e}")
                results[key] = Result(
                    key, f"syncline end to end ({title} view)", 2 * args.rows, error=str(e)[:300]
                )
                only.discard(key)
        if "b" in only:
            say("priming (b): syncline capture only (slot, empty snapshot)")
            cap.prime()
        if "c" in only:
            say("priming (c): syncline with both views (slot, empty snapshot, empty views)")
            try:
                e2e.prime()
            except Exception as e:
                say(f"(c) could not be primed: {e}")
                results["c"] = Result(
                    "c", "syncline end to end (both views)", 2 * args.rows, error=str(e)[:300]
                )
                only.discard("c")

        say(f"workload: {args.rows:,} inserts, then {args.rows:,} single-row updates")
        start_lsn = parse_lsn(str(sql(src, "SELECT pg_current_wal_insert_lsn()::text")[0][0]))
        t = time.monotonic()
        sql(src, "CALL bench_insert(%s, %s)", (args.rows, args.insert_batch))
        workload["insert_s"] = time.monotonic() - t
        t = time.monotonic()
        sql(src, "CALL bench_update(%s, %s)", (args.rows, args.update_batch))
        workload["update_s"] = time.monotonic() - t
        endpos = end_position(src)
        workload["endpos"] = endpos
        workload["wal_bytes"] = endpos - start_lsn
        changes = 2 * args.rows
        say(
            f"workload done: inserts {workload['insert_s']:.1f}s, updates {workload['update_s']:.1f}s,"
            f" {workload['wal_bytes'] / MB:.0f} MB WAL, end {format_lsn(endpos)}"
        )

        def measure(key: str, title: str, run: Callable[[], Result]) -> None:
            load = quiet(args, f"({key}) {title}")
            r = results[key] = run()
            r.load_before = load
            say(f"({key}) " + (f"{r.seconds:.1f} s" if r.ok and r.seconds else check_text(r)))

        if "a" in only:
            measure(
                "a",
                "pg_recvlogical",
                lambda: run_recvlogical(
                    cluster, "bench_src", "bench_recvlogical", endpos, changes, args.timeout, "a"
                ),
            )
        drop_slot(src, "bench_recvlogical")
        if "b" in only:
            measure(
                "b",
                "syncline capture into the embedded log",
                lambda: run_syncline(
                    cap,
                    endpos,
                    changes,
                    args.timeout,
                    "b",
                    "syncline capture → embedded log",
                    lambda: verify_log(src, cap),
                    settle=("_compactor",),
                ),
            )
        drop_slot(src, "bench_capture")
        if "c" in only:
            measure(
                "c",
                "syncline end to end (replica + warehouse)",
                lambda: run_syncline(
                    e2e,
                    endpos,
                    changes,
                    args.timeout,
                    "c",
                    "syncline end to end (both views)",
                    lambda: verify_views(src, cluster.dsn("bench_replica"), work / "e2e" / "wh.duckdb"),
                ),
            )
        drop_slot(src, "bench_e2e")
        if "d" in only:
            measure(
                "d",
                "PostgreSQL logical replication",
                lambda: run_native(
                    cluster, "bench_src", "bench_native", "bench_native", endpos, changes, args.timeout
                ),
            )
        drop_slot(src, "bench_native")
        if "e" in only:
            measure(
                "e",
                "syncline end to end (Redis view)",
                lambda: run_syncline(
                    cache,
                    endpos,
                    changes,
                    args.timeout,
                    "e",
                    "syncline end to end (Redis view)",
                    lambda: verify_one(src, "cache", lambda: redis_checksum(redis_server.url)),
                ),
            )
        drop_slot(src, "bench_cache")
        redis_server.stop()
        if "f" in only and separate_search:
            search_phase(cluster, work, args, results, pipes, measure)
        elif "f" in only:
            measure(
                "f",
                "syncline end to end (tantivy view)",
                lambda: run_syncline(
                    search,
                    endpos,
                    changes,
                    args.timeout,
                    "f",
                    "syncline end to end (tantivy view)",
                    lambda: verify_one(src, "search", lambda: tantivy_checksum(work / "search" / "index")),
                ),
            )
        drop_slot(src, "bench_search")

        if "big" in only:
            big_phase(cluster, work, args, results, workload, pipes)
    except BaseException:
        failed = True
        raise
    finally:
        for p in pipes:
            p.kill()
        for srv in servers:
            srv.stop()
        cluster.cleanup()
        if args.keep or failed or any(not r.ok for r in results.values()):
            say(f"kept {work} (syncline logs: */run*.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print_summary(results)
    if not args.no_report:
        text = build_report(args, info, results, workload, command)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        say(f"wrote {args.output}")
    return 0 if all(r.ok for r in results.values()) else 1


def search_phase(
    cluster: PgCluster,
    work: Path,
    args: argparse.Namespace,
    results: dict[str, Result],
    pipes: list[Syncline],
    measure: Callable[[str, str, Callable[[], Result]], None],
) -> None:
    """(f) on a smaller workload of its own (``--search-rows``), with its own (a)."""
    n = args.search_rows
    cluster.psql("CREATE DATABASE search_src")
    src = cluster.dsn("search_src")
    cluster.psql(TABLE_DDL, "search_src")
    cluster.psql(PROCEDURES, "search_src")
    cluster.psql(
        f"CREATE PUBLICATION {PUB} FOR TABLE bench WITH (publish_via_partition_root = true)", "search_src"
    )
    sql(src, "SELECT pg_create_logical_replication_slot('search_recvlogical', 'pgoutput')")
    s = Syncline(work / "search_small", src, "search_e2e", tantivy_path=work / "search_small" / "index")
    pipes.append(s)
    say("priming (f): syncline with one tantivy view")
    try:
        s.prime()
    except Exception as e:
        say(f"(f) could not be primed: {e}")
        results["f"] = Result("f", "syncline end to end (tantivy view)", 2 * n, error=str(e)[:300])
        return
    say(f"(f) workload: {n:,} inserts, then {n:,} single-row updates")
    sql(src, "CALL bench_insert(%s, %s)", (n, args.insert_batch))
    sql(src, "CALL bench_update(%s, %s)", (n, args.update_batch))
    endpos = end_position(src)
    measure(
        "f_a",
        f"pg_recvlogical, the {2 * n:,}-change workload of (f)",
        lambda: run_recvlogical(
            cluster, "search_src", "search_recvlogical", endpos, 2 * n, args.timeout, "f_a"
        ),
    )
    results["f_a"].title = f"pg_recvlogical, the {2 * n:,}-change workload of (f)"
    drop_slot(src, "search_recvlogical")
    measure(
        "f",
        "syncline end to end (tantivy view)",
        lambda: run_syncline(
            s,
            endpos,
            2 * n,
            args.timeout,
            "f",
            f"syncline end to end (tantivy view; {2 * n:,} changes)",
            lambda: verify_one(src, "search", lambda: tantivy_checksum(work / "search_small" / "index")),
        ),
    )
    drop_slot(src, "search_e2e")


def big_phase(
    cluster: PgCluster,
    work: Path,
    args: argparse.Namespace,
    results: dict[str, Result],
    workload: dict[str, float],
    pipes: list[Syncline],
) -> None:
    """One big transaction into a fresh database: end to end, with RSS sampling."""
    for db in ("big_src", "big_replica"):
        cluster.psql(f"CREATE DATABASE {db}")
    src = cluster.dsn("big_src")
    cluster.psql(TABLE_DDL, "big_src")
    cluster.psql(
        f"CREATE PUBLICATION {PUB} FOR TABLE bench WITH (publish_via_partition_root = true)", "big_src"
    )
    sql(src, "SELECT pg_create_logical_replication_slot('big_recvlogical', 'pgoutput')")
    s = Syncline(
        work / "big",
        src,
        "big_e2e",
        replica_dsn=cluster.dsn("big_replica"),
        duckdb_path=work / "big" / "wh.duckdb",
    )
    pipes.append(s)
    say("priming the big-transaction pipeline")
    try:
        s.prime()
    except Exception as e:
        results["big"] = Result(
            "big", "syncline end to end, one transaction", args.big_rows, error=str(e)[:300]
        )
        say(f"big: could not be primed: {e}")
        return
    say(f"one transaction of {args.big_rows:,} rows")
    start = parse_lsn(str(sql(src, "SELECT pg_current_wal_insert_lsn()::text")[0][0]))
    t = time.monotonic()
    sql(src, "INSERT INTO bench SELECT g, md5(g::text), 0 FROM generate_series(1, %s) g", (args.big_rows,))
    workload["big_insert_s"] = time.monotonic() - t
    endpos = end_position(src)
    workload["big_wal_bytes"] = endpos - start
    load = quiet(args, "big (a) pg_recvlogical")
    r = results["big_a"] = run_recvlogical(
        cluster, "big_src", "big_recvlogical", endpos, args.big_rows, args.timeout, "big_a"
    )
    r.load_before = load
    drop_slot(src, "big_recvlogical")
    load = quiet(args, "big (c) syncline end to end")
    r = results["big"] = run_syncline(
        s,
        endpos,
        args.big_rows,
        args.timeout,
        "big",
        f"syncline end to end, one {args.big_rows:,}-row transaction",
        lambda: verify_views(src, cluster.dsn("big_replica"), work / "big" / "wh.duckdb"),
    )
    r.load_before = load
    drop_slot(src, "big_e2e")


if __name__ == "__main__":
    raise SystemExit(main())
