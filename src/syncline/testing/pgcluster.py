"""Private PostgreSQL clusters for tests, demos and benchmarks.

``initdb`` into a temporary directory (as the ``postgres`` OS user when running as root),
a free port, ``wal_level=logical``; the server can be stopped, killed and restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "logical_decoding_work_mem": "64kB",
    "timezone": "America/St_Johns",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_prepared_transactions": "10",
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "60",
}


class PgBinariesMissing(RuntimeError):
    pass


def find_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (``PG_BINDIR`` overrides)."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for c in reversed(cands):
        if (Path(c) / "initdb").exists():
            return Path(c)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PgBinariesMissing(
        "PostgreSQL server binaries (initdb, postgres) not found: install them, e.g. "
        "`apt-get install postgresql`, or set PG_BINDIR"
    )


def kill_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group,
    and wait until all of them are gone (a worker still dying may still write to its
    files: a test that then replaces them, a power cut, must not race it)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of group {proc.pid} still alive {timeout}s after SIGKILL")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15) -> None:
    """Until something accepts connections on ``host:port`` (RuntimeError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def _as_postgres() -> dict[str, Any]:
    """subprocess kwargs that drop root privileges to the postgres user (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class PgCluster:
    def __init__(
        self,
        datadir: Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = find_bindir()
        self._tmp: str | None = None
        if datadir is None:
            self._tmp = tempfile.mkdtemp(prefix="syncline-pg-")
            datadir = Path(self._tmp) / "data"
        self.datadir = datadir
        self.port = port or free_port()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def version(self) -> int:
        return int(self.bindir.parent.name) if self.bindir.parent.name.isdigit() else 0

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        root = self.datadir.parent
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            if self._tmp:
                os.chown(self._tmp, pw.pw_uid, pw.pw_gid)
            reachable = subprocess.run(["test", "-w", str(root)], **_as_postgres()).returncode == 0
            if not reachable:
                # The postgres user cannot reach this directory (e.g. under /root): keep the
                # server's files in /tmp and leave a symlink where they were asked for.
                real = Path(tempfile.mkdtemp(prefix="syncline-pg-"))
                os.chown(real, pw.pw_uid, pw.pw_gid)
                os.rmdir(root)
                root.symlink_to(real, target_is_directory=True)
                self._tmp = self._tmp or str(real)
                self.datadir = real / self.datadir.name
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **_as_postgres(),
        )
        with open(self.datadir / "postgresql.conf", "a") as f:
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
        with open(self.datadir / "pg_hba.conf", "w") as f:
            f.write("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.datadir.parent / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_postgres(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.server_log()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready")

    def server_log(self) -> str:
        p = self.datadir.parent / "server.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, mode: str = "fast") -> None:
        if self.proc is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc = None

    def cleanup(self, mode: str = "fast") -> None:
        self.stop(mode)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        r = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return r.stdout


@contextlib.contextmanager
def running_cluster(settings: dict[str, str] | None = None) -> Iterator[PgCluster]:
    c = PgCluster(settings=settings)
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.cleanup()


def standby_of(primary: PgCluster, slot: str | None = None, sync_slots: bool = False) -> PgCluster:
    """A streaming standby of ``primary`` (``pg_basebackup -R``), started. ``slot``: the
    physical replication slot it streams from (created here); ``sync_slots``: it keeps
    copies of the primary's failover slots (PostgreSQL 17+: ``sync_replication_slots``)."""
    root = Path(tempfile.mkdtemp(prefix="syncline-standby-"))
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    datadir = root / "data"
    args = ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(datadir)]
    if slot is not None:
        args += ["-C", "-S", slot]
    subprocess.run(
        [str(primary.bindir / "pg_basebackup"), *args, "-R", "-X", "stream", "--checkpoint=fast"],
        check=True,
        capture_output=True,
        **_as_postgres(),
    )
    if sync_slots:
        with open(datadir / "postgresql.auto.conf", "a") as f:
            f.write(
                f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres dbname=postgres'\n"
                "hot_standby_feedback = on\nsync_replication_slots = on\n"
            )
    standby = PgCluster(datadir=datadir)
    standby._tmp = str(root)
    standby.start()
    return standby
