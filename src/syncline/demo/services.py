"""The demo's private servers: a PostgreSQL cluster from the installed binaries and, when
``redis-server`` is installed, a Redis with an append-only file (so a resumed demo keeps
its cache). Both listen on 127.0.0.1 only, on ports kept in their own config files, so
``services.sh`` (written next to them) can start and stop them again with the same ports."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psycopg

from syncline.sources.postgres.lsn import parse_lsn
from syncline.testing.pgcluster import PgBinariesMissing, PgCluster, free_port, kill_group


class DemoServices:
    """Start, stop and describe the demo's PostgreSQL and Redis under ``root``."""

    def __init__(self, root: Path, with_redis: bool = True) -> None:
        self.root = root
        port = free_port()
        # raises PgBinariesMissing when there are no server binaries
        self.pg = PgCluster(datadir=root / "pg" / "data", port=port, settings={"port": str(port)})
        if not (self.pg.bindir / "initdb").exists() or not (self.pg.bindir / "postgres").exists():
            raise PgBinariesMissing(
                f"no initdb and postgres in {self.pg.bindir}: install the PostgreSQL server "
                "binaries (e.g. `apt-get install postgresql`) or set PG_BINDIR to their directory"
            )
        self.redis_bin = shutil.which("redis-server") if with_redis else None
        self.redis_dir = root / "redis"
        self.redis_port = free_port() if self.redis_bin else 0
        self._redis: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ PostgreSQL

    def start_postgres(self) -> None:
        self.pg.init()
        self.pg.start()

    def pg_dsn(self, db: str) -> str:
        return self.pg.dsn(db)

    # ------------------------------------------------------------------ Redis

    @property
    def has_redis(self) -> bool:
        return self.redis_bin is not None

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    @property
    def redis_conf(self) -> Path:
        return self.redis_dir / "redis.conf"

    def start_redis(self) -> None:
        if self.redis_bin is None:
            return
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        d = str(self.redis_dir)
        self.redis_conf.write_text(
            f"port {self.redis_port}\nbind 127.0.0.1\nprotected-mode yes\ndir {_conf_quote(d)}\n"
            'appendonly yes\nappendfsync everysec\nsave ""\n'
            f"pidfile {_conf_quote(d + '/redis.pid')}\nlogfile {_conf_quote(d + '/redis.log')}\n"
        )
        self._redis = subprocess.Popen(
            [self.redis_bin, str(self.redis_conf), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.redis_port), 0.2):
                return
            if self._redis.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start (see {self.redis_dir / 'redis.log'})")

    # ------------------------------------------------------------------ both

    def stop(self) -> None:
        """Stop what was started (Redis first: SIGTERM writes its append-only file)."""
        if self._redis is not None:
            with contextlib.suppress(ProcessLookupError):
                self._redis.terminate()
            try:
                self._redis.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()
            self._redis = None
        self.pg.stop()

    def write_script(self) -> Path:
        """``services.sh start|stop``: the exact commands to bring the servers back."""
        pg_ctl = shlex.quote(str(self.pg.bindir / "pg_ctl"))
        data = shlex.quote(str(self.pg.datadir))
        log = shlex.quote(str(self.pg.datadir.parent / "pg_ctl.log"))
        pg_start = f"{pg_ctl} -D {data} -l {log} -w start"
        pg_stop = f"{pg_ctl} -D {data} -m fast -w stop"
        if os.geteuid() == 0:  # the cluster belongs to the postgres user
            pg_start = f"su postgres -s /bin/sh -c {shlex.quote(pg_start)}"
            pg_stop = f"su postgres -s /bin/sh -c {shlex.quote(pg_stop)}"
        lines = [
            "#!/bin/sh",
            "# Written by `syncline demo`: start or stop the demo's private PostgreSQL"
            + (" and Redis." if self.has_redis else "."),
            "set -e",
            'case "$1" in',
            f"  start)\n    {pg_start}",
        ]
        if self.redis_bin:
            lines.append(
                f"    {shlex.quote(self.redis_bin)} {shlex.quote(str(self.redis_conf))} --daemonize yes"
            )
        lines.append("    ;;")
        lines.append("  stop)")
        if self.redis_bin:
            pid = shlex.quote(str(self.redis_dir / "redis.pid"))
            lines.append(f'    [ -f {pid} ] && kill "$(cat {pid})" || true')
        lines += [f"    {pg_stop}", "    ;;", '  *) echo "usage: $0 start|stop" >&2; exit 2;;', "esac", ""]
        path = self.root / "services.sh"
        path.write_text("\n".join(lines))
        path.chmod(0o755)
        return path


def _conf_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop_leftovers(root: Path) -> list[str]:
    """Stop servers a previous demo in ``root`` left running (restarted with services.sh),
    by the process ids in their pid files; returns what was stopped."""
    stopped = []
    for pidfile, what, sig in (
        (root / "redis" / "redis.pid", "redis-server", signal.SIGTERM),
        (root / "pg" / "data" / "postmaster.pid", "postgres", signal.SIGINT),
    ):
        try:
            pid = int(pidfile.read_text().split()[0])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if what.encode() not in cmd:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        stopped.append(f"{what} (pid {pid})")
    return stopped


def clear_dir(root: Path) -> None:
    """Remove a previous demo's files, including a cluster kept in /tmp behind a symlink."""
    pg = root / "pg"
    if pg.is_symlink():
        target = pg.resolve()
        pg.unlink()
        shutil.rmtree(target, ignore_errors=True)
    if root.exists():
        shutil.rmtree(root)


class Run:
    """One ``syncline run -c syncline.toml`` child in its own process group."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncline", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a clean stop: everything durable is confirmed), SIGKILL on timeout."""
        if self.proc is None:
            return 0
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            rc = -9
        self.proc = None
        return rc

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class DemoFailed(Exception):
    pass


def current_lsn(dsn: str) -> int:
    """The source's WAL insert position (covers commits not yet flushed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a demo like Ctrl-C (everything it started is stopped)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block (the clean-up) is done."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
