"""The pgoutput stream as a state machine, without I/O: fed the walsender's CopyData messages
one at a time, it returns what each one means (a typed event) and keeps the protocol state
(inside a transaction, inside a chunk of a streamed transaction, replaying what the log
already holds). The capture's loop (``capture.py``) does the I/O for each event.

Protocol facts it relies on (PostgreSQL docs, "Streaming Replication Protocol" and "Logical
Replication Message Formats"):
- ``w`` XLogData is a 25-byte header (type, start LSN, end LSN, send time) then one pgoutput
  message; ``k`` is a primary keepalive (WAL end, send time, reply requested);
- a plain transaction is ``B``, its changes and Relation messages, ``C``; a transaction is
  sent whole at its commit, in commit order;
- protocol 2 may send a large transaction in chunks before it commits: ``S`` (stream
  start, xid) … ``E`` (stream stop), interleaved with other transactions; inside a chunk,
  change and Relation messages carry the (sub)transaction xid after their type byte; ``c``
  commits the streamed transaction, ``A`` aborts it or one of its sub-transactions;
- ``M`` is a logical decoding message; non-transactional ones (our watermarks) arrive
  between transactions, at their WAL position.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from syncline.core.position import Position
from syncline.sources.postgres.pgoutput import (
    ProtocolError,
    decode_begin,
    decode_commit,
    decode_stream_abort,
    decode_stream_commit,
    decode_stream_start,
    streamed_xid,
    strip_stream_xid,
)

_KEEPALIVE = struct.Struct("!cQQB")
CHANGES = frozenset(b"IUDT")


@dataclass(frozen=True, slots=True)
class Begin:
    """A plain transaction starts; ``replay``: the log already holds it (skip it whole)."""

    xid: int
    final_lsn: Position
    commit_time: int
    replay: bool


@dataclass(slots=True)  # one per row change: not frozen, whose __init__ costs 3x
class Change:
    """An Insert, Update, Delete or Truncate (protocol-1 form) of the current transaction."""

    payload: bytes
    xid: int
    replay: bool


@dataclass(slots=True)  # one per row change: not frozen, whose __init__ costs 3x
class StreamedChange:
    """A change of a streamed transaction ``xid``, made in its (sub)transaction ``subxid``."""

    payload: bytes
    xid: int
    subxid: int


@dataclass(frozen=True, slots=True)
class RelationSeen:
    """A Relation message (protocol-1 form): inside a streamed transaction's chunk when
    ``stream_xid`` is set."""

    payload: bytes
    stream_xid: int | None
    replay: bool


@dataclass(frozen=True, slots=True)
class Commit:
    xid: int
    commit_lsn: Position
    end_lsn: Position
    commit_time: int
    replay: bool


@dataclass(frozen=True, slots=True)
class StreamCommitted:
    """A streamed transaction committed; ``replay``: the log already holds it."""

    xid: int
    commit_lsn: Position
    end_lsn: Position
    commit_time: int
    replay: bool


@dataclass(frozen=True, slots=True)
class StreamAborted:
    """A streamed transaction (``subxid == xid``) or one of its sub-transactions aborted."""

    xid: int
    subxid: int


@dataclass(frozen=True, slots=True)
class Message:
    """A logical decoding message sent between transactions (the whole ``M`` message)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: Position
    reply: bool


Event = (
    Begin
    | Change
    | StreamedChange
    | RelationSeen
    | Commit
    | StreamCommitted
    | StreamAborted
    | Message
    | Keepalive
)


class StreamMachine:
    """The protocol state of one replication stream.

    ``last_commit_lsn`` returns the commit LSN of the newest transaction the log holds: a
    transaction committed at or before it is a replay (the slot resends what it has not seen
    confirmed)."""

    def __init__(self, last_commit_lsn: Callable[[], int]) -> None:
        self._last_commit_lsn = last_commit_lsn
        self.in_txn = False
        self.stream_xid: int | None = None
        """The streamed transaction whose chunk is being received (between S and E)."""
        self.xid = 0
        """The current plain transaction's xid."""
        self.replay = False

    @property
    def idle(self) -> bool:
        """Between transactions and chunks: nothing is half received."""
        return not self.in_txn and self.stream_xid is None

    def feed(self, msg: bytes) -> Event | None:
        """What one CopyData message means (None: nothing to act on)."""
        kind = msg[0]
        if kind == 0x77:  # 'w' XLogData
            return self._message(msg[25:])
        if kind == 0x6B:  # 'k' keepalive
            _k, wal_end, _clock, reply = _KEEPALIVE.unpack_from(msg, 0)
            return Keepalive(Position(wal_end), bool(reply))
        raise ProtocolError(f"unexpected replication message {chr(kind)!r}")

    def _message(self, payload: bytes) -> Event | None:
        t = payload[0]
        if t in CHANGES:
            if self.stream_xid is not None:
                return StreamedChange(strip_stream_xid(payload), self.stream_xid, streamed_xid(payload))
            if not self.in_txn:
                raise ProtocolError(f"change message {chr(t)!r} outside a transaction")
            return Change(payload, self.xid, self.replay)
        if t == 0x42:  # B
            b = decode_begin(payload)
            self.in_txn = True
            self.xid = b.xid
            self.replay = b.final_lsn <= self._last_commit_lsn()
            return Begin(b.xid, Position(b.final_lsn), b.commit_time, self.replay)
        if t == 0x43:  # C
            c = decode_commit(payload)
            ev = Commit(self.xid, Position(c.commit_lsn), Position(c.end_lsn), c.commit_time, self.replay)
            self.in_txn = False
            self.replay = False
            return ev
        if t == 0x52:  # R
            if self.stream_xid is not None:
                return RelationSeen(strip_stream_xid(payload), self.stream_xid, False)
            return RelationSeen(payload, None, self.replay)
        if t == 0x53:  # S stream start
            self.stream_xid = decode_stream_start(payload).xid
            return None
        if t == 0x45:  # E stream stop
            self.stream_xid = None
            return None
        if t == 0x63:  # c stream commit
            sc = decode_stream_commit(payload)
            return StreamCommitted(
                sc.xid,
                Position(sc.commit_lsn),
                Position(sc.end_lsn),
                sc.commit_time,
                sc.commit_lsn <= self._last_commit_lsn(),
            )
        if t == 0x41:  # A stream abort
            a = decode_stream_abort(payload)
            return StreamAborted(a.xid, a.subxid)
        if t == 0x4D and self.idle:  # M between transactions
            return Message(payload)
        return None  # Y (type), O (origin), M inside a transaction: nothing to keep
