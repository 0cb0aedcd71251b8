"""Drive a real ``syncline run`` process against a private cluster: start, SIGKILL,
restart, wait until caught up, compare every view with the source."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from syncline.config import load_config
from syncline.core.errors import LogError, TablesNotFollowed
from syncline.log import log_ready, open_observer
from syncline.log.base import LogBusy
from syncline.runtime.status import views_caught_up
from syncline.sources.postgres.lsn import parse_lsn
from syncline.sources.registry import open_admin
from syncline.testing.compare import (
    TableDiff,
    compare_duckdb,
    compare_ducklake,
    compare_iceberg,
    compare_postgres,
    compare_redis,
    compare_tantivy,
    source_tables,
)
from syncline.testing.pgcluster import PgCluster, kill_group, wait_port

if TYPE_CHECKING:
    from syncline.testing.natsserver import NatsServer


class Pipeline:
    def __init__(
        self,
        cluster: PgCluster,
        workdir: Path,
        views: tuple[str, ...] = ("postgres", "duckdb"),
        tables: str | tuple[str, ...] = "public.*",
        extra_source: str = "",
        replica_cluster: PgCluster | None = None,
        log_path: Path | None = None,
        http_listen: str | None = None,
        log_kind: str | None = None,
        nats_servers: tuple[str, ...] = (),
        nats_replicas: int = 1,
        redis_partitions: int = 1,
        lake_catalog: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        self.source_db = f"src_{tag}"
        self.replica_db = f"rep_{tag}"
        cluster.psql(f"CREATE DATABASE {self.source_db}")
        self.source_dsn = cluster.dsn(self.source_db)
        self.replica_cluster = replica_cluster or cluster
        self.replica_dsn = self.replica_cluster.dsn(self.replica_db)
        self.slot = f"s_{tag}"
        self.views = views
        self.log_path = log_path or workdir / "log"
        self.log_kind = log_kind or os.environ.get("SYNCLINE_TEST_LOG", "embedded")
        self.nats: NatsServer | None = None
        log_lines = []
        if self.log_kind == "nats":
            from syncline.testing.natsserver import NatsServer

            if not nats_servers:
                self.nats = NatsServer(workdir / "nats")
                nats_servers = (self.nats.url,)
            log_lines = [
                'kind = "nats"',
                "servers = [" + ", ".join(f'"{u}"' for u in nats_servers) + "]",
                f'stream = "s{tag}"',
                f"replicas = {nats_replicas}",
            ]
        lines = [
            "[source]",
            f'dsn = "{self.source_dsn}"',
            "tables = " + json.dumps([tables] if isinstance(tables, str) else list(tables)),
            f'slot = "{self.slot}"',
            f'publication = "p_{tag}"',
            extra_source,
            "[log]",
            f'path = "{log_path or workdir / "log"}"',
            *log_lines,
            "[http]",  # off unless asked for: tests run side by side
            f'listen = "{http_listen or "off"}"',
        ]
        if "postgres" in views:
            self.replica_cluster.psql(f"CREATE DATABASE {self.replica_db}")
            lines += ["[views.replica]", 'kind = "postgres"', f'dsn = "{self.replica_dsn}"']
        if "duckdb" in views:
            lines += ["[views.warehouse]", 'kind = "duckdb"', f'path = "{workdir / "wh.duckdb"}"']
        if "ducklake" in views:
            lines += [
                "[views.lake]",
                'kind = "ducklake"',
                f'catalog = "{lake_catalog or workdir / "lake.sqlite"}"',
                f'data_path = "{workdir / "lake"}"',
            ]
        self.lake_catalog = lake_catalog or str(workdir / "lake.sqlite")
        if "iceberg" in views:
            lines += [
                "[views.iceberg]",
                'kind = "iceberg"',
                f'catalog = "{workdir / "iceberg.sqlite"}"',
                f'warehouse = "{workdir / "iceberg"}"',
            ]
        self.redis: RedisServer | None = None
        if "redis" in views:
            self.redis = RedisServer(workdir / "redis")
            lines += ["[views.cache]", 'kind = "redis"', f'url = "{self.redis.url}"']
            if redis_partitions > 1:
                lines.append(f"partitions = {redis_partitions}")
        if "tantivy" in views:
            lines += ["[views.search]", 'kind = "tantivy"', f'path = "{workdir / "search"}"']
        self.config_path = workdir / "syncline.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.cfg = load_config(self.config_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def sql(self, statement: str, db: str | None = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.cluster.dsn(db or self.source_db), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def start(self) -> None:
        self.runs += 1
        log = open(self.workdir / f"run{self.runs}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncline", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._until_up()

    def _until_up(self, timeout: float = 60) -> None:
        """Until ``run`` has taken over its signals (it then names itself ``syncline:
        supervisor``), or exited: a SIGTERM before that kills it (exit -15) instead of
        stopping it, which a test that stops a run soon after starting it must not meet."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().startswith(b"syncline: "):
                    return
            time.sleep(0.02)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("run*.log")))

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``syncline ARGS -c CONFIG`` as a user runs it (output captured)."""
        return subprocess.run(
            [sys.executable, "-m", "syncline", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def assert_verified(self, timeout: float = 300) -> None:
        """``syncline verify`` finds every view equal."""
        r = self.cli("verify", "-q", timeout=timeout)
        assert r.returncode == 0, r.stdout + r.stderr

    def kill(self) -> None:
        """SIGKILL the whole process group (the supervisor and its workers)."""
        kill_group(self.proc)
        self.proc = None

    def workers(self) -> dict[int, str]:
        """The running ``syncline run``'s worker processes: {pid: process title}
        (``syncline: capture``, ``syncline: view NAME``...)."""
        assert self.proc is not None
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                if ppid != self.proc.pid:
                    continue
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, ValueError, IndexError):
                continue
            if title.startswith("syncline: "):
                out[int(d.name)] = title
        return out

    def kill_supervisor_only(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            time.sleep(0.3)  # workers die through PR_SET_PDEATHSIG

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        return self._exit_code(timeout, "did not stop")

    def keep_log(self, keep: bool = True) -> None:
        """``[log] retention = "keep"`` from the next start (``keep`` False: the default,
        trimmed once every view applied it), for tests that read the log back."""
        line = 'retention = "keep"\n'
        text = self.config_path.read_text().replace("[log]\n" + line, "[log]\n", 1)
        self.config_path.write_text(text.replace("[log]\n", "[log]\n" + line, 1) if keep else text)
        self.cfg = load_config(self.config_path)
        assert self.cfg.log.retention == ("keep" if keep else "applied")

    def current_lsn(self) -> int:
        return parse_lsn(str(self.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]))

    def wait_caught_up(self, timeout: float = 120, new_tables: bool = False) -> None:
        """Until every view has applied what the source committed so far, and every
        table copy (first start, new tables) is done, as ``syncline wait`` does.
        ``new_tables``: tables were created a moment ago; first wait until the capture
        follows every table matching ``[source] tables`` (until then a new table is in no
        copy yet, and the views may look caught up without it)."""
        names = [v.name for v in self.cfg.views]
        deadline = time.monotonic() + timeout
        lsn = self.current_lsn()
        if new_tables:
            try:
                lsn = open_admin(self.cfg).followed_position(deadline)
            except TablesNotFollowed as e:
                raise AssertionError(f"{e}:\n{self.output()[-4000:]}") from None
        while time.monotonic() < deadline:
            if self.copying():
                lsn = -1  # the copy's chunks are logged after the position asked for
            elif lsn < 0:
                lsn = self.current_lsn()
            elif views_caught_up(self.cfg, lsn, names):
                return
            failed = self.failed_views()
            if failed:
                raise AssertionError(f"views failed: {failed}:\n{self.output()[-4000:]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncline run exited {self.proc.returncode}:\n{self.output()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"views not caught up with {lsn:X} in {timeout}s:\n{self.output()[-4000:]}")

    def copying(self) -> list[str]:
        """Tables whose watermark copy is not finished (queued or running); ``["(first
        start)"]`` until the first start has queued its copies (the log is not streaming)."""
        first = ["(first start)"]
        if not log_ready(self.cfg.log):
            return first
        try:
            obs = open_observer(self.cfg.log)
        except LogError:
            return first
        try:
            if obs.meta("state") != "streaming":
                return first
            return sorted(open_admin(self.cfg).copying(obs))
        except LogBusy:
            return first  # being created, or busy: not known to be done
        finally:
            obs.close()

    def failed_views(self) -> list[str]:
        if not log_ready(self.cfg.log):
            return []
        try:
            obs = open_observer(self.cfg.log)
        except LogError:
            return []
        try:
            return [n for n, r in obs.consumers().items() if r.state == "failed"]
        except LogBusy:  # the log is being created
            return []
        finally:
            obs.close()

    def wait_failed(self, views: set[str], timeout: float = 90) -> list[str]:
        """Until every view in ``views`` has failed (or ``timeout`` s): the failed views."""
        deadline = time.monotonic() + timeout
        while not views <= set(self.failed_views()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return sorted(self.failed_views())

    def compare(self) -> dict[str, list[TableDiff]]:
        """Every view vs the source (call with `run` stopped: DuckDB allows one process)."""
        tables = source_tables(self.source_dsn)
        out: dict[str, list[TableDiff]] = {}
        if "postgres" in self.views:
            out["replica"] = compare_postgres(self.source_dsn, self.replica_dsn, tables)
        if "duckdb" in self.views:
            out["warehouse"] = compare_duckdb(self.source_dsn, str(self.workdir / "wh.duckdb"), tables)
        if "ducklake" in self.views:
            out["lake"] = compare_ducklake(
                self.source_dsn, self.lake_catalog, str(self.workdir / "lake"), tables
            )
        if "iceberg" in self.views:
            out["iceberg"] = compare_iceberg(
                self.source_dsn, str(self.workdir / "iceberg.sqlite"), str(self.workdir / "iceberg"), tables
            )
        if self.redis is not None:
            out["cache"] = compare_redis(self.source_dsn, self.redis.url, tables)
        if "tantivy" in self.views:
            out["search"] = compare_tantivy(self.source_dsn, str(self.workdir / "search"), tables)
        return out

    def assert_equal(self, faults: dict[str, int] | None = None, audited: bool = False) -> None:
        """Every view equals the source; ``faults`` (kind -> times injected before this
        check) go to the fault summary with the comparison's figures. ``audited``: the
        source ran the audit workload (``syncline.testing.audit``), counted in the replica
        too."""
        from syncline.testing import audit
        from syncline.testing import faults as figures

        compared = self.compare()
        if faults is not None:
            counted = figures.from_diffs(d for ds in compared.values() for d in ds)
            if audited:
                counted = figures.combine(counted, audit.measure(self.source_dsn, self.replica_dsn))
            figures.record(faults, **counted)
        bad = [f"{v}: {d}" for v, diffs in compared.items() for d in diffs if not d.equal]
        assert not bad, "views differ from source:\n" + "\n".join(bad) + "\n" + self.output()[-3000:]
        if audited:
            audit.check(self.source_dsn, self.replica_dsn)

    def run_to_exit(self, timeout: float = 60) -> tuple[int, str]:
        """``syncline run`` once, until it exits by itself: (exit code, everything it printed)."""
        self.start()
        return self._exit_code(timeout, "still running"), self.output()

    def _exit_code(self, timeout: float, failing: str) -> int:
        """The exit code of ``syncline run`` once it exits (killed, and an AssertionError
        saying ``failing``, after ``timeout`` s)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"syncline run {failing} after {timeout}s:\n{self.output()[-3000:]}"
            ) from None
        self.proc = None
        return rc

    def close(self) -> None:
        self.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.nats is not None:
            self.nats.stop()
        with contextlib.suppress(Exception), psycopg.connect(self.source_dsn, autocommit=True) as c:
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )


class RedisServer:
    """A private redis-server (no persistence) on a free port."""

    def __init__(self, workdir: Path, start: bool = True) -> None:
        from syncline.testing.pgcluster import free_port

        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", self.port, timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
