"""The log on NATS JetStream: records in a stream, positions and table shapes in a KV bucket.

Layout (``[log] stream = S``):

- stream ``S``, subject ``S.rec``: one message per log record (a part of a transaction:
  framed change messages, the same record the embedded log keeps), its header
  ``Syncline-Record`` holding ``commit_lsn end_lsn xid commit_time last snapshot first_ord
  count events prev``: ``events`` counts every change event up to this record (so lag in
  events is the difference of two records' headers), ``prev`` is the seq of the record before
  it (readers check the chain: a record is never skipped unnoticed). The stream sequence *is* the record's
  seq. A record larger than the server's ``max_payload`` is sent as consecutive chunks
  (header ``Syncline-Chunk: i/n``); its seq is the last chunk's.
- KV bucket ``S-meta``: ``pos`` (the high-water mark ``hw``: every record up to it belongs to
  a committed transaction; the durable source positions; the writer's epoch and lease),
  ``meta`` (what the capture records: state, slot, copies, sequences), ``trim`` (what
  retention removed) and ``rel.OID`` (each table's shapes, by the seq they start at).

Appends are exactly once: each message carries ``Nats-Expected-Last-Sequence`` (the stream
refuses a message that does not follow the one before it, so two captures can never
interleave, and a lost acknowledgement cannot produce a duplicate) and a ``Nats-Msg-Id``
unique to the writer's epoch. ``hw`` moves only after the stream acknowledged every message
up to it, and the source is told to forget WAL only up to ``hw``'s transactions. A capture
that died leaves messages above ``hw``: the next one deletes them before it appends, under a
new epoch; readers that saw the old epoch start again from their position.

The control plane is in the same bucket (:mod:`syncline.log.nats.control`); the compacted
log stays in the ``[log] path`` of the host that runs the capture.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from syncline.core.codec import relation_from_json
from syncline.core.config_models import LogConfig
from syncline.core.errors import LogError, LogUnavailable
from syncline.core.events import Checkpoint, Item, Relation, Transaction
from syncline.core.position import Position
from syncline.core.procs import holder_alive
from syncline.core.records import RelationResolver, decode_items, legacy_relations
from syncline.log.base import LOG_ID, LogLocked, new_log_id
from syncline.log.embedded.store import PART_BYTES, EmbeddedLogWriter, poisons
from syncline.log.nats.client import Nats
from syncline.log.nats.control import delete_key, entries

RECORD = "Syncline-Record"
CHUNK = "Syncline-Chunk"
LEASE_SECONDS = 10.0
"""A capture refreshes its lease at least this often; another may take over after it."""
ACK_TIMEOUT = 15.0
"""Seconds to wait for the stream's acknowledgements of one batch; after that the writer is
broken (acknowledgements lost with a connection never come) and a new one starts again from
``hw``."""
FETCH_BUDGET = 1.0
"""Seconds a read gathers records once it holds one: it returns what it has then, so a slow
delivery (flow control, a consumer moving after a leader change) moves a view on in steps
rather than failing every read of a large backlog at the call's timeout."""
DELIVERY_TIMEOUT = 10.0
"""Seconds to wait for the next record the log says is there before the read fails (the
reader then starts again from the view's position)."""
POS_KEYS = ("hw", "durable_end_lsn", "last_commit_lsn", "received_lsn")
TRIM_KEYS = ("trimmed_seq", "trimmed_commit_lsn", "trimmed_events")


def subject(stream: str) -> str:
    return f"{stream}.rec"


def ensure_stream(conn: Nats, cfg: LogConfig) -> api.StreamInfo:
    """The log's stream, created on first use; one clear error when an existing stream has
    other settings than the log needs."""

    async def go() -> api.StreamInfo:
        try:
            info = await conn.js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError:
            try:
                return await conn.js.add_stream(
                    name=cfg.stream,
                    subjects=[f"{cfg.stream}.>"],
                    storage=api.StorageType.FILE,
                    num_replicas=cfg.replicas,
                    retention=api.RetentionPolicy.LIMITS,
                    discard=api.DiscardPolicy.NEW,
                    duplicate_window=120.0,
                    allow_direct=True,
                    max_msgs_per_subject=-1,
                )
            except nats.js.errors.APIError as e:
                if cfg.replicas > 1 and ("replicas" in str(e) or "insufficient resources" in str(e)):
                    raise LogError(
                        f"JetStream at {conn.where} cannot keep {cfg.replicas} copies of the stream "
                        f"{cfg.stream!r} ({e.description or e}): [log] replicas = {cfg.replicas} needs a "
                        f"JetStream cluster of at least {cfg.replicas} servers with room on each"
                    ) from None
                raise
        c = info.config
        wrong = []
        if subject(cfg.stream) not in (c.subjects or []) and f"{cfg.stream}.>" not in (c.subjects or []):
            wrong.append(f"subjects {c.subjects} (need {cfg.stream}.>)")
        if c.storage != api.StorageType.FILE:
            wrong.append("memory storage (need file)")
        if (c.num_replicas or 1) != cfg.replicas:
            wrong.append(f"replicas {c.num_replicas} (the config asks {cfg.replicas})")
        if c.retention not in (None, api.RetentionPolicy.LIMITS):
            wrong.append(f"retention {c.retention} (need limits)")
        if (c.max_age or 0) > 0 or (c.max_msgs or -1) > 0 or (c.max_bytes or -1) > 0:
            wrong.append("limits (max_age/max_msgs/max_bytes) that would drop records no view applied")
        if wrong:
            raise LogError(
                f"the NATS stream {cfg.stream!r} at {conn.where} has settings the log cannot use: "
                + "; ".join(wrong)
                + " (delete it, or choose another [log] stream)"
            )
        return info

    return conn.run(go())


async def _get_json(kv: KeyValue, key: str) -> tuple[dict[str, Any], int]:
    try:
        e = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return {}, 0
    return (json.loads(e.value) if e.value else {}), int(e.revision or 0)


def _ints(header: str) -> list[int]:
    return [int(x) for x in header.split()]


class NatsLogWriter(EmbeddedLogWriter):
    """The single appender on JetStream. Buffering, parts and streamed transactions are the
    embedded writer's (its SQLite file in ``[log] path`` holds only the streamed
    transactions not yet committed); records go to the stream, positions to the KV bucket."""

    def __init__(self, cfg: LogConfig) -> None:
        super().__init__(Path(cfg.path))  # the local lock and the streamed-transaction spool
        self.cfg = cfg
        try:
            self.nats = Nats(cfg.servers, name="syncline-capture")
            try:
                info = ensure_stream(self.nats, cfg)
                self.kv = self.nats.kv(cfg.stream, cfg.replicas, create=True)
                self.part_bytes = max(64 << 10, min(PART_BYTES, self.nats.nc.max_payload - (8 << 10)))
                self._chunk = max(16 << 10, self.nats.nc.max_payload - (8 << 10))
                self._open(info)
            except BaseException:
                self.nats.close()
                raise
        except BaseException:
            super().close()
            raise

    def _open(self, info: api.StreamInfo) -> None:
        pos, rev = self.nats.run(_get_json(self.kv, "pos"))
        host, pid, at = str(pos.get("host", "")), int(pos.get("pid", 0)), float(pos.get("at", 0))
        me = socket.gethostname()
        live = time.time() - at < LEASE_SECONDS and holder_alive(host, pid)
        if pos.get("epoch") and live and (host, pid) != (me, os.getpid()):
            raise LogLocked(
                f"the log stream {self.cfg.stream!r} on NATS at {self.nats.where} is in use by a capture"
                f" on {host} (pid {pid}); if it died, it may be taken over {LEASE_SECONDS:.0f} s after its"
                " last sign of life"
            )
        hw = int(pos.get("hw", 0))
        last = int(info.state.last_seq or 0)
        if hw > last:
            raise LogError(
                f"the log's position (record {hw}) is beyond the last record of the NATS stream"
                f" {self.cfg.stream!r} ({last}): the stream was deleted or replaced; start a new log"
                " (another [log] stream) and rebuild the views"
            )
        if last > hw:  # the tail of a transaction cut short by a crash
            self.nats.run(self._delete_range(hw + 1, last))
        self.epoch = secrets.token_hex(8)
        self._pos = {k: int(pos.get(k, 0)) for k in POS_KEYS}
        self._pos.update(epoch_start=last + 1)
        self._pos_rev = rev
        self._last_seq = last
        self._cum = self.nats.run(_events_upto(self.nats, self.kv, self.cfg.stream, hw))
        self._prev_rec = hw
        self._futures: list[asyncio.Future[api.PubAck]] = []
        self.hw = self._pending_hw = hw
        self.next_seq = last + 1
        self._durable_end = self._pending_end = self._pos["durable_end_lsn"]
        self._last_commit_lsn = self._pending_commit_lsn = self._pos["last_commit_lsn"]
        self._received_lsn = self._pos["received_lsn"]
        self._meta_doc, self._meta_rev = self.nats.run(_get_json(self.kv, "meta"))
        if not self._meta_doc.get(LOG_ID):
            self._meta_doc = {**self._meta_doc, LOG_ID: new_log_id()}
            self._meta_rev = self._cas("meta", self._meta_doc, self._meta_rev)
        self._relations_latest = {}
        self._rel_docs: dict[int, list[list[Any]]] = {}
        for oid, versions in self.nats.run(_load_relations(self.kv)).items():
            self._rel_docs[oid] = versions
            if versions and versions[-1][1]:
                self._relations_latest[oid] = base64.b64decode(versions[-1][1])
        self._put_pos()

    async def _delete_range(self, first: int, last: int) -> None:
        for s in range(first, last + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.APIError):
                await self.nats.js._jsm.delete_msg(self.cfg.stream, s)

    # -- where the writer stands -------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"NATS stream {self.cfg.stream!r} at {self.nats.where}"

    def meta(self, key: str, default: str = "") -> str:
        if key in POS_KEYS:
            return str(self._pos[key])
        v = self._meta_doc.get(key)
        return default if v is None else str(v)

    def set_meta_now(self, **values: str | int) -> None:
        if not self.broken:
            self.sync()
        doc = dict(self._meta_doc)
        doc.update({k: str(v) for k, v in values.items()})
        self._meta_rev = self._cas("meta", doc, self._meta_rev)
        self._meta_doc = doc

    def _cas(self, key: str, doc: dict[str, Any], rev: int) -> int:
        data = json.dumps(doc, separators=(",", ":")).encode()

        async def go() -> int:
            if rev == 0:
                try:
                    return int(await self.kv.create(key, data))
                except nats.js.errors.KeyWrongLastSequenceError:
                    pass
            return int(await self.kv.update(key, data, last=rev))

        try:
            return self.nats.run(go())
        except LogError as e:
            if "wrong last sequence" in str(e).lower():
                raise LogLocked(
                    f"another capture took over the log stream {self.cfg.stream!r} on NATS at"
                    f" {self.nats.where}; this one stops"
                ) from None
            raise

    def _put_pos(self) -> None:
        doc = dict(self._pos, epoch=self.epoch, host=socket.gethostname(), pid=os.getpid(), at=time.time())
        self._pos_rev = self._cas("pos", doc, self._pos_rev)
        self._pos_at = time.monotonic()

    # -- appending ----------------------------------------------------------------------------

    def _take_seq(self, size: int) -> int:
        chunks = max(1, -(-size // self._chunk))
        self.next_seq += chunks
        return self.next_seq - 1

    @poisons
    def _write_rows(self) -> None:
        """Publish the buffered records (their acknowledgements are awaited by :meth:`sync`)."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self._rows_bytes = 0
        self.nats.run(self._publish(rows))

    async def _publish(self, rows: list[tuple[Any, ...]]) -> None:
        subj = subject(self.cfg.stream)
        js: JetStreamContext = self.nats.js
        for row in rows:
            seq, data = int(row[0]), bytes(row[9])
            self._cum += int(row[8])
            head = " ".join(str(int(v)) for v in (*row[1:9], self._cum, self._prev_rec))
            self._prev_rec = seq
            n = max(1, -(-len(data) // self._chunk))
            first = seq - n + 1
            for i in range(n):
                s = first + i
                hdr = {
                    RECORD: head,
                    "Nats-Expected-Last-Sequence": str(self._last_seq),
                    "Nats-Msg-Id": f"{self.epoch}-{s}",
                }
                if n > 1:
                    hdr[CHUNK] = f"{i + 1}/{n}"
                part = data[i * self._chunk : (i + 1) * self._chunk]
                self._futures.append(await js.publish_async(subj, part, headers=hdr, wait_stall=30.0))
                self._last_seq = s
            if len(self._futures) >= 512:
                await self._await_acks()

    async def _await_acks(self) -> None:
        futs, self._futures = self._futures, []
        if not futs:
            return
        acks = await asyncio.gather(*futs)
        for a in acks:
            if a.duplicate:  # pragma: no cover - ids are unique per epoch
                raise LogError(f"the NATS stream {self.cfg.stream!r} took record {a.seq} twice")

    @poisons
    def _commit_partial(self) -> None:
        self.nats.run(self._await_acks(), timeout=ACK_TIMEOUT)
        super()._commit_partial()

    @poisons
    def sync(self, received_lsn: Position | None = None) -> Position:
        dirty = (
            bool(self._rows)
            or bool(self._futures)
            or self._in_tx
            or self._pending_hw != self.hw
            or self._pending_end != self._durable_end
            or (received_lsn is not None and received_lsn > self._received_lsn)
        )
        if not dirty:
            if time.monotonic() - self._pos_at > LEASE_SECONDS / 3:
                self._put_pos()  # the lease
            return Position(self._durable_end)
        self._write_rows()
        self.nats.run(self._await_acks(), timeout=ACK_TIMEOUT)
        self._put_relations()
        rec = max(self._pending_end, received_lsn or 0, self._received_lsn)
        self._pos.update(
            hw=self._pending_hw,
            durable_end_lsn=self._pending_end,
            last_commit_lsn=self._pending_commit_lsn,
            received_lsn=rec,
        )
        self._put_pos()
        if self._in_tx:  # the spool's deletions of streamed transactions now in the log
            self.conn.execute("COMMIT")
            self._in_tx = False
        self.hw = self._pending_hw
        self._durable_end = self._pending_end
        self._last_commit_lsn = self._pending_commit_lsn
        self._received_lsn = rec
        return Position(self._durable_end)

    def _put_relations(self) -> None:
        if not self._rels_to_write:
            return
        rels, self._rels_to_write = self._rels_to_write, []
        changed: set[int] = set()
        for oid, seq, msg, detail in rels:
            versions = self._rel_docs.setdefault(oid, [])
            versions.append([seq, base64.b64encode(msg).decode(), detail.decode() if detail else ""])
            changed.add(oid)

        async def go() -> None:
            for oid in changed:
                await self.kv.put(f"rel.{oid}", json.dumps(self._rel_docs[oid]).encode())

        self.nats.run(go())

    def _flush_rels_for(self, seq: int) -> None:
        if self._rows_relations:
            self._rels_to_write.extend((o, seq, m, d) for o, m, d in self._rows_relations)
            self._rows_relations = []

    # -- the control plane's requests and progress (in the KV bucket) ------------------------

    def copy_requests(self) -> list[tuple[int, list[str]]]:
        docs = self.nats.run(entries(self.kv, "copy"))
        return sorted((int(k), [str(t) for t in d.get("tables", [])]) for k, d in docs.items())

    def drop_copy_requests(self, upto: int) -> None:
        async def go() -> None:
            for k in await entries(self.kv, "copy"):
                if int(k) <= upto:
                    await delete_key(self.kv, f"copy.{k}")

        self.nats.run(go())

    def running_views_lag(self) -> int | None:
        docs = self.nats.run(entries(self.kv, "c"))
        seqs = [
            int(d.get("seq", 0)) for n, d in docs.items() if d.get("state") == "running" and n != "_compactor"
        ]
        return self.hw - min(seqs) if seqs else None

    def apply_repair_requests(self) -> int:
        """Repairs asked for while ``run`` runs are not taken on this log yet (see
        :func:`syncline.verify.repair.request_repair`, which refuses them)."""
        return 0

    def reset(self) -> None:
        log_id = str(self._meta_doc.get(LOG_ID, "")) if self.hw == 0 else ""  # as the embedded log's
        self.nats.run(self._await_acks())

        async def go() -> None:
            await self.nats.js._jsm.purge_stream(self.cfg.stream)
            # the log's own keys; the control plane (views' states, leases, requests)
            # stays, as the embedded log keeps its consumers
            keys = ["meta", "trim", *(f"rel.{oid}" for oid in await entries(self.kv, "rel"))]
            for k in keys:
                await delete_key(self.kv, k)

        self.nats.run(go())
        self.conn.execute("DELETE FROM pending")
        info = self.nats.run(self.nats.js.stream_info(self.cfg.stream))
        self._last_seq = int(info.state.last_seq or 0)
        self.next_seq = self._last_seq + 1
        self.hw = self._pending_hw = 0
        self._pending_end = self._durable_end = 0
        self._pending_commit_lsn = self._last_commit_lsn = 0
        self._received_lsn = 0
        self._pos = dict.fromkeys(POS_KEYS, 0)
        self._pos.update(epoch_start=self.next_seq)
        self._cum = 0
        self._prev_rec = 0
        self._put_pos()
        self._meta_doc = {LOG_ID: log_id or new_log_id()}
        self._meta_rev = self._cas("meta", self._meta_doc, 0)
        self._relations_latest.clear()
        self._rel_docs.clear()
        self._rows_relations = []
        self._rels_to_write = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nats.close()
        super().close()


def nats_log_exists(cfg: LogConfig) -> bool:
    """Whether a capture has created this log (its ``pos`` key exists);
    :class:`LogUnavailable` when NATS cannot be reached (that is not "no log")."""
    conn = Nats(cfg.servers, name="syncline-probe")
    try:
        kv = conn.kv(cfg.stream)
        return bool(conn.run(_get_json(kv, "pos"))[0].get("epoch"))
    except LogUnavailable:
        raise
    except LogError:  # no bucket: no log yet
        return False
    finally:
        conn.close()


def nats_capture_running(cfg: LogConfig) -> bool:
    """Whether a capture holds the log's lease now."""
    try:
        conn = Nats(cfg.servers, name="syncline-probe")
    except LogError:
        return False
    try:
        pos = conn.run(_get_json(conn.kv(cfg.stream), "pos"))[0]
    except LogError:
        return False
    finally:
        conn.close()
    host, pid, at = str(pos.get("host", "")), int(pos.get("pid", 0)), float(pos.get("at", 0))
    return holder_alive(host, pid) and time.time() - at < LEASE_SECONDS


async def _load_relations(kv: KeyValue) -> dict[int, list[list[Any]]]:
    return {int(oid): list(v) for oid, v in (await entries(kv, "rel")).items()}


class _Gap(Exception):
    """A record whose predecessor is not the record read before it."""

    def __init__(self, seq: int, prev: int, expected: int) -> None:
        super().__init__(seq, prev, expected)
        self.seq, self.prev, self.expected = seq, prev, expected


class NatsLogReader:
    """Reads committed records for one consumer from the stream, from any host."""

    def __init__(self, cfg: LogConfig) -> None:
        self.cfg = cfg
        self.nats = Nats(cfg.servers, name="syncline-reader")
        try:
            self.kv = self.nats.kv(cfg.stream)
        except BaseException:
            self.nats.close()
            raise
        self.resolver = RelationResolver(reload=self._load_relations)
        self.state: dict[int, Relation] = {}
        self._versions: dict[int, list[list[Any]]] = {}
        self._sub: Any = None
        self._epoch = ""
        self._next = 0
        self._prev = 0
        self._ahead: list[Any] = []
        self._load_relations()

    def _load_relations(self) -> None:
        self._versions = self.nats.run(_load_relations(self.kv))
        for oid, versions in self._versions.items():
            for _seq, msg, detail in versions:
                if detail:
                    self.resolver.details[(oid, base64.b64decode(msg))] = relation_from_json(detail)

    def _pos(self) -> dict[str, Any]:
        return self.nats.run(_get_json(self.kv, "pos"))[0]

    def hw(self) -> int:
        return int(self._pos().get("hw", 0))

    def relations_at(self, seq: int) -> dict[int, Relation]:
        self._load_relations()
        out: dict[int, Relation] = {}
        for oid, versions in self._versions.items():
            now = [v for v in versions if int(v[0]) <= seq]
            if now and now[-1][2]:
                out[oid] = relation_from_json(now[-1][2])
        return out

    def start(self, after: Checkpoint) -> None:
        self.state = self.relations_at(after.seq)

    def read(
        self, after: Checkpoint, max_events: int, part: tuple[int, int] | None = None
    ) -> list[Transaction]:
        pos = self._pos()
        hw = int(pos.get("hw", 0))
        if after.seq >= hw:
            return []
        epoch = str(pos.get("epoch", ""))
        if epoch != self._epoch or self._next != after.seq + 1:
            self.nats.run(self._resubscribe(after.seq + 1))
            self._epoch = epoch
        try:
            msgs = self.nats.run(self._fetch(hw, max_events))
        except _Gap:
            # the consumer skipped a record (a redelivery across a leader change): once more
            # from the view's position; a record really missing is an error, never skipped
            self.nats.run(self._resubscribe(after.seq + 1))
            try:
                msgs = self.nats.run(self._fetch(hw, max_events))
            except _Gap as gap:
                raise LogError(
                    f"the NATS stream {self.cfg.stream!r} misses records: record {gap.seq} follows"
                    f" record {gap.prev}, but the last record before it is {gap.expected}"
                ) from None
        out: list[Transaction] = []
        for seq, head, data in msgs:
            clsn, end, xid, ctime, last, snap, ford = head[:7]
            items = list(self._decode(data, ford, part))
            out.append(
                Transaction(seq, Position(clsn), Position(end), xid, ctime, items, bool(last), bool(snap))
            )
        return out

    def _decode(self, data: bytes, first_ord: int, part: tuple[int, int] | None = None) -> Iterator[Item]:
        yield from decode_items(data, self.state, legacy_relations(self.resolver), first_ord, part)

    async def _resubscribe(self, start: int) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._ahead = []
        self._sub = await self.nats.js.subscribe(
            subject(self.cfg.stream),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=max(1, start)),
            pending_bytes_limit=256 << 20,
        )
        self._next = start
        self._prev = start - 1

    async def _fetch(self, hw: int, max_events: int) -> list[tuple[int, list[int], bytes]]:
        """The next records up to ``hw``: at most about ``max_events`` events, and only what
        arrived within ``FETCH_BUDGET`` once there is one whole record (a slow delivery then
        still moves the view on instead of failing the whole read at the call's timeout)."""
        out: list[tuple[int, list[int], bytes]] = []
        events = 0
        chunks: list[bytes] = []
        deadline = time.monotonic() + FETCH_BUDGET
        while True:
            if self._ahead:
                msg = self._ahead.pop(0)
            else:
                wait = DELIVERY_TIMEOUT
                if out and not chunks:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                try:
                    msg = await self._sub.next_msg(timeout=wait)
                except nats.errors.TimeoutError:
                    if out and not chunks:
                        break
                    raise LogUnavailable(
                        f"the NATS stream {self.cfg.stream!r} did not deliver record {self._next}"
                        f" (the log says records up to {hw} are there)"
                    ) from None
            seq = int(msg.metadata.sequence.stream)
            if seq > hw:  # published, not yet part of a committed transaction
                self._ahead.insert(0, msg)
                break
            hdr = msg.headers or {}
            chunk = hdr.get(CHUNK)
            if chunk:
                i, n = (int(x) for x in chunk.split("/"))
                chunks.append(msg.data)
                if i < n:
                    continue
                data = b"".join(chunks)
                chunks = []
            else:
                data = msg.data
            head = _ints(hdr[RECORD])
            if len(head) > 9 and head[9] != self._prev:
                self._epoch = ""  # start again from the caller's position next time
                raise _Gap(seq, head[9], self._prev)
            self._prev = seq
            out.append((seq, head, data))
            self._next = seq + 1
            events += head[7]
            if events >= max_events or seq >= hw or time.monotonic() >= deadline:
                break
        if chunks:  # pragma: no cover - hw never ends inside a record
            raise LogError(f"the NATS stream {self.cfg.stream!r} ends inside record {self._next}")
        return out

    def meta(self, key: str, default: str = "") -> str:
        return read_meta(self.nats, self.kv, key, default)

    def trimmed_seq(self) -> int:
        return int(self.meta("trimmed_seq", "0"))

    def close(self) -> None:
        self.nats.close()


async def record_header(
    conn: Nats, stream: str, seq: int, after: bool = False
) -> tuple[int, list[int]] | None:
    """(seq, header fields) of record ``seq`` (with ``after``: of the first message after
    ``seq``); None when there is none."""
    try:
        if after:
            m = await conn.js._jsm.get_msg(
                stream, seq=seq + 1, subject=subject(stream), next=True, direct=True
            )
        else:
            m = await conn.js._jsm.get_msg(stream, seq=seq, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    head = (m.headers or {}).get(RECORD)
    return (int(m.seq or 0), _ints(head)) if head else None


async def _events_upto(conn: Nats, kv: KeyValue, stream: str, seq: int) -> int:
    """Change events in every record up to ``seq`` (the ``events`` of its header)."""
    if seq <= 0:
        return 0
    rec = await record_header(conn, stream, seq)
    if rec is not None:
        return rec[1][8]
    trim, _rev = await _get_json(kv, "trim")
    return int(trim.get("trimmed_events", 0)) if int(trim.get("trimmed_seq", 0)) == seq else 0


def read_meta(conn: Nats, kv: KeyValue, key: str, default: str = "") -> str:
    """A value of the log's metadata (positions, capture state, retention)."""
    doc = "pos" if key in (*POS_KEYS, "epoch") else "trim" if key in TRIM_KEYS else "meta"
    v = conn.run(_get_json(kv, doc))[0].get(key)
    return default if v is None else str(v)
