"""Pure encoding and decoding of pgoutput logical replication messages (protocol 1 and 2).

No I/O here. Reference: PostgreSQL docs, "Logical Replication Message Formats".
The embedded log stores change messages in their protocol-1 form (no streaming xid prefix),
so one decoder serves live streams, the log and synthetic snapshot records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from syncline.core.events import (
    Row,
    RowChange,
)
from syncline.core.records import (  # the log's record items (pgoutput's change layout)
    _I32,
    _U32,
    DROPPED,
    RecordError,
    RelationMessage,
    RelationResolver,
    decode_change,
    decode_relation,
    decode_tuple,
    encode_delete,
    encode_insert,
    encode_relation,
    encode_truncate,
    encode_tuple,
    encode_update,
    frame,
    iter_framed,
    legacy_relations,
    relation_without_catalog,
)

PG_EPOCH_OFFSET_US = 946_684_800_000_000
"""Microseconds from 1970-01-01 to 2000-01-01 (PostgreSQL's timestamp epoch)."""

_I64 = struct.Struct("!q")
_BEGIN = struct.Struct("!QqI")  # final lsn, commit ts, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit lsn, end lsn, ts
_STREAM_COMMIT = struct.Struct("!IBQQq")  # xid, flags, commit lsn, end lsn, ts
_STREAM_ABORT = struct.Struct("!II")
_STREAM_START = struct.Struct("!IB")

# Messages whose streamed form carries the (sub)transaction xid right after the type byte.
STREAMABLE = frozenset(b"IUDTRYM")


class ProtocolError(RecordError):
    """Bytes that are not a valid pgoutput message."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: int  # µs since Unix epoch
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int


def decode_begin(buf: bytes) -> Begin:
    lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(lsn, ts + PG_EPOCH_OFFSET_US, xid)


def decode_commit(buf: bytes) -> Commit:
    _flags, lsn, end, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(lsn, end, ts + PG_EPOCH_OFFSET_US)


def decode_stream_start(buf: bytes) -> StreamStart:
    xid, first = _STREAM_START.unpack_from(buf, 1)
    return StreamStart(xid, bool(first))


def decode_stream_commit(buf: bytes) -> StreamCommit:
    xid, _flags, lsn, end, ts = _STREAM_COMMIT.unpack_from(buf, 1)
    return StreamCommit(xid, lsn, end, ts + PG_EPOCH_OFFSET_US)


def decode_stream_abort(buf: bytes) -> StreamAbort:
    xid, subxid = _STREAM_ABORT.unpack_from(buf, 1)
    return StreamAbort(xid, subxid)


def streamed_xid(buf: bytes) -> int:
    """The (sub)transaction xid of a change message sent inside a stream."""
    return int(_U32.unpack_from(buf, 1)[0])


def strip_stream_xid(buf: bytes) -> bytes:
    """Turn a streamed change message into its protocol-1 form."""
    return buf[:1] + buf[5:]


# --- strings and tuples -------------------------------------------------------------------


# --- relation -----------------------------------------------------------------------------


def encode_begin(final_lsn: int, commit_time_us: int, xid: int) -> bytes:
    return b"B" + _BEGIN.pack(final_lsn, commit_time_us - PG_EPOCH_OFFSET_US, xid)


def encode_commit(commit_lsn: int, end_lsn: int, commit_time_us: int) -> bytes:
    return b"C" + _COMMIT.pack(0, commit_lsn, end_lsn, commit_time_us - PG_EPOCH_OFFSET_US)


# --- change messages (protocol-1 form) ----------------------------------------------------


def remap_change(buf: bytes, relids: dict[int, tuple[int, tuple[int, ...]]]) -> bytes:
    """Rewrite a change message of a leaf partition as one of its root: new relation id and
    the root's column order (``relids``: leaf oid -> (root oid, leaf index per root column)).
    Messages of other relations are returned unchanged."""
    kind = buf[0]
    if kind == 0x54:  # T
        (n,) = _I32.unpack_from(buf, 1)
        rels = struct.unpack_from(f"!{n}I", buf, 6)
        mapped = list(dict.fromkeys(relids[r][0] if r in relids else r for r in rels))
        return b"T" + _I32.pack(len(mapped)) + buf[5:6] + b"".join(_U32.pack(r) for r in mapped)
    (relid,) = _U32.unpack_from(buf, 1)
    found = relids.get(relid)
    if found is None:
        return buf
    root, idx = found

    def order(row: Row) -> Row:
        return tuple(row[i] for i in idx)

    ch = decode_change(buf, 0)
    assert isinstance(ch, RowChange)
    if ch.op == "insert":
        assert ch.new is not None
        return encode_insert(root, order(ch.new))
    if ch.op == "delete":
        assert ch.old is not None
        return encode_delete(root, order(ch.old), bytes([buf[5]]))
    assert ch.new is not None
    old_kind = bytes([buf[5]]) if buf[5] in (0x4B, 0x4F) else b"O"
    return encode_update(root, order(ch.new), order(ch.old) if ch.old is not None else None, old_kind)


__all__ = [
    "DROPPED",
    "RelationMessage",
    "RelationResolver",
    "decode_change",
    "decode_relation",
    "decode_tuple",
    "encode_delete",
    "encode_insert",
    "encode_relation",
    "encode_truncate",
    "encode_tuple",
    "encode_update",
    "frame",
    "iter_framed",
    "legacy_relations",
    "relation_without_catalog",
]
