"""The outbox on a Redis stream.

Each committed source transaction's inserts into the outbox table become ``XADD`` entries
of the stream, in commit order and, inside a transaction, in the order of the inserts.
An entry's fields are the row's columns as text (PostgreSQL's output; a NULL column is
absent) and ``_lsn``, the commit position of the transaction that inserted it.

Exactly once in effect: a batch's entries and the view's position (hash
``_syncline:outbox:VIEW``: ``seq``, ``commit_lsn``, ``log_id``) are written in ONE
``MULTI`` / ``EXEC``, with the position ``WATCH``ed: after a crash either both are there
or neither, and the log is read again from the stored position. A position other than the
one this view last wrote (another applier, or Redis restarted from an older file) is a
transient error: the worker reopens the view from what Redis holds.

Only inserts the source committed while syncline followed the table are events: rows the
capture copies (those in the table when syncline first starts, or when it starts following
a table created later, within a second of its creation), and the compacted state a new
outbox view starts from, are not published.

A batch that ends inside a source transaction (one larger than ``batch_events``) keeps its
entries in memory until the batch that commits it: the stream never shows part of a
transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis import exceptions as rex

from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import UNCHANGED, Checkpoint, Relation, RowChange, SchemaChange
from syncline.core.position import Position
from syncline.sources.registry import format_position
from syncline.views.base import Batch
from syncline.views.outbox import stream_of
from syncline.views.outbox.jetstream import JetStreamPublisher

log = logging.getLogger(__name__)

POSITION = "_syncline:outbox:"


def _text(got: Any) -> dict[str, str]:
    """A hash as read by redis-py (bytes) as text."""
    return {bytes(k).decode(): bytes(v).decode() for k, v in dict(got).items()}


class OutboxView:
    kind = "outbox"

    def __init__(self, cfg: ViewConfig) -> None:
        o = cfg.options
        url = o.get("url")
        self._url = url.value if isinstance(url, Secret) else str(url)
        self.name = cfg.consumer
        self.table = str(o["table"])
        self.stream = stream_of(o)
        self.maxlen = int(o.get("maxlen", 0) or 0)  # type: ignore[call-overload]
        self.key = POSITION + self.name
        self._r: redis.Redis | None = None
        self._pending: list[dict[str, str]] = []
        self._ids: list[tuple[str, int]] = []
        """Per pending entry: its transaction's position and its index there (message ids)."""
        self._js: JetStreamPublisher | None = None
        if o.get("subject"):
            self._js = JetStreamPublisher(cfg, str(o["subject"]), self.stream)
        self._before = Checkpoint()
        self._written: dict[str, str] = {}
        """The position this view last wrote (what Redis must hold before the next batch)."""
        self.published = 0

    def _redis(self) -> redis.Redis:
        if self._r is None:
            raise ViewError(f"view {self.name}: not open")
        return self._r

    def open(self) -> Checkpoint:
        self._pending, self._ids = [], []
        if self._js is not None:
            self._before = self._js.open()
            return self._before
        try:
            self._r = redis.Redis.from_url(self._url, socket_timeout=30, socket_connect_timeout=10)
            got = _text(self._r.hgetall(self.key))
        except rex.ConnectionError as e:
            raise TransientViewError(f"view {self.name}: Redis unavailable: {e}") from e
        except rex.RedisError as e:
            raise ViewError(f"view {self.name}: Redis refused: {e}") from e
        self._written = got
        self._pending = []
        if not got:
            return Checkpoint()
        return Checkpoint(int(got["seq"]), Position(int(got["commit_lsn"])), got.get("log_id", ""))

    def apply(self, batch: Batch) -> None:
        rels: dict[int, Relation] = dict(batch.relations)
        for txn in batch.transactions:
            lsn = format_position(txn.commit_lsn)
            k = 0
            # xid 0: rows syncline copied (a first copy, a table followed later, the compacted
            # state a new view starts from), not inserts the source committed
            event = txn.xid != 0
            for it in txn.items:
                if isinstance(it, SchemaChange):
                    rels[it.relation.oid] = it.relation
                elif event and isinstance(it, RowChange) and it.op == "insert" and it.new is not None:
                    rel = rels.get(it.relid)
                    if rel is None or rel.qualified != self.table:
                        continue
                    cols = rel.columns
                    entry = {c.name: v for c, v in zip(cols, it.new, strict=False) if isinstance(v, str)}
                    if any(v is UNCHANGED for v in it.new):  # an insert sends every value
                        raise ViewError(f"view {self.name}: an insert into {self.table} lacks values")
                    entry["_lsn"] = lsn
                    self._pending.append(entry)
                    self._ids.append((lsn, k))
                    k += 1
        if not batch.commit:
            return
        cp = batch.checkpoint
        if self._js is not None:
            entries = [(lsn, k, e) for (lsn, k), e in zip(self._ids, self._pending, strict=True)]
            self._js.publish(entries, self._before, cp)
        else:
            position = {"seq": str(cp.seq), "commit_lsn": str(int(cp.commit_lsn)), "log_id": cp.log}
            self._write(position)
            self._written = position
        self.published += len(self._pending)
        self._pending, self._ids = [], []
        self._before = cp

    def _write(self, position: dict[str, str]) -> None:
        r = self._redis()
        try:
            with r.pipeline(transaction=True) as pipe:
                pipe.watch(self.key)  # type: ignore[no-untyped-call]
                held = _text(pipe.hgetall(self.key))
                if held != self._written:
                    raise TransientViewError(
                        f"view {self.name}: the position in Redis ({held.get('seq', 'none')}) is not the one "
                        f"this view wrote ({self._written.get('seq', 'none')}): reopening from Redis"
                    )
                pipe.multi()
                kw: dict[str, Any] = {"maxlen": self.maxlen, "approximate": True} if self.maxlen else {}
                for entry in self._pending:
                    pipe.xadd(self.stream, entry, **kw)  # type: ignore[arg-type]
                pipe.hset(self.key, mapping=dict(position))  # type: ignore[arg-type]
                pipe.execute()
        except rex.WatchError as e:
            raise TransientViewError(f"view {self.name}: its position changed in Redis meanwhile") from e
        except (rex.ConnectionError, rex.TimeoutError) as e:
            raise TransientViewError(f"view {self.name}: Redis unavailable: {e}") from e
        except rex.ResponseError as e:
            raise ViewError(
                f"view {self.name}: Redis refused the stream {self.stream!r}: {e} (is the key another type?)",
                action=f"remove or rename the key {self.stream!r} in Redis, or set another stream",
            ) from e

    def close(self) -> None:
        if self._js is not None:
            self._js.close()
        if self._r is not None:
            self._r.close()
            self._r = None
