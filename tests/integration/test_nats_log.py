"""The NATS JetStream log against a real nats-server and PostgreSQL: a capture killed with
records above the high-water mark in the stream (the tail of a transaction not yet
committed to the log), records above the server's ``max_payload`` (chunks), bad ``[log]``
settings (one clear error, no credentials printed), a second capture on a stream in use,
and a NATS server restart under load.

Besides comparing every view with the source, the stream itself is read with nats-py:
every record up to the KV ``pos`` high-water mark has a well-formed ``Syncline-Record``
header, its data splits into exactly ``count`` framed messages, chunks are complete, and
no transaction's part is in the stream twice (nor missing: ``first_ord`` and ``events``
chain from one record to the next)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.errors
import psycopg
import pytest
from nats.js import api

from syncline.core.records import is_packed, item_kinds
from syncline.testing.harness import Pipeline
from syncline.testing.natsserver import nats_server_binary
from syncline.testing.pgcluster import PgCluster, free_port, kill_group

RECORD = "Syncline-Record"
CHUNK = "Syncline-Chunk"
U32 = struct.Struct("!I")


# -- reading the stream and the KV bucket with nats-py ----------------------------------------


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _present(url: str, stream: str, seqs: range) -> list[int]:
    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        jsm = nc.jsm()
        out = []
        for s in seqs:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.get_msg(stream, s, direct=True)
                out.append(s)
        return out
    finally:
        await nc.close()


def present(url: str, stream: str, seqs: range) -> list[int]:
    """Which of ``seqs`` the stream holds."""
    return run(_present(url, stream, seqs))


async def _pos(url: str, stream: str) -> tuple[dict[str, Any], api.StreamState]:
    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        kv = await js.key_value(f"{stream}-meta")
        try:
            pos = json.loads((await kv.get("pos")).value or b"{}")
        except nats.js.errors.KeyNotFoundError:
            pos = {}
        return pos, (await js.stream_info(stream)).state
    finally:
        await nc.close()


def pos_and_state(url: str, stream: str) -> tuple[dict[str, Any], api.StreamState]:
    """The KV ``pos`` document and the stream's state (last_seq, messages...)."""
    return run(_pos(url, stream))


def frames(data: bytes) -> list[bytes]:
    """Split a record's data into its length-prefixed messages; AssertionError on garbage."""
    out, at = [], 0
    while at < len(data):
        assert at + 4 <= len(data), f"truncated frame length at {at} of {len(data)}"
        (n,) = U32.unpack_from(data, at)
        at += 4
        assert at + n <= len(data), f"frame of {n} bytes at {at} runs past the end ({len(data)})"
        out.append(data[at : at + n])
        at += n
    return out


@dataclass
class Rec:
    seq: int
    """The record's seq (its last chunk's stream sequence)."""
    commit_lsn: int
    end_lsn: int
    xid: int
    last: int
    snapshot: int
    first_ord: int
    count: int
    events: int
    prev: int
    """The seq of the record before it (-1: a header without that field)."""
    chunks: int
    kinds: dict[str, int] = field(default_factory=dict)
    """Messages of the record by pgoutput type byte ('I', 'U', 'D', 'R', ...)."""


@dataclass
class Scan:
    hw: int
    pos: dict[str, Any]
    state: api.StreamState
    records: list[Rec]
    missing: list[int]
    """Sequences up to hw that the stream does not hold (deleted tails)."""
    largest: int
    """Largest message data in bytes."""


async def _scan(url: str, stream: str) -> Scan:
    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        jsm = nc.jsm()
        kv = await js.key_value(f"{stream}-meta")
        pos = json.loads((await kv.get("pos")).value or b"{}")
        hw = int(pos["hw"])
        state = (await js.stream_info(stream)).state
        records: list[Rec] = []
        missing: list[int] = []
        largest = 0
        parts: list[tuple[int, str, int, int, bytes]] = []  # (seq, head, i, n, data)
        for seq in range(max(1, int(state.first_seq or 1)), hw + 1):
            try:
                m = await jsm.get_msg(stream, seq, direct=True)
            except nats.js.errors.NotFoundError:
                missing.append(seq)
                assert not parts, f"record chunks {[p[0] for p in parts]} interrupted by a hole at {seq}"
                continue
            hdr = m.headers or {}
            assert m.subject == f"{stream}.rec", (seq, m.subject)
            assert RECORD in hdr, f"message {seq} has no {RECORD} header: {hdr}"
            head = hdr[RECORD]
            ints = [int(x) for x in head.split()]
            assert len(ints) in (9, 10), f"message {seq}: {RECORD} {head!r} is not 9 or 10 integers"
            data = m.data or b""
            largest = max(largest, len(data))
            if CHUNK in hdr:
                i, n = (int(x) for x in hdr[CHUNK].split("/"))
                assert 1 <= i <= n and n > 1, (seq, hdr[CHUNK])
                if parts:
                    pseq, phead, pi, pn, _ = parts[-1]
                    assert (pseq + 1, phead, pi + 1, pn) == (seq, head, i, n), (
                        f"chunk {i}/{n} at {seq} does not follow chunk {pi}/{pn} at {pseq}"
                    )
                else:
                    assert i == 1, f"message {seq} is chunk {i}/{n} without the chunks before it"
                parts.append((seq, head, i, n, data))
                if i < n:
                    continue
                data = b"".join(p[4] for p in parts)
                nchunks = len(parts)
                parts = []
            else:
                assert not parts, f"record chunks {[p[0] for p in parts]} cut short at {seq}"
                nchunks = 1
            # a packed record (the writer's form) is checked by decoding it; a framed one here
            letters = item_kinds(data) if is_packed(data) else [chr(m[0]) for m in frames(data)]
            clsn, end, xid, _ctime, last, snap, ford, count, events = ints[:9]
            prev = ints[9] if len(ints) > 9 else -1
            assert len(letters) == count, f"record {seq}: {len(letters)} messages, header says {count}"
            kinds: dict[str, int] = {}
            for k in letters:
                kinds[k] = kinds.get(k, 0) + 1
            records.append(Rec(seq, clsn, end, xid, last, snap, ford, count, events, prev, nchunks, kinds))
        assert not parts, f"hw {hw} ends inside a record (chunks {[p[0] for p in parts]})"
        return Scan(hw, pos, state, records, missing, largest)
    finally:
        await nc.close()


def check_stream(url: str, stream: str) -> Scan:
    """Read every record up to hw and check that the log is one clean sequence of
    transactions: headers parse, data splits into ``count`` messages, no transaction part
    twice, none missing."""
    scan = run(_scan(url, stream))
    recs = scan.records
    if not recs:  # retention may have trimmed everything every view applied
        assert int(scan.state.first_seq or 0) > scan.hw, f"no records up to hw {scan.hw}: {scan.state}"
        return scan
    keys = [(r.commit_lsn, r.first_ord) for r in recs]
    dups = {k for k in keys if keys.count(k) > 1}
    assert not dups, f"records in the stream twice (commit_lsn, first_ord): {sorted(dups)[:10]}"
    for prev, r in itertools.pairwise(recs):
        # cumulative events: each record adds exactly its own count (nothing twice, nothing lost)
        assert r.events == prev.events + r.count, f"events chain broken between {prev} and {r}"
        assert r.prev in (-1, prev.seq), f"{r} names {r.prev} as the record before it, not {prev.seq}"
        assert (r.commit_lsn, r.first_ord) > (prev.commit_lsn, prev.first_ord) or r.snapshot, (
            f"records out of order: {prev} then {r}"
        )
        if prev.last:
            assert r.first_ord == 0, f"{r} starts a transaction in the middle"
        else:  # the next part of the same transaction
            assert (r.commit_lsn, r.xid, r.first_ord) == (
                prev.commit_lsn,
                prev.xid,
                prev.first_ord + prev.count,
            ), f"{prev} is not followed by its transaction's next part but by {r}"
    assert recs[-1].last, f"hw {scan.hw} is inside a transaction: {recs[-1]}"
    assert recs[-1].seq == scan.hw
    return scan


def inserts_by_tx(scan: Scan) -> dict[int, int]:
    """Insert messages per transaction (by commit LSN)."""
    out: dict[int, int] = {}
    for r in scan.records:
        out[r.commit_lsn] = out.get(r.commit_lsn, 0) + r.kinds.get("I", 0)
    return out


# -- helpers for pipelines ------------------------------------------------------------------------


def set_servers(p: Pipeline, servers: list[str]) -> None:
    text = p.config_path.read_text()
    old = f'servers = ["{p.nats.url}"]' if p.nats is not None else None
    assert old is not None and old in text
    p.config_path.write_text(text.replace(old, "servers = " + json.dumps(servers)))


def writer(dsn: str, stop: threading.Event, errors: list[BaseException], counter: list[int]) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                i += 1
                c.execute("INSERT INTO items (v) VALUES (%s)", (f"row {i}",))
                c.execute("UPDATE counters SET n = n + 1 WHERE id = %s", (i % 10,))
                if i % 50 == 0:
                    c.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 5)")
                counter[0] = i
                time.sleep(0.002)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


# -- 1. a capture killed while it publishes a big transaction --------------------------------------

ROWS = 120_000


async def _kill_when(p: Pipeline, lsn: int, tail: int, timeout: float = 90) -> None:
    """Poll the stream every 20 ms; SIGKILL the pipeline as soon as ``tail`` records above
    hw are in the stream (or the transaction at ``lsn`` is wholly durable: too late)."""
    assert p.nats is not None
    stream = p.cfg.log.stream
    nc = await nats.connect(p.nats.url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(f"{stream}-meta")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pos = json.loads((await kv.get("pos")).value or b"{}")
            last = int((await js.stream_info(stream)).state.last_seq or 0)
            if last - int(pos.get("hw", 0)) >= tail or int(pos.get("durable_end_lsn", 0)) >= lsn:
                break
            await asyncio.sleep(0.02)
        p.kill()
    finally:
        await nc.close()


def wait_new_epoch(url: str, stream: str, old: set[str], timeout: float = 60) -> dict[str, Any]:
    """Until a capture opened the log under an epoch not in ``old`` (having deleted any
    tail): its ``pos`` document."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pos = pos_and_state(url, stream)[0]
        if str(pos.get("epoch", "")) not in old:
            return pos
        time.sleep(0.05)
    raise AssertionError(f"no capture opened the log in {timeout}s")


def test_capture_killed_with_a_tail_in_the_stream(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    assert p.nats is not None
    url, stream = p.nats.url, p.cfg.log.stream
    try:
        p.keep_log()  # the stream keeps every record, so it can be checked whole
        p.sql("CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL)")
        p.start()
        p.wait_caught_up()
        # kill: at the first record of the tail, while the transaction is still being decoded
        # (before anything of it is published), and deeper in the tail
        kills: list[tuple[int, int, str]] = []  # (hw, last_seq, epoch) right after each kill
        tails: list[list[int]] = []  # the messages above hw right after each kill
        cut: set[int] = set()  # above hw when the next capture opened the log: deleted by it
        lo = 1
        for depth in (1, 0, 5):
            epoch = str(pos_and_state(url, stream)[0].get("epoch", ""))
            p.sql(
                f"INSERT INTO big SELECT g, repeat(md5(g::text), 6) FROM generate_series({lo}, {lo + ROWS - 1}) g"
            )
            lo += ROWS
            if depth:
                run(_kill_when(p, p.current_lsn(), depth))
            else:
                time.sleep(0.3)
                p.kill()
            time.sleep(0.3)  # anything the dead process had in flight has landed
            pos, state = pos_and_state(url, stream)
            kills.append((int(pos["hw"]), int(state.last_seq or 0), str(pos["epoch"])))
            tails.append(present(url, stream, range(kills[-1][0] + 1, kills[-1][1] + 1)))
            p.start()
            hw, last, dead = kills[-1]
            new = wait_new_epoch(url, stream, {epoch, dead})
            cut |= set(range(hw + 1, int(new.get("epoch_start", last + 1))))
        assert any(tails), f"no kill left records above hw in the stream (hw, last_seq): {kills}"
        p.wait_caught_up(timeout=150)
        assert p.stop() == 0, p.output()[-3000:]
        p.assert_equal()
        assert p.sql("SELECT count(*), count(DISTINCT id) FROM big") == [(3 * ROWS, 3 * ROWS)]

        scan = check_stream(url, stream)
        # each crashed capture's tail was deleted before the next one appended (its records
        # were published again, once, above it)
        for tail in tails:
            assert set(tail) <= set(scan.missing), f"tail {tail} still in the stream: {scan.missing}"
        assert set(scan.missing) == cut, (
            f"holes in the stream {scan.missing}; the crashes explain {sorted(cut)}"
        )
        # every big transaction is in the stream exactly once, whole
        big = sorted(n for n in inserts_by_tx(scan).values() if n)
        assert big == [ROWS] * 3, f"insert messages per transaction: {big}"
        assert scan.pos["epoch"] not in {e for _, _, e in kills}
    finally:
        p.close()


# -- 2. records above the server's max_payload --------------------------------------------------


def test_records_larger_than_max_payload_are_chunked(
    pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    assert p.nats is not None
    srv = p.nats
    try:
        srv.stop()
        small = srv.config_text().replace("max_payload: 8MB", "max_payload: 256KB")
        assert "max_payload: 256KB" in small
        monkeypatch.setattr(srv, "config_text", lambda: small)
        srv.start()
        p.keep_log()  # the stream keeps every record, so it can be checked whole
        p.sql(
            "CREATE TABLE blobs (id int PRIMARY KEY, body text NOT NULL);"
            "ALTER TABLE blobs ALTER body SET STORAGE EXTERNAL;"
            "CREATE TABLE small (id int PRIMARY KEY, v text);"
            # before the first start: the initial copy carries a 1 MB value too
            "INSERT INTO blobs VALUES (0, repeat('z', 1 << 20))"
        )
        p.start()
        p.wait_caught_up()
        mb = "repeat(md5(g::text), 32768)"  # 1 MiB
        for g in range(1, 4):  # one 1 MB row per transaction
            p.sql(f"INSERT INTO blobs SELECT g, {mb} FROM (SELECT {g} AS g) s")
        # one transaction of many rows: 12 MB of values among small rows
        p.sql(
            "BEGIN;"
            f"INSERT INTO blobs SELECT g, {mb} FROM generate_series(10, 21) g;"
            "INSERT INTO small SELECT g, repeat('s', 100) FROM generate_series(1, 5000) g;"
            "UPDATE blobs SET body = upper(body) WHERE id IN (1, 10, 11);"
            "DELETE FROM blobs WHERE id = 12;"
            "COMMIT"
        )
        p.sql("UPDATE blobs SET body = body || 'tail' WHERE id = 2")
        p.wait_caught_up(timeout=120)
        assert p.stop() == 0, p.output()[-3000:]
        p.assert_equal()

        scan = check_stream(srv.url, p.cfg.log.stream)
        assert not scan.missing, scan.missing
        chunked = [r for r in scan.records if r.chunks > 1]
        assert chunked, "no record was split into chunks"
        assert scan.largest <= 256 * 1024, f"a message of {scan.largest} bytes above max_payload"
        # a chunked record carries at least one whole 1 MB value
        assert max(r.chunks for r in chunked) >= 4, [r.chunks for r in chunked]
        assert sum(r.kinds.get("I", 0) for r in scan.records) == 1 + 3 + 12 + 5000
    finally:
        p.close()


def test_a_slow_delivery_moves_a_reader_on_in_steps(
    pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read returns what arrived within its budget: with a backlog larger than one budget
    can deliver, each read still moves on (before, a read gathered up to ``batch_events``
    whatever it took, and a slow consumer failed every read of the backlog at the call's
    timeout, starting again from the same position: a view stuck for good)."""
    from syncline.core.events import Checkpoint, RowChange
    from syncline.log.nats import store

    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    try:
        p.keep_log()  # the stream keeps every record, so it can be checked whole
        p.sql("CREATE TABLE steps (id int PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        for i in range(200):
            p.sql(f"INSERT INTO steps VALUES ({i}, 'v{i}')")
        p.sql("INSERT INTO steps SELECT g, repeat('x', 50) FROM generate_series(1000, 6000) g")
        p.wait_caught_up(timeout=120)
        assert p.stop() == 0, p.output()[-3000:]

        monkeypatch.setattr(store, "FETCH_BUDGET", 0.0)
        reader = store.NatsLogReader(p.cfg.log)
        try:
            hw = reader.hw()
            seqs: list[int] = []
            sizes: list[int] = []
            inserts = 0
            after = Checkpoint(0)
            reader.start(after)
            while after.seq < hw:
                got = reader.read(after, 1_000_000)
                assert got, f"no record after {after.seq} (log up to {hw})"
                sizes.append(len(got))
                seqs += [t.seq for t in got]
                inserts += sum(
                    1 for t in got for it in t.items if isinstance(it, RowChange) and it.op == "insert"
                )
                after = Checkpoint(got[-1].seq)
        finally:
            reader.close()
        assert seqs == sorted(set(seqs)), "records out of order or twice"
        assert max(sizes) == 1, f"a read past its budget returned {max(sizes)} records"
        assert inserts == 200 + 5001, inserts
    finally:
        p.close()


# -- 3. bad [log] settings: one clear error, nothing printed that should not be ----------------


@dataclass
class Unreachable:
    port: int
    run_rc: int | None
    """None: still running when given up on."""
    run_out: str
    run_seconds: float
    """When it exited or (still running) was given up on."""
    error_seconds: float | None
    """When its first ERROR line appeared."""
    status_rc: int
    status_out: str
    slots: int


@pytest.fixture(scope="module")
def unreachable(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Unreachable:
    """``syncline run`` and ``syncline status`` at the same time, with ``[log] servers``
    where nothing listens (and a password in the URL)."""
    p = Pipeline(pg, tmp_path_factory.mktemp("unreachable"), views=("postgres",), log_kind="nats")
    try:
        port = free_port()
        set_servers(p, [f"nats://user:secretpw@127.0.0.1:{port}"])
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        t0 = time.monotonic()
        st = subprocess.Popen(
            [sys.executable, "-m", "syncline", "status", "-c", str(p.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        p.start()
        assert p.proc is not None
        err: float | None = None
        while p.proc.poll() is None and time.monotonic() - t0 < 60:
            if err is None and " ERROR " in p.output():
                err = time.monotonic() - t0
            if err is not None and time.monotonic() - t0 > err + 3:
                break  # it has said why; a quick exit follows, or it does not
            time.sleep(0.1)
        rc = p.proc.poll()
        took = time.monotonic() - t0
        p.kill()
        status_out, _ = st.communicate(timeout=60)
        slots = p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'")[0][0]
        return Unreachable(port, rc, p.output(), took, err, st.returncode, status_out, int(slots))
    finally:
        p.close()


def test_unreachable_nats_never_prints_the_password(unreachable: Unreachable) -> None:
    u = unreachable
    assert "secretpw" not in u.run_out + u.status_out
    where = f"nats://***@127.0.0.1:{u.port}"
    lines = [ln for ln in u.run_out.splitlines() if "NATS" in ln and where in ln and "ERROR" in ln]
    assert lines, f"syncline run printed no error naming NATS at {where}:\n{u.run_out}"
    assert u.slots == 0, "a replication slot was created although the log cannot be reached"


def test_unreachable_nats_run_fails_at_once_saying_it_cannot_connect(unreachable: Unreachable) -> None:
    u = unreachable
    assert [ln for ln in u.run_out.splitlines() if "cannot" in ln and "NATS" in ln], u.run_out
    assert u.error_seconds is not None and u.error_seconds < 15, f"error after {u.error_seconds}s"
    assert u.run_rc is not None and u.run_rc != 0, (
        f"syncline run still running after {u.run_seconds:.0f}s:\n{u.run_out}"
    )


def test_unreachable_nats_status_fails(unreachable: Unreachable) -> None:
    u = unreachable
    assert u.status_rc != 0, f"syncline status exited 0:\n{u.status_out}"
    assert "NATS" in u.status_out, u.status_out


@pytest.mark.parametrize("wrong", ["memory", "subjects"])
def test_existing_stream_with_other_settings_is_refused(pg: PgCluster, tmp_path: Path, wrong: str) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    assert p.nats is not None
    stream = p.cfg.log.stream

    async def create() -> None:
        nc = await nats.connect(p.nats.url)
        try:
            js = nc.jetstream()
            if wrong == "memory":
                await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=api.StorageType.MEMORY)
                await js.publish(f"{stream}.other", b"theirs")
            else:
                await js.add_stream(name=stream, subjects=["elsewhere.>"], storage=api.StorageType.FILE)
                await js.publish("elsewhere.x", b"theirs")
        finally:
            await nc.close()

    async def info() -> api.StreamInfo:
        nc = await nats.connect(p.nats.url)
        try:
            return await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()

    try:
        run(create())
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        rc, out = p.run_to_exit()
        assert rc != 0, out
        lines = [ln for ln in out.splitlines() if repr(stream) in ln and "settings" in ln]
        assert lines, f"no error naming the stream and its settings:\n{out}"
        assert ("memory storage" if wrong == "memory" else "subjects") in lines[0], lines[0]
        # the stream is left as it was
        i = run(info())
        assert i.state.messages == 1
        assert i.config.storage == (api.StorageType.MEMORY if wrong == "memory" else api.StorageType.FILE)
        assert p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'") == [(0,)]
    finally:
        p.close()


def test_nats_without_jetstream_is_refused(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    port = free_port()
    conf = tmp_path / "plain-nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\n')
    with open(tmp_path / "plain-nats.log", "wb") as log:
        plain = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats-server without JetStream did not start"
                time.sleep(0.05)
        set_servers(p, [f"nats://127.0.0.1:{port}"])
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        rc, out = p.run_to_exit()
        assert rc != 0, out
        assert [ln for ln in out.splitlines() if "JetStream" in ln], f"no error mentioning JetStream:\n{out}"
        assert p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'") == [(0,)]
    finally:
        plain.kill()
        plain.wait()
        p.close()


# -- 4. a second capture on a stream in use ---------------------------------------------------


async def _kv_doc(url: str, stream: str, key: str) -> dict[str, Any]:
    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        kv = await nc.jetstream().key_value(f"{stream}-meta")
        try:
            doc: dict[str, Any] = json.loads((await kv.get(key)).value or b"{}")
        except nats.js.errors.KeyNotFoundError:
            doc = {}
        return doc
    finally:
        await nc.close()


@dataclass
class TwoCaptures:
    p: Pipeline
    """The first pipeline, still running."""
    rc: int | None
    out: str
    seconds: float
    epoch_before: str
    epoch_after: str
    workers: dict[int, str]
    """The first pipeline's worker processes {pid: title}."""
    compactor_lock: dict[str, Any]
    compactor_state: dict[str, Any]


@pytest.fixture(scope="module")
def two_captures(pg: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoCaptures]:
    """``syncline run`` of the same configuration with another ``[log] path`` (a second
    host) while the first runs, until it gives up."""
    tmp = tmp_path_factory.mktemp("two")
    p = Pipeline(pg, tmp, views=("postgres",), log_kind="nats")
    assert p.nats is not None
    url, stream = p.nats.url, p.cfg.log.stream
    other = tmp / "other"
    other.mkdir()
    second = None
    try:
        p.sql("CREATE TABLE items (id bigserial PRIMARY KEY, v text); INSERT INTO items (v) VALUES ('a')")
        p.start()
        p.wait_caught_up()
        before, _ = pos_and_state(url, stream)
        text = p.config_path.read_text()
        text2 = text.replace(f'path = "{p.log_path}"', f'path = "{other / "state"}"')
        assert text2 != text
        (other / "syncline.toml").write_text(text2)
        t0 = time.monotonic()
        with open(other / "run.log", "wb") as out:
            second = subprocess.Popen(
                [sys.executable, "-m", "syncline", "run", "-c", str(other / "syncline.toml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while second.poll() is None and time.monotonic() - t0 < 90:
            p.sql("INSERT INTO items (v) SELECT 'during' FROM generate_series(1, 20)")
            time.sleep(0.5)
        took = time.monotonic() - t0
        after, _ = pos_and_state(url, stream)
        yield TwoCaptures(
            p,
            second.poll(),
            (other / "run.log").read_text(errors="replace"),
            took,
            str(before["epoch"]),
            str(after["epoch"]),
            p.workers(),
            run(_kv_doc(url, stream, "lock._compactor")),
            run(_kv_doc(url, stream, "c._compactor")),
        )
    finally:
        if second is not None and second.poll() is None:
            kill_group(second)
        p.close()


def test_second_capture_on_the_same_stream_is_refused(two_captures: TwoCaptures) -> None:
    t = two_captures
    p = t.p
    assert t.rc is not None, f"the second capture still runs after {t.seconds:.0f}s:\n{t.out[-3000:]}"
    assert t.rc != 0, t.out
    locked = [ln for ln in t.out.splitlines() if "is in use by a capture on" in ln]
    assert locked, t.out[-3000:]
    assert repr(p.cfg.log.stream) in locked[0], locked[0]
    # it gives up after the 30 s it grants a previous `run` of its own that may be dying
    assert t.seconds < 60, f"the second capture took {t.seconds:.0f}s to give up"
    # the first capture kept the log (same epoch: nobody reopened it) and goes on
    assert t.epoch_after == t.epoch_before
    assert p.proc is not None and p.proc.poll() is None, p.output()[-3000:]
    p.sql("INSERT INTO items (v) SELECT 'after' FROM generate_series(1, 500)")
    p.wait_caught_up()
    assert p.stop() == 0, p.output()[-3000:]
    p.assert_equal()
    assert p.nats is not None
    check_stream(p.nats.url, p.cfg.log.stream)


def test_second_capture_does_not_take_over_the_compactor(two_captures: TwoCaptures) -> None:
    t = two_captures
    mine = {pid for pid, title in t.workers.items() if title.endswith("view _compactor")}
    assert mine, t.workers
    assert t.compactor_lock.get("pid") in mine, (
        f"the _compactor lease is held by {t.compactor_lock}, not by the running compactor {mine}"
    )
    others = [ln for ln in t.out.splitlines() if " ERROR " in ln and "is in use by a capture" not in ln]
    assert not others, "the second run did more than give up:\n" + "\n".join(others)
    assert t.compactor_state.get("state") != "failed", t.compactor_state


# -- 5. the NATS server restarts under load ------------------------------------------------------


def test_nats_restart_under_load(pg: PgCluster, tmp_path: Path) -> None:
    """A graceful restart of the server, then a SIGKILL of it, while rows are written."""
    p = Pipeline(pg, tmp_path, views=("postgres",), log_kind="nats")
    assert p.nats is not None
    srv = p.nats
    stop = threading.Event()
    errors: list[BaseException] = []
    counter = [0]
    t = threading.Thread(target=writer, args=(p.source_dsn, stop, errors, counter))
    try:
        p.keep_log()  # the stream keeps every record, so it can be checked whole
        p.sql(
            "CREATE TABLE items (id bigserial PRIMARY KEY, v text);"
            "CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);"
            "INSERT INTO counters SELECT g, 0 FROM generate_series(0, 9) g"
        )
        p.start()
        p.wait_caught_up()
        t.start()
        down: Callable[[], None]
        for down in (srv.stop, srv.kill):
            time.sleep(1.5)
            n = counter[0]
            down()
            time.sleep(2.0)  # writes go on at the source while the log is away
            assert counter[0] > n
            srv.start()
        time.sleep(2.0)
        stop.set()
        t.join()
        assert not errors, errors
        assert counter[0] > 100
        p.wait_caught_up(timeout=90)
        assert p.proc is not None and p.proc.poll() is None
        assert p.stop() == 0, p.output()[-3000:]
        p.assert_equal()
        # nothing applied twice: the counters in the replica are the source's
        assert p.sql("SELECT id, n FROM counters ORDER BY id") == p.sql(
            "SELECT id, n FROM public.counters ORDER BY id", p.replica_db
        )
        check_stream(srv.url, p.cfg.log.stream)
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        p.close()


def test_a_full_jetstream_store_stops_the_capture_without_losing_anything(
    pg: PgCluster, tmp_path: Path
) -> None:
    """JetStream out of storage (it stops itself): the capture and the views wait with one
    line that points at the server's storage, no process dies with a traceback, the slot is
    not confirmed past what the stream holds; given room again, every row arrives."""
    from syncline.testing.natsserver import NatsServer

    server = NatsServer(tmp_path / "nats", jetstream=("max_file_store: 2MB",))
    p = Pipeline(pg, tmp_path / "p", views=("redis",), log_kind="nats", nats_servers=(server.url,))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        p.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g")
        deadline = time.monotonic() + 90
        while "out of storage" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            assert p.proc is not None and p.proc.poll() is None, p.output()[-3000:]
            time.sleep(0.5)
        assert "Traceback" not in p.output(), p.output()[-3000:]
        assert p.sql("SELECT count(*) FROM t") == [(40000,)]
        server.stop()
        server.jetstream = ("max_file_store: 512MB",)
        server.start()
        p.wait_caught_up(timeout=180)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
        server.stop()


def test_a_user_without_jetstream_permissions_gets_one_clear_error(pg: PgCluster, tmp_path: Path) -> None:
    """NATS reports a permissions violation asynchronously and the call then times out: the
    error names the violation and the permissions needed, never the password."""
    from syncline.testing.natsserver import NatsServer

    secret = "s3cret-Pw-9731"
    server = NatsServer(
        tmp_path / "nats",
        extra=(
            'authorization { users = [ {user: "ro", password: "' + secret + '", permissions: '
            '{ publish: { deny: ["$JS.API.>"] } } } ] }',
        ),
    )
    p = Pipeline(
        pg,
        tmp_path / "p",
        views=("redis",),
        log_kind="nats",
        nats_servers=(f"nats://ro:{secret}@127.0.0.1:{server.port}",),
    )
    try:
        r, last = run_until_it_refuses(p)
        assert "refused this user" in last and "permissions violation" in last, r.stderr
        assert "$JS.API.>" in last, last
        assert secret not in r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
    finally:
        p.close()
        server.stop()


def test_more_replicas_than_the_servers_can_keep_is_one_clear_error(pg: PgCluster, tmp_path: Path) -> None:
    from syncline.testing.natsserver import NatsServer

    server = NatsServer(tmp_path / "nats")
    p = Pipeline(
        pg, tmp_path / "p", views=("redis",), log_kind="nats", nats_servers=(server.url,), nats_replicas=3
    )
    try:
        r, last = run_until_it_refuses(p)
        assert "cannot keep 3 copies" in last and "replicas = 3 needs a JetStream cluster" in last, r.stderr
    finally:
        p.close()
        server.stop()


def run_until_it_refuses(p: Pipeline) -> tuple[subprocess.CompletedProcess[str], str]:
    """``syncline run`` in the foreground, which must stop on its own: its result and the
    last line of its stderr (the one-line error)."""
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "run", "-c", str(p.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0, r.stdout + r.stderr
    return r, r.stderr.strip().splitlines()[-1]
