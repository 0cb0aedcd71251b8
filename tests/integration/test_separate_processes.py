"""``syncline capture`` and ``syncline apply --view`` as separate processes over a NATS log,
each with its own ``[log] path`` (nothing shared on disk, as on separate hosts): the views
equal the source through kills of an applier and of the capture mid-transaction, and
``status``, ``wait`` and ``verify`` answer from a fourth directory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import kill_group


class Host:
    """One "host": its own config (same source, log stream and views; its own path)."""

    def __init__(self, p: Pipeline, name: str) -> None:
        self.dir = p.workdir / name
        self.dir.mkdir()
        text = p.config_path.read_text().replace(f'path = "{p.log_path}"', f'path = "{self.dir / "state"}"')
        assert text != p.config_path.read_text()
        self.config = self.dir / "syncline.toml"
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, *args: str) -> None:
        self.runs += 1
        with open(self.dir / f"out{self.runs}.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncline", *args, "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.args = args

    def restart(self) -> None:
        self.start(*self.args)

    def kill(self) -> None:
        kill_group(self.proc)
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(60)
        self.proc = None
        return code

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncline", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def output(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.dir.glob("out*.log")))


def writer(dsn: str, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                i += 1
                c.execute(
                    "INSERT INTO items (id, v) VALUES (%s, 'new') ON CONFLICT (id) DO UPDATE SET v = 'again'",
                    (i % 700,),
                )
                c.execute("UPDATE counters SET n = n + 1 WHERE id = %s", (i % 10,))
                time.sleep(0.002)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


@pytest.mark.parametrize("views", [("postgres", "redis")])
def test_capture_and_appliers_in_separate_processes(
    pg: object, tmp_path: Path, views: tuple[str, ...]
) -> None:
    p = Pipeline(pg, tmp_path, views=views, log_kind="nats")  # type: ignore[arg-type]
    hosts: list[Host] = []
    try:
        p.sql(
            "CREATE TABLE items (id int PRIMARY KEY, v text);"
            "CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);"
            "INSERT INTO counters SELECT g, 0 FROM generate_series(0, 9) g;"
            "INSERT INTO items SELECT g, 'old' FROM generate_series(1000, 3000) g"
        )
        capture, apply_r, apply_c, ops = (Host(p, n) for n in ("capture", "replica", "cache", "ops"))
        hosts += [capture, apply_r, apply_c]
        apply_r.start("apply", "--view", "replica")  # before the log exists: it waits for it
        capture.start("capture")
        apply_c.start("apply", "--view", "cache")
        stop = threading.Event()
        errors: list[BaseException] = []
        t = threading.Thread(target=writer, args=(p.source_dsn, stop, errors))
        t.start()
        try:
            r = ops.cli("wait", "--timeout", "120")
            assert r.returncode == 0, r.stdout + r.stderr + capture.output() + apply_r.output()
            # a second applier of the same view waits while the first holds it
            spare = Host(p, "replica2")
            hosts.append(spare)
            spare.start("apply", "--view", "replica")
            deadline = time.monotonic() + 30
            while "is applied by process" not in spare.output() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "is applied by process" in spare.output(), spare.output()
            apply_r.kill()  # the first dies: the spare takes over; the capture goes on
            time.sleep(2)
            # the capture dies inside a big transaction, then comes back
            p.sql("INSERT INTO items SELECT g, repeat('x', 300) FROM generate_series(10000, 90000) g")
            time.sleep(0.5)
            capture.kill()
            time.sleep(1)
            capture.restart()
            time.sleep(2)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        r = ops.cli("wait", "--timeout", "180")
        assert r.returncode == 0, r.stdout + r.stderr + capture.output()
        st = json.loads(ops.cli("status", "--json").stdout)
        assert st["log"]["kind"] == "nats" and st["log"]["stream"] == p.cfg.log.stream
        assert {n: v["state"] for n, v in st["views"].items()} == {"replica": "running", "cache": "running"}
        assert "resumes after log record" in spare.output(), spare.output()
        p.assert_equal()
        r = ops.cli("verify", "-q")
        assert r.returncode == 0, r.stdout + r.stderr
        # nothing applied twice: each counter in the replica equals the source's
        assert p.sql("SELECT id, n FROM counters ORDER BY id") == p.sql(
            "SELECT id, n FROM public.counters ORDER BY id", p.replica_db
        )
        for h in hosts:
            if h.proc is not None:
                assert h.stop() == 0, h.output()
    finally:
        for h in hosts:
            h.kill()
        p.close()


def test_a_view_added_on_another_host_after_trimming_is_filled_from_the_published_compacted_state(
    pg: object, tmp_path: Path
) -> None:
    """The stream is trimmed only up to a compacted state published to NATS: a view that
    starts later on a host without the capture's files is filled from it, then follows."""
    from syncline.log import open_observer
    from syncline.testing.compare import compare_redis, source_tables
    from syncline.testing.harness import RedisServer

    p = Pipeline(pg, tmp_path, views=("redis",), log_kind="nats")  # type: ignore[arg-type]
    text = p.config_path.read_text()
    p.config_path.write_text(text.replace("replicas = 1", "replicas = 1\ncompact_publish_interval = 1"))
    hosts: list[Host] = []
    late = RedisServer(tmp_path / "late-redis")
    try:
        p.sql(
            "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'a' FROM generate_series(1, 3000) g"
        )
        capture, cache, ops = (Host(p, n) for n in ("capture", "cache", "ops"))
        hosts += [capture, cache]
        capture.start("capture")
        cache.start("apply", "--view", "cache")
        for i in range(30):  # deletes, updates, inserts over time: records to trim
            p.sql(
                f"UPDATE items SET v = 'b{i}' WHERE id % 30 = {i}; DELETE FROM items WHERE id = {i * 50 + 7}"
            )
            p.sql(f"INSERT INTO items VALUES ({10_000 + i}, 'n')")
        assert ops.cli("wait", "--timeout", "120").returncode == 0
        deadline = time.monotonic() + 60
        trimmed = 0
        while trimmed == 0:
            assert time.monotonic() < deadline, capture.output()[-3000:]
            obs = open_observer(p.cfg.log)
            try:
                trimmed = int(obs.meta("trimmed_seq", "0"))
            finally:
                obs.close()
            time.sleep(0.5)
        assert "published the compacted state at log record" in capture.output()
        # a new view, configured on a new host only: the capture's host never heard of it
        newer = Host(p, "newer")
        hosts.append(newer)
        newer.config.write_text(
            newer.config.read_text() + f'[views.late]\nkind = "redis"\nurl = "{late.url}"\n'
        )
        newer.start("apply", "--view", "late")
        p.sql("UPDATE items SET v = 'after' WHERE id < 100")
        r = newer.cli("wait", "--view", "late", "--timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr + newer.output()[-3000:]
        assert "fetched the compacted state" in newer.output(), newer.output()[-3000:]
        diffs = compare_redis(p.source_dsn, late.url, source_tables(p.source_dsn))
        assert all(d.equal for d in diffs), diffs
        for h in hosts:
            assert h.stop() == 0, h.output()[-3000:]
    finally:
        for h in hosts:
            h.kill()
        late.stop()
        p.close()
