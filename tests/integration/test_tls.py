"""TLS to PostgreSQL and Redis with full verification (issue 13): a CA made by the test
signs the servers' certificates; the source, the replica and the Redis cache are reached
with ``sslmode=verify-full`` and ``rediss://`` against that CA, and only over TLS (the
servers refuse plain connections). A certificate from another CA is one clear error,
without the password."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncline.testing.compare import compare_postgres, compare_redis, source_tables
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port, wait_port

PASSWORD = "TlsCanaryPw9"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    """``{name}-ca.pem`` and a server certificate ``{name}-server.pem`` (key
    ``{name}-server.key``) for 127.0.0.1 and localhost, signed by that CA."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
             "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}-server.pem", cwd=d)  # fmt: skip


@dataclass
class TlsServers:
    pg: PgCluster
    certs: Path
    redis_port: int


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServers]:
    certs = tmp_path_factory.mktemp("certs")
    make_ca(certs, "good")
    make_ca(certs, "other")
    pg = PgCluster(settings={"ssl": "on", "ssl_cert_file": "'server.pem'", "ssl_key_file": "'server.key'"})
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        pg.init()
        for src, dst in (("good-server.pem", "server.pem"), ("good-server.key", "server.key")):
            shutil.copy(certs / src, pg.datadir / dst)
            os.chmod(pg.datadir / dst, 0o600)
            if os.geteuid() == 0:
                shutil.chown(pg.datadir / dst, "postgres", "postgres")
        # syncline's role: TLS only, with a password (it must never be printed); the test's
        # own connections (as postgres) stay plain
        (pg.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n"
            "hostssl all app 127.0.0.1/32 scram-sha-256\nhostssl replication app 127.0.0.1/32 scram-sha-256\n"
            "host all all 0.0.0.0/0 reject\nhost replication all 0.0.0.0/0 reject\n"
        )
        pg.start()
        pg.psql(f"CREATE ROLE app LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        port = free_port()
        redis_proc = subprocess.Popen(
            [
                *("redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
                *(
                    "--tls-cert-file",
                    str(certs / "good-server.pem"),
                    "--tls-key-file",
                    str(certs / "good-server.key"),
                ),
                *("--tls-ca-cert-file", str(certs / "good-ca.pem"), "--tls-auth-clients", "no"),
                *("--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(certs)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", port)
        yield TlsServers(pg, certs, port)
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        pg.stop()


def _pg_tls(dsn: str, ca: Path) -> str:
    """``dsn`` with the password and full verification against ``ca``."""
    return dsn.replace("postgres@", f"app:{PASSWORD}@") + f"?sslmode=verify-full&sslrootcert={ca}"


def _tls_pipeline(tls: TlsServers, tmp_path: Path, ca: str) -> tuple[Pipeline, str]:
    p = Pipeline(tls.pg, tmp_path, views=("postgres",))
    text = p.config_path.read_text()
    src, rep = _pg_tls(p.source_dsn, tls.certs / ca), _pg_tls(p.replica_dsn, tls.certs / ca)
    redis_url = f"rediss://:{PASSWORD}@127.0.0.1:{tls.redis_port}/0?ssl_ca_certs={tls.certs / ca}&ssl_cert_reqs=required"
    text = text.replace(f'"{p.source_dsn}"', f'"{src}"').replace(f'"{p.replica_dsn}"', f'"{rep}"')
    text += f'[views.cache]\nkind = "redis"\nurl = "{redis_url}"\n'
    p.config_path.write_text(text)
    return p, redis_url


def test_source_replica_and_redis_over_verified_tls(tls: TlsServers, tmp_path: Path) -> None:
    p, redis_url = _tls_pipeline(tls, tmp_path, "good-ca.pem")
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g"
        )
        p.start()
        p.sql("UPDATE t SET v = 'b' WHERE id <= 50; INSERT INTO t VALUES (101, 'c')")
        r = p.cli("wait", "--timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]
        r = p.cli("verify")
        assert r.returncode == 0, r.stdout + r.stderr
        assert p.stop() == 0, p.output()[-3000:]
        tables = source_tables(_pg_tls(p.source_dsn, tls.certs / "good-ca.pem"))
        src = _pg_tls(p.source_dsn, tls.certs / "good-ca.pem")
        rep = _pg_tls(p.replica_dsn, tls.certs / "good-ca.pem")
        diffs = compare_postgres(src, rep, tables) + compare_redis(src, redis_url, tables)
        assert all(d.equal for d in diffs), [str(d) for d in diffs]
        assert PASSWORD not in p.output()
        # a plain connection as syncline's role is refused: everything above went over TLS
        r2 = subprocess.run(
            [str(tls.pg.bindir / "psql"), "-X", "-At", "-c", "SELECT 1",
             _pg_tls(p.source_dsn, tls.certs / "good-ca.pem").replace("verify-full", "disable")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert r2.returncode != 0 and "no encryption" in r2.stderr, r2.stderr
    finally:
        p.close()


@pytest.mark.parametrize("what", ["source", "redis"])
def test_a_certificate_from_another_ca_is_one_clear_error(tls: TlsServers, tmp_path: Path, what: str) -> None:
    p, _ = _tls_pipeline(tls, tmp_path, "good-ca.pem")
    try:
        text = p.config_path.read_text()
        if what == "source":
            head, sep, rest = text.partition("[log]")
            text = head.replace("good-ca.pem", "other-ca.pem") + sep + rest
        else:
            head, sep, rest = text.partition("[views.cache]")
            text = head + sep + rest.replace("good-ca.pem", "other-ca.pem")
        p.config_path.write_text(text)
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        if what == "source":
            code, out = p.run_to_exit(90)
            assert code != 0, out
            assert "certificate verify failed" in out, out
        else:
            r = p.cli("verify")
            out = r.stdout + r.stderr
            assert r.returncode == 2, out
            assert "certificate verify failed" in out, out
        assert "Traceback" not in out, out
        assert PASSWORD not in out
    finally:
        p.close()
