"""Pure encoding and decoding of pgoutput logical replication messages (protocol 1 and 2).

No I/O here. Reference: PostgreSQL docs, "Logical Replication Message Formats".
The embedded log stores change messages in their protocol-1 form (no streaming xid prefix),
so one decoder serves live streams, the log and synthetic snapshot records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from syncline.core.events import (
    UNCHANGED,
    Column,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    Truncate,
    Value,
)

PG_EPOCH_OFFSET_US = 946_684_800_000_000
"""Microseconds from 1970-01-01 to 2000-01-01 (PostgreSQL's timestamp epoch)."""

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_I32_FROM = _I32.unpack_from
_BEGIN = struct.Struct("!QqI")  # final lsn, commit ts, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit lsn, end lsn, ts
_STREAM_COMMIT = struct.Struct("!IBQQq")  # xid, flags, commit lsn, end lsn, ts
_STREAM_ABORT = struct.Struct("!II")
_STREAM_START = struct.Struct("!IB")

# Messages whose streamed form carries the (sub)transaction xid right after the type byte.
STREAMABLE = frozenset(b"IUDTRYM")


class ProtocolError(ValueError):
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


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode("utf-8"), end + 1


def decode_tuple(buf: bytes, pos: int) -> tuple[Row, int]:
    """Decode TupleData at ``pos``; return the values and the position after them."""
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    values: list[Value] = []
    append = values.append
    i32 = _I32_FROM
    for _ in range(n):
        kind = buf[pos]
        if kind == 0x74:  # 't': the common case first
            end = pos + 5 + i32(buf, pos + 1)[0]
            append(buf[pos + 5 : end].decode())
            pos = end
        elif kind == 0x6E:  # 'n'
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u'
            append(UNCHANGED)
            pos += 1
        elif kind == 0x62:  # 'b'
            raise ProtocolError("binary tuple values are not requested and not supported")
        else:
            raise ProtocolError(f"unknown tuple value kind {kind!r} at {pos}")
    return tuple(values), pos


def encode_tuple(row: Row) -> bytes:
    parts = [_I16.pack(len(row))]
    for v in row:
        if v is None:
            parts.append(b"n")
        elif v is UNCHANGED:
            parts.append(b"u")
        else:
            assert isinstance(v, str)
            data = v.encode("utf-8")
            parts.append(b"t" + _I32.pack(len(data)) + data)
    return b"".join(parts)


# --- relation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelationMessage:
    oid: int
    schema: str
    name: str
    replident: str
    columns: tuple[tuple[int, str, int, int], ...]
    """(flags, name, type oid, typmod) per column."""


def decode_relation(buf: bytes) -> RelationMessage:
    (oid,) = _U32.unpack_from(buf, 1)
    schema, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    replident = chr(buf[pos])
    (ncols,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = buf[pos]
        cname, pos = _cstring(buf, pos + 1)
        typ, typmod = struct.unpack_from("!Ii", buf, pos)
        pos += 8
        cols.append((flags, cname, typ, typmod))
    return RelationMessage(oid, schema, name, replident, tuple(cols))


def encode_relation(rel: RelationMessage) -> bytes:
    parts = [
        b"R",
        _U32.pack(rel.oid),
        rel.schema.encode() + b"\0",
        rel.name.encode() + b"\0",
        rel.replident.encode(),
        _I16.pack(len(rel.columns)),
    ]
    for flags, cname, typ, typmod in rel.columns:
        parts.append(bytes([flags]) + cname.encode() + b"\0" + struct.pack("!Ii", typ, typmod))
    return b"".join(parts)


def encode_insert(relid: int, row: Row) -> bytes:
    return b"I" + _U32.pack(relid) + b"N" + encode_tuple(row)


def encode_update(relid: int, row: Row, old: Row | None = None, old_kind: bytes = b"O") -> bytes:
    head = b"U" + _U32.pack(relid)
    if old is not None:
        head += old_kind + encode_tuple(old)
    return head + b"N" + encode_tuple(row)


def encode_delete(relid: int, old: Row, old_kind: bytes = b"K") -> bytes:
    return b"D" + _U32.pack(relid) + old_kind + encode_tuple(old)


DROPPED = 4
"""Truncate option bit of syncline's own (PostgreSQL uses 1 and 2): the tables are gone."""


def encode_truncate(
    relids: tuple[int, ...], cascade: bool, restart_identity: bool, dropped: bool = False
) -> bytes:
    opts = (1 if cascade else 0) | (2 if restart_identity else 0) | (DROPPED if dropped else 0)
    return b"T" + _I32.pack(len(relids)) + bytes([opts]) + b"".join(_U32.pack(r) for r in relids)


def encode_begin(final_lsn: int, commit_time_us: int, xid: int) -> bytes:
    return b"B" + _BEGIN.pack(final_lsn, commit_time_us - PG_EPOCH_OFFSET_US, xid)


def encode_commit(commit_lsn: int, end_lsn: int, commit_time_us: int) -> bytes:
    return b"C" + _COMMIT.pack(0, commit_lsn, end_lsn, commit_time_us - PG_EPOCH_OFFSET_US)


# --- change messages (protocol-1 form) ----------------------------------------------------


def decode_change(buf: bytes, ordinal: int) -> RowChange | Truncate:
    """Decode an Insert, Update, Delete or Truncate message (protocol-1 form)."""
    kind = buf[0]
    if kind == 0x49:  # I
        (relid,) = _U32.unpack_from(buf, 1)
        new, _ = decode_tuple(buf, 6)
        return RowChange("insert", relid, new, None, ordinal)
    if kind == 0x55:  # U
        (relid,) = _U32.unpack_from(buf, 1)
        marker = buf[5]
        old: Row | None = None
        pos = 6
        if marker in (0x4B, 0x4F):  # K, O
            old, pos = decode_tuple(buf, 6)
            if buf[pos] != 0x4E:
                raise ProtocolError("update without new tuple")
            pos += 1
        elif marker != 0x4E:
            raise ProtocolError(f"bad update marker {marker!r}")
        new, _ = decode_tuple(buf, pos)
        return RowChange("update", relid, new, old, ordinal)
    if kind == 0x44:  # D
        (relid,) = _U32.unpack_from(buf, 1)
        old, _ = decode_tuple(buf, 6)
        return RowChange("delete", relid, None, old, ordinal)
    if kind == 0x54:  # T
        (n,) = _I32.unpack_from(buf, 1)
        opts = buf[5]
        relids = struct.unpack_from(f"!{n}I", buf, 6)
        return Truncate(tuple(relids), bool(opts & 1), bool(opts & 2), ordinal, bool(opts & DROPPED))
    raise ProtocolError(f"not a change message: {chr(kind)!r}")


def iter_framed(blob: bytes) -> Iterator[bytes]:
    """Split a log blob of length-prefixed messages."""
    pos = 0
    n = len(blob)
    while pos < n:
        (length,) = _U32.unpack_from(blob, pos)
        pos += 4
        yield blob[pos : pos + length]
        pos += length


def frame(messages: list[bytes]) -> bytes:
    """Join messages into one blob, each prefixed with its 4-byte length."""
    pack = _U32.pack
    return b"".join([pack(len(m)) + m for m in messages])


def decode_items(
    blob: bytes,
    relations: dict[int, Relation],
    resolve: RelationResolver,
    first_ordinal: int = 0,
) -> Iterator[RowChange | Truncate | SchemaChange]:
    """Decode a framed blob into items; Relation messages update ``relations`` in place."""
    ordinal = first_ordinal
    for msg in iter_framed(blob):
        if msg[0] == 0x52:  # R
            rel = resolve(decode_relation(msg))
            relations[rel.oid] = rel
            yield SchemaChange(rel, ordinal)
        else:
            yield decode_change(msg, ordinal)
        ordinal += 1


class RelationResolver:
    """Turns a Relation message into a :class:`Relation` with catalogue details
    (type names, primary key) that the log stored beside it."""

    def __init__(
        self,
        details: dict[tuple[int, bytes], Relation] | None = None,
        reload: Callable[[], None] | None = None,
    ) -> None:
        self.details = details if details is not None else {}
        self.reload = reload

    def __call__(self, msg: RelationMessage) -> Relation:
        key = (msg.oid, encode_relation(msg))
        found = self.details.get(key)
        if found is None and self.reload is not None:
            self.reload()  # written by the capture after this reader started
            found = self.details.get(key)
        if found is not None:
            return found
        return relation_without_catalog(msg)


def relation_without_catalog(msg: RelationMessage) -> Relation:
    cols = tuple(
        Column(
            name=name,
            type_oid=typ,
            typmod=typmod,
            type_name="text",
            category="S",
            base="text",
            in_identity=bool(flags & 1),
        )
        for flags, name, typ, typmod in msg.columns
    )
    key = () if msg.replident == "f" else tuple(c.name for c in cols if c.in_identity)
    return Relation(msg.oid, msg.schema, msg.name, msg.replident, cols, key)


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
