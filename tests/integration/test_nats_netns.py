"""Capture, log and appliers on separate hosts made with network namespaces (issue 11): the
capture on "cap", a three-node JetStream cluster on "n1", "n2", "n3" (replicas = 3), the
replica's applier on "app1" and the cache's on "app2", each with its own config and its own
``[log] path``. PostgreSQL, Redis and the writers stay in the root namespace, reached at the
bridge's address. Faults, with writers running: the stream leader's nats-server is killed -9
and comes back, the replica's applier is killed -9 and comes back, the capture host's link is
cut for 10 s, the capture is killed -9 right after a 60k-row transaction commits and comes
back. Afterwards every view equals the source, nothing was applied twice (counters equal) and
no key went back to an older version (an insert-only audit of versions is whole and in order
per key in the replica).

``SYNCLINE_CLUSTER_ROUNDS=N`` repeats the faults (default 1, the short form for CI)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from syncline.testing import audit, faults, natsserver
from syncline.testing.compare import compare_postgres, compare_redis, source_tables
from syncline.testing.natsserver import NatsServer, nats_server_binary, wait_jetstream
from syncline.testing.netns import NetnsUnavailable, Network
from syncline.testing.pgcluster import PgCluster, free_port, kill_group, wait_port

NATS_PORT, ROUTE_PORT = 4222, 6222


class NsNats(NatsServer):
    """A nats-server in a namespace (its host's address, fixed ports: each host has its own)."""

    def __init__(self, net: Network, host: str, workdir: Path, routes: tuple[str, ...]) -> None:
        self.net = net
        super().__init__(
            workdir,
            name=host,
            host=net.hosts[host].ip,
            port=NATS_PORT,
            cluster_port=ROUTE_PORT,
            routes=routes,
            start=False,
        )

    def start(self, wait: bool = True) -> None:
        conf = self.workdir / "nats.conf"
        conf.write_text(self.config_text())
        with open(self.workdir / "nats.log", "ab") as log:
            self.proc = self.net.popen(
                self.name, [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log
            )
        if wait:
            self.wait_ready()


class Proc:
    """One syncline process on a host: its own config (own ``[log] path``) and output files."""

    def __init__(self, net: Network, host: str, workdir: Path, config: str, *args: str) -> None:
        self.net, self.host, self.args = net, host, args
        self.dir = workdir / host
        self.dir.mkdir()
        self.config = self.dir / "syncline.toml"
        self.config.write_text(config.replace("@STATE@", str(self.dir / "state")))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.dir / f"out{self.runs}.log", "wb") as out:
            self.proc = self.net.popen(
                self.host,
                [sys.executable, "-m", "syncline", *self.args, "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(60)
        self.proc = None
        return code

    def output(self) -> str:
        return "\n".join(
            f"--- {f}\n" + f.read_text(errors="replace")[-4000:] for f in sorted(self.dir.glob("out*.log"))
        )


def crashes(out: str) -> list[str]:
    """Tracebacks in a process's output, except the "Exception ignored in" ones printed when
    nats-py's tasks are garbage-collected after a connection to an unreachable cluster is
    dropped (noise, not a failure: the process goes on)."""
    lines = out.splitlines()
    return [
        "\n".join(lines[i : i + 20])
        for i, line in enumerate(lines)
        if line.startswith("Traceback") and not (i and lines[i - 1].startswith("Exception ignored in"))
    ]


def test_hosts_in_network_namespaces_under_faults(tmp_path: Path) -> None:
    rounds = int(os.environ.get("SYNCLINE_CLUSTER_ROUNDS") or 1)
    net = Network()
    try:
        net.open()
    except NetnsUnavailable as e:
        net.close()
        pytest.fail(f"this test needs Linux network namespaces (root, iproute2): {e}")
    pg: PgCluster | None = None
    redis: subprocess.Popen[bytes] | None = None
    servers: list[NsNats] = []
    procs: list[Proc] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    try:
        for h in ("n1", "n2", "n3", "cap", "app1", "app2"):
            net.add_host(h)
        gw = net.gateway
        # PostgreSQL in the root namespace, listening on the bridge too, trusting the subnet
        pg = PgCluster(settings={"listen_addresses": f"'127.0.0.1,{gw}'"})
        pg.init()
        with open(pg.datadir / "pg_hba.conf", "a") as f:
            f.write(f"host all all {net.cidr} trust\nhost replication all {net.cidr} trust\n")
        pg.start()
        tag = uuid.uuid4().hex[:8]
        src_db, rep_db = f"src_{tag}", f"rep_{tag}"
        pg.psql(f"CREATE DATABASE {src_db}")
        pg.psql(f"CREATE DATABASE {rep_db}")
        src_dsn = f"postgresql://postgres@{gw}:{pg.port}/{src_db}"
        rep_dsn = f"postgresql://postgres@{gw}:{pg.port}/{rep_db}"
        # Redis in the root namespace, on the bridge's address
        rport = free_port()
        (tmp_path / "redis").mkdir()
        redis = subprocess.Popen(
            [
                *("redis-server", "--port", str(rport), "--bind", gw, "--protected-mode", "no"),
                *("--save", "", "--appendonly", "no", "--dir", str(tmp_path / "redis")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(gw, rport)
        redis_url = f"redis://{gw}:{rport}/0"
        # one nats-server per host, clustered over the hosts' addresses
        names = ("n1", "n2", "n3")
        for n in names:
            routes = tuple(f"nats://{net.hosts[o].ip}:{ROUTE_PORT}" for o in names if o != n)
            servers.append(NsNats(net, n, tmp_path / n, routes))
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready()
        wait_jetstream(servers[0].url)
        urls = [s.url for s in servers]
        stream = f"s{tag}"
        config = "\n".join(
            [
                "[source]",
                f'dsn = "{src_dsn}"',
                'tables = ["public.*"]',
                f'slot = "s_{tag}"',
                f'publication = "p_{tag}"',
                "[log]",
                'path = "@STATE@"',
                'kind = "nats"',
                "servers = [" + ", ".join(f'"{u}"' for u in urls) + "]",
                f'stream = "{stream}"',
                "replicas = 3",
                "[http]",
                'listen = "off"',
                "[views.replica]",
                'kind = "postgres"',
                f'dsn = "{rep_dsn}"',
                "[views.cache]",
                'kind = "redis"',
                f'url = "{redis_url}"',
            ]
        )
        with psycopg.connect(src_dsn, autocommit=True) as c:
            c.execute(audit.SCHEMA)
        capture = Proc(net, "cap", tmp_path, config, "capture")
        app1 = Proc(net, "app1", tmp_path, config, "apply", "--view", "replica")
        app2 = Proc(net, "app2", tmp_path, config, "apply", "--view", "cache")
        procs += [capture, app1, app2]
        ops = tmp_path / "ops"  # status, wait, verify: from the root namespace
        ops.mkdir()
        (ops / "syncline.toml").write_text(config.replace("@STATE@", str(ops / "state")))

        def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "syncline", *args, "-c", str(ops / "syncline.toml")],
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        def outputs() -> str:
            return "\n".join(f"===== {p.host}\n{p.output()}" for p in procs)

        app1.start()  # before the log exists: it waits for it
        capture.start()
        app2.start()
        threads += [threading.Thread(target=audit.writer, args=(src_dsn, i, stop, errors)) for i in range(2)]
        for t in threads:
            t.start()
        r = cli("wait", "--timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr + outputs()
        bulk_lsns: list[str] = []
        for rnd in range(rounds):
            if rnd:
                r = cli("wait", "--timeout", "180")
                assert r.returncode == 0, r.stdout + r.stderr + outputs()
            # the stream's leader dies (kill -9) and comes back
            leader_name = natsserver.stream_leader(servers[(rnd + 1) % 3].url, stream)
            leader = next(s for s in servers if s.name == leader_name)
            leader.kill()
            time.sleep(5)
            leader.start()
            # the replica's applier dies (kill -9) and comes back
            app1.kill()
            time.sleep(1)
            app1.start()
            # the capture host's cable is pulled for 10 s
            net.cut("cap")
            time.sleep(10)
            net.restore("cap")
            # once the capture streams again, it dies (kill -9) right after a big transaction
            # commits (while it still takes that transaction in), and comes back
            r = cli("wait", "--timeout", "180")
            assert r.returncode == 0, r.stdout + r.stderr + outputs()
            with psycopg.connect(src_dsn, autocommit=True) as c:
                c.execute(
                    f"INSERT INTO bulk SELECT g + {rnd * 100_000}, repeat('b', 200) FROM generate_series(1, 60000) g"
                )
                row = c.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                bulk_lsns.append(str(row[0]) if row else "?")
            time.sleep(0.5)
            capture.kill()
            time.sleep(1)
            capture.start()
            time.sleep(3)
        print("bulk transactions committed by", bulk_lsns)  # the capture's logs say where it resumed
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        for p in procs:
            assert p.proc is not None and p.proc.poll() is None, f"{p.host} exited:\n{outputs()}"
        r = cli("wait", "--timeout", "240")
        assert r.returncode == 0, r.stdout + r.stderr + outputs()
        local_src = pg.dsn(src_dsn.rsplit("/", 1)[1])
        tables = source_tables(local_src)
        bad = [
            f"{view}: {d}"
            for view, diffs in (
                ("replica", compare_postgres(local_src, pg.dsn(rep_db), tables)),
                ("cache", compare_redis(local_src, redis_url, tables)),
            )
            for d in diffs
            if not d.equal
        ]
        assert not bad, "views differ from source:\n" + "\n".join(bad) + "\n" + outputs()
        r = cli("verify", "-q")
        assert r.returncode == 0, r.stdout + r.stderr
        faults.record(
            {
                "NATS stream leader SIGKILL": rounds,
                "SIGKILL: applier": rounds,
                "SIGKILL: capture (after a big transaction)": rounds,
                "network cut, capture host, 10 s": rounds,
            },
            **faults.combine(
                audit.measure(local_src, pg.dsn(rep_db)),
                faults.from_diffs(compare_redis(local_src, redis_url, tables)),
            ),
        )
        audit.check(local_src, pg.dsn(rep_db))
        for p in procs:
            assert not crashes(p.output()), p.output()
            assert p.stop() == 0, p.output()
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        for p in procs:
            p.kill()
        for s in servers:
            s.kill()
        if redis is not None:
            redis.kill()
            redis.wait()
        if pg is not None:
            pg.cleanup()
        net.close()
