"""The HTTP API of ``syncline run``: status, wait, healthz, metrics, the bearer token."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncline.client import Client, ClientError, WaitTimeout, current_position
from syncline.config import load_config
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port

TOKEN = "t0ken-for-tests-7c1e"


def get(url: str, token: str | None = None, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, body


def get_json(url: str, token: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    code, body = get(url, token, timeout)
    return code, json.loads(body)


def scrape(base: str, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, body = get(base + "/metrics", token)
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.name.startswith("syncline_"), fam.name
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def wait_http(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, _ = get(base + "/healthz", timeout=2)
            if code in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no HTTP API at {base}")


@pytest.fixture
def served(pg: PgCluster, tmp_path: Path) -> Iterator[tuple[Pipeline, str]]:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres",), http_listen=f"127.0.0.1:{port}")
    try:
        p.sql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        p.sql("INSERT INTO items SELECT g, 'x' || g FROM generate_series(1, 25) g")
        p.start()
        base = f"http://127.0.0.1:{port}"
        wait_http(base)
        yield p, base
    finally:
        p.close()


def test_status_wait_healthz_metrics(served: tuple[Pipeline, str]) -> None:
    p, base = served
    client = Client(base)
    client.wait_for(None, timeout=60)  # the snapshot, through the source's current position

    code, st = get_json(base + "/status")
    assert code == 200
    assert set(st) >= {"source", "log", "views"}
    assert st["views"]["replica"]["kind"] == "postgres"
    assert st["views"]["replica"]["state"] == "running"
    assert set(st["views"]["replica"]) >= {"kind", "state", "applied_lsn", "lag_seconds", "lag_events"}
    assert st["source"]["retained_wal_bytes"] is not None
    # the same document as `syncline status --json`
    cli = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "--json", "-c", str(p.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert set(json.loads(cli.stdout)) == set(st)
    assert json.loads(cli.stdout)["views"].keys() == st["views"].keys()
    table = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "-c", str(p.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    assert "retained_wal_bytes=" in table.stdout and "applied_events" in table.stdout
    assert "replica" in table.stdout and "running" in table.stdout

    code, h = get_json(base + "/healthz")
    assert code == 200 and h["status"] == "ok" and h["views"] == {"replica": "running"}, h

    before = scrape(base)
    assert before[("syncline_source_up", ())] == 1
    assert before[("syncline_source_retained_wal_bytes", ())] >= 0
    assert before[("syncline_snapshot_rows", ())] == 25
    assert before[("syncline_snapshot_in_progress", ())] == 0
    assert before[("syncline_log_state", (("state", "streaming"),))] == 1
    assert before[("syncline_capture_up", ())] == 1
    assert before[("syncline_capture_state", (("state", "streaming"),))] == 1
    assert before[("syncline_capture_state", (("state", "failed"),))] == 0
    replica = (("kind", "postgres"), ("view", "replica"))
    assert before[("syncline_view_applied_events_total", replica)] >= 25
    assert before[("syncline_events_captured_total", ())] >= 25
    assert before[("syncline_view_state", (*replica[:1], ("state", "running"), replica[1]))] == 1
    assert ("syncline_retries_total", (("component", "view"), ("view", "replica"))) in before

    with psycopg.connect(p.source_dsn) as conn:
        for i in range(26, 36):
            conn.execute("INSERT INTO items VALUES (%s, 'y')", (i,))
            conn.commit()
        pos = current_position(conn)
    t0 = time.monotonic()
    code, w = get_json(f"{base}/wait?lsn={pos}&view=replica&timeout=30")
    assert code == 200 and w["applied"] is True and w["lsn"] == pos, w
    assert time.monotonic() - t0 < 30
    assert p.sql("SELECT count(*) FROM items", db=p.replica_db)[0][0] == 35

    after = scrape(base)
    assert (
        after[("syncline_view_applied_events_total", replica)]
        >= before[("syncline_view_applied_events_total", replica)] + 10
    )
    assert (
        after[("syncline_events_captured_total", ())] >= before[("syncline_events_captured_total", ())] + 10
    )
    assert after[("syncline_log_last_seq", ())] >= before[("syncline_log_last_seq", ())] + 10
    assert after[("syncline_view_applied_lsn", replica)] > before[("syncline_view_applied_lsn", replica)]
    assert after[("syncline_view_lag_events", replica)] == 0
    assert after[("syncline_log_size_bytes", ())] > 0

    # a position nobody has reached yet: 408 after the timeout
    t0 = time.monotonic()
    code, w = get_json(f"{base}/wait?lsn=FFFFFFFF/0&timeout=0.5")
    assert code == 408 and w["applied"] is False
    assert 0.4 < time.monotonic() - t0 < 10
    with pytest.raises(WaitTimeout):
        client.wait_for("FFFFFFFF/0", ["replica"], timeout=0.3)

    assert get_json(f"{base}/wait?view=nope")[0] == 400
    assert get_json(f"{base}/wait?lsn=xyz")[0] == 400
    assert get_json(f"{base}/wait?timeout=-1")[0] == 400
    assert get_json(f"{base}/nope")[0] == 404
    with pytest.raises(ClientError, match="no view named nope"):
        client.wait_for(pos, ["nope"])
    assert p.stop() == 0


def test_healthz_fails_with_a_failed_view(pg: PgCluster, tmp_path: Path) -> None:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres", "tantivy"), http_listen=f"127.0.0.1:{port}")
    try:
        p.sql("CREATE TABLE items (id int PRIMARY KEY)")
        text = p.config_path.read_text()  # a terminal error of the search view
        p.config_path.write_text(text.replace('kind = "tantivy"', 'kind = "tantivy"\ntokenizer = "nope"'))
        p.start()
        base = f"http://127.0.0.1:{port}"
        wait_http(base)
        deadline = time.monotonic() + 60
        while True:
            code, h = get_json(base + "/healthz")
            if code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 503 and h["status"] == "failing", h
        assert h["problems"] == ["view search failed"] and h["views"]["search"] == "failed"
        m = scrape(base)
        key = (("component", "view"), ("error", "ConfigError"), ("kind", "terminal"), ("view", "search"))
        assert m[("syncline_errors_total", key)] == 1
        assert m[("syncline_view_state", (("kind", "tantivy"), ("state", "failed"), ("view", "search")))] == 1
        Client(base).wait_for(None, ["replica"], timeout=60)  # the other view goes on
        assert p.stop() == 0
    finally:
        p.close()


def test_port_in_use_is_one_clear_error(pg: PgCluster, tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        p = Pipeline(pg, tmp_path, views=("postgres",), http_listen=f"127.0.0.1:{port}")
        try:
            r = subprocess.run(
                [sys.executable, "-m", "syncline", "run", "-c", str(p.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            p.close()
    finally:
        holder.close()
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"syncline: error: http.listen 127.0.0.1:{port}: cannot listen")
    assert "address already in use" in lines[0]


def test_token_required_beyond_loopback(
    pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres",), http_listen=f"127.0.0.1:{port}")
    try:
        p.sql("CREATE TABLE items (id int PRIMARY KEY)")
        text = p.config_path.read_text()
        # beyond loopback without a token: a configuration error, for run and every command
        p.config_path.write_text(text.replace(f"127.0.0.1:{port}", f"0.0.0.0:{port}"))
        for cmd in ("run", "status"):
            r = subprocess.run(
                [sys.executable, "-m", "syncline", cmd, "-c", str(p.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 2, (cmd, r.stderr)
            assert "http.listen: '0.0.0.0:" in r.stderr and "set http.token" in r.stderr

        monkeypatch.setenv("SYNCLINE_TEST_TOKEN", TOKEN)
        p.config_path.write_text(
            text.replace(
                f'listen = "127.0.0.1:{port}"',
                f'listen = "0.0.0.0:{port}"\ntoken = "${{SYNCLINE_TEST_TOKEN}}"',
            )
        )
        p.cfg = load_config(p.config_path)
        assert os.environ["SYNCLINE_TEST_TOKEN"] == TOKEN
        p.start()
        base = f"http://127.0.0.1:{port}"
        wait_http(base)
        for path in ("/status", "/wait?timeout=0", "/metrics", "/nope"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, token="wrong")[0] == 401, path
        assert get(base + "/status", token=TOKEN.upper())[0] == 401
        assert get(base + "/healthz")[0] in (200, 503)  # probes need no token
        assert get(base + "/status", token=TOKEN)[0] == 200
        assert get(base + "/metrics", token=TOKEN)[0] == 200
        Client(base, TOKEN).wait_for(None, timeout=60)
        with pytest.raises(ClientError, match="HTTP 401"):
            Client(base).wait_for(None, timeout=5)
        assert p.stop() == 0
        assert TOKEN not in p.output()
    finally:
        p.close()


@pytest.mark.parametrize(
    ("http", "listen", "address", "loopback"),
    [
        ("", "127.0.0.1:8474", ("127.0.0.1", 8474), True),
        ('listen = "off"', "off", None, None),
        ('listen = ""', "", None, None),
        ('listen = "[::1]:9000"', "[::1]:9000", ("::1", 9000), True),
        ('listen = "localhost:9000"', "localhost:9000", ("localhost", 9000), True),
        ('listen = "0.0.0.0:9000"\ntoken = "${TOK}"', "0.0.0.0:9000", ("0.0.0.0", 9000), False),
    ],
)
def test_http_config(
    tmp_path: Path, http: str, listen: str, address: tuple[str, int] | None, loopback: bool | None
) -> None:
    f = tmp_path / "s.toml"
    f.write_text(f'[source]\ndsn = "x"\n[http]\n{http}\n')
    cfg = load_config(f, environ={"TOK": TOKEN})
    assert cfg.http.listen == listen
    assert cfg.http.enabled == (address is not None)
    if address is not None:
        assert cfg.http.address() == address and cfg.http.loopback == loopback
    if cfg.http.token is not None:
        assert TOKEN in cfg.secrets() and TOKEN not in repr(cfg)


@pytest.mark.parametrize(
    ("http", "needle"),
    [
        ('listen = "8474"', "http.listen: expected HOST:PORT"),
        ('listen = "127.0.0.1:0"', "http.listen: expected HOST:PORT"),
        ('listen = "::1:8474"', "http.listen: expected HOST:PORT"),
        ('listen = "0.0.0.0:8474"', "is reachable beyond this machine: set http.token"),
        ('listen = ":8474"', "is reachable beyond this machine: set http.token"),
        ('listen = "example.com:8474"\ntoken = ""', "is reachable beyond this machine: set http.token"),
        ('listen = "127.0.0.1:8474"\nport = 1', "http.port: unknown key"),
    ],
)
def test_http_config_errors(tmp_path: Path, http: str, needle: str) -> None:
    from syncline.core.errors import ConfigError

    f = tmp_path / "s.toml"
    f.write_text(f'[source]\ndsn = "x"\n[http]\n{http}\n')
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(f, environ={})


def test_methods_other_than_get_get_a_json_405(served: tuple[Pipeline, str]) -> None:
    """(issue 13) HEAD, POST and unknown methods got http.server's HTML 501."""
    import http.client

    _p, base = served
    host, port = base.removeprefix("http://").split(":")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "HEAD"):
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request(method, "/status", body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        assert r.status == 405, (method, r.status, body)
        assert r.getheader("Allow") == "GET" and r.getheader("Content-Type") == "application/json"
        if method == "HEAD":
            assert body == b""
        else:
            assert json.loads(body)["error"].startswith(f"method {method} not allowed"), body
    # a malformed request line: JSON too
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /status HTTP/9.9 extra\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):  # the server closes the connection after an error
            raw += chunk
    # a status line and headers, then the JSON error
    assert raw.startswith(b"HTTP/1.0 400 "), raw
    body = raw.partition(b"\r\n\r\n")[2]
    assert b"<html" not in raw.lower() and "error" in json.loads(body), raw
    code, _ = get(f"{base}/healthz")
    assert code == 200  # the server lives on
