"""syncline's log record format (pure): how a record's change items are encoded.

A record's data is a sequence of items, each prefixed with its 4-byte length:

* ``I`` insert, ``U`` update, ``D`` delete: relation id (u32), then tuples (``N`` new,
  ``K`` key or ``O`` old row before ``N`` in an update). A tuple is a column count (i16)
  and per column ``t`` + length (i32) + UTF-8 text, ``n`` (NULL) or ``u`` (unchanged
  TOASTed value, kept from the stored row);
* ``T`` truncate: count (i32), options (1 cascade, 2 restart identity, 4 the tables left
  the source), relation ids (u32 each);
* ``J`` a table's shape from here on: :func:`syncline.core.codec.relation_to_json`.

Values are text, as the source prints them (``core.events``). The change items share their
layout with PostgreSQL's pgoutput protocol-1 change messages, so the PostgreSQL capture
appends what it receives without re-encoding; another source encodes its changes with
:func:`encode_insert`, :func:`encode_update`, :func:`encode_delete` and
:func:`encode_truncate`. Logs written before ``J`` existed hold pgoutput Relation messages
(``R``) instead; readers decode them through a ``legacy`` function the backend supplies.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.events import UNCHANGED, Column, Relation, Row, RowChange, SchemaChange, Truncate, Value

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I32_FROM = _I32.unpack_from

RELATION_ITEM = 0x4A
"""``J``: a relation (table shape) item."""


class RecordError(ValueError):
    """Bytes that are not a valid record item."""


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
            raise RecordError("binary tuple values are not requested and not supported")
        else:
            raise RecordError(f"unknown tuple value kind {kind!r} at {pos}")
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
                raise RecordError("update without new tuple")
            pos += 1
        elif marker != 0x4E:
            raise RecordError(f"bad update marker {marker!r}")
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
    raise RecordError(f"not a change message: {chr(kind)!r}")


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


def encode_relation_item(rel: Relation) -> bytes:
    """A table's shape as a record item."""
    return b"J" + relation_to_json(rel)


PACKED = 0xFF
"""First byte of a packed record. A framed record starts with its first item's length, whose
high byte is 0 for any item under 4 GiB (``0xFF`` would need one of at least 4,278 MiB)."""


class _Packed(msgspec.Struct, array_like=True, gc=False):
    """A packed record: its row changes decoded once, by the writer, into the form readers
    take straight from msgpack (in C); the other items (relation items ``J``, truncates ``T``)
    stay in their item form, each with its place among the record's items. ``RowChange.ordinal``
    counts from the record's first item (readers add the record's ``first_ord``)."""

    rows: list[RowChange]
    others: list[tuple[int, bytes]] = []


_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder(_Packed)


def pack_record(items: Sequence[bytes | RowChange]) -> bytes:
    """A record's data from its items (change items in the protocol-1 layout above, relation
    and truncate items, or row changes already decoded: a copy's rows), packed: each row
    change is decoded here once, instead of by every reader. :func:`decode_items` reads
    packed and framed records alike."""
    rows: list[RowChange] = []
    others: list[tuple[int, bytes]] = []
    for i, msg in enumerate(items):
        if isinstance(msg, RowChange):
            msg.ordinal = i
            rows.append(msg)
        elif msg[0] in (0x49, 0x55, 0x44):  # I U D
            ch = decode_change(msg, i)
            assert isinstance(ch, RowChange)
            rows.append(ch)
        else:
            others.append((i, msg))
    return _HEAD + _PACK.encode(_Packed(rows, others))


_HEAD = bytes([PACKED])


def is_packed(blob: bytes) -> bool:
    """Whether a record's data is packed (:func:`pack_record`) rather than framed."""
    return blob[:1] == _HEAD


def _unpacked(blob: bytes) -> _Packed:
    return _UNPACK.decode(memoryview(blob)[1:])


def _in_order(rec: _Packed) -> list[tuple[int, RowChange | bytes]]:
    """A packed record's items in their order: row changes decoded, the others as items."""
    items: list[tuple[int, RowChange | bytes]] = [(ch.ordinal, ch) for ch in rec.rows]
    items += rec.others
    items.sort(key=lambda t: t[0])
    return items


_OP_KIND = {"insert": "I", "update": "U", "delete": "D"}


def item_kinds(blob: bytes) -> list[str]:
    """The kind letter of each item of a record's data (packed or framed), in order:
    ``I``, ``U``, ``D``, ``T``, ``J`` (or ``R`` in older logs). Raises on damaged data."""
    if not is_packed(blob):
        return [chr(m[0]) for m in iter_framed(blob)]
    return [chr(it[0]) if isinstance(it, bytes) else _OP_KIND[it.op] for _, it in _in_order(_unpacked(blob))]


def iter_changes(blob: bytes) -> Iterator[RowChange | Truncate]:
    """The row changes and truncates of a record's data (packed or framed), in order, each
    with its place in the record as its ordinal; shape items left out."""
    items = _in_order(_unpacked(blob)) if is_packed(blob) else list(enumerate(iter_framed(blob)))
    for i, it in items:
        if isinstance(it, RowChange):
            yield it
        elif it[0] not in (RELATION_ITEM, 0x52):
            yield decode_change(it, i)


def decode_items(
    blob: bytes,
    relations: dict[int, Relation],
    legacy: Callable[[bytes], Relation] | None = None,
    first_ordinal: int = 0,
    part: tuple[int, int] | None = None,
) -> Iterator[RowChange | Truncate | SchemaChange]:
    """Decode a record's data (packed or framed) into items; relation items update
    ``relations`` in place.

    ``part`` = (index, count): leave out, without decoding them where the record is framed,
    the row changes of keyed tables whose old and new keys both hash to another partition
    (:func:`syncline.views.partition.partition_of`; the reader still routes the rest)."""
    if is_packed(blob):
        yield from _unpack(blob, relations, legacy, first_ordinal, part)
        return
    ordinal = first_ordinal
    keys: dict[int, tuple[int, ...]] = {}
    for msg in iter_framed(blob):
        kind = msg[0]
        if part is not None and kind in (0x49, 0x55, 0x44):  # I U D
            (relid,) = _U32.unpack_from(msg, 1)
            kidx = keys.get(relid)
            if kidx is None:
                rel = relations.get(relid)
                kidx = keys[relid] = rel.key_indexes() if rel is not None else ()
            if kidx and not _touches(msg, kidx, part):
                ordinal += 1
                continue
        if kind == RELATION_ITEM:
            rel = relation_from_json(msg[1:])
            relations[rel.oid] = rel
            yield SchemaChange(rel, ordinal)
        elif kind == 0x52:  # R: a pgoutput Relation message (logs written before J)
            if legacy is None:
                raise RecordError("a pgoutput Relation message where no reader for it was given")
            rel = legacy(msg)
            relations[rel.oid] = rel
            yield SchemaChange(rel, ordinal)
        else:
            yield decode_change(msg, ordinal)
        if kind in (RELATION_ITEM, 0x52):
            keys.clear()
        ordinal += 1


def _unpack(
    blob: bytes,
    relations: dict[int, Relation],
    legacy: Callable[[bytes], Relation] | None,
    first_ordinal: int,
    part: tuple[int, int] | None,
) -> Iterator[RowChange | Truncate | SchemaChange]:
    rec = _unpacked(blob)
    rows = rec.rows
    if first_ordinal:
        for ch in rows:
            ch.ordinal += first_ordinal
    if not rec.others and part is None:
        yield from rows  # the common case: row changes only, nothing more to do in Python
        return
    keys: dict[int, tuple[int, ...]] = {}
    r = 0
    for i, msg in [*rec.others, (len(rows) + len(rec.others), b"")]:
        while r < len(rows) and rows[r].ordinal - first_ordinal < i:
            ch = rows[r]
            r += 1
            if part is not None:
                kidx = keys.get(ch.relid)
                if kidx is None:
                    rel = relations.get(ch.relid)
                    kidx = keys[ch.relid] = rel.key_indexes() if rel is not None else ()
                if kidx and not _row_touches(ch, kidx, part):
                    continue
            yield ch
        if not msg:
            break
        kind = msg[0]
        if kind == RELATION_ITEM:
            rel = relation_from_json(msg[1:])
            relations[rel.oid] = rel
            keys.clear()
            yield SchemaChange(rel, first_ordinal + i)
        elif kind == 0x52:  # R: a pgoutput Relation message
            if legacy is None:
                raise RecordError("a pgoutput Relation message where no reader for it was given")
            rel = legacy(msg)
            relations[rel.oid] = rel
            keys.clear()
            yield SchemaChange(rel, first_ordinal + i)
        else:
            yield decode_change(msg, first_ordinal + i)


def _row_touches(ch: RowChange, kidx: tuple[int, ...], part: tuple[int, int]) -> bool:
    """:func:`_touches` for a decoded row change: the same key bytes, the same hash."""
    index, count = part
    for row in (ch.old, ch.new):
        if row is not None:
            raw = b"\x00".join(v.encode() if isinstance(v := row[i], str) else b"" for i in kidx)
            if key_partition(raw, count) == index:
                return True
    return False


def key_partition(raw_key: bytes, count: int) -> int:
    """The partition of a key given as its columns' UTF-8 text joined by NUL (NUL cannot
    occur in PostgreSQL text): the one hash every partitioned applier uses."""
    return zlib.crc32(raw_key) % count if count > 1 else 0


def _touches(msg: bytes, kidx: tuple[int, ...], part: tuple[int, int]) -> bool:
    """Whether a change item's old or new key hashes to partition ``part[0]`` of ``part[1]``."""
    index, count = part
    pos = 6
    if msg[0] == 0x55 and msg[5] in (0x4B, 0x4F):  # an update with its old key or row
        old, pos = _key_bytes(msg, 6, kidx)
        if key_partition(old, count) == index:
            return True
        pos += 1  # the N before the new tuple
    return key_partition(_key_bytes(msg, pos, kidx)[0], count) == index


def _key_bytes(buf: bytes, pos: int, kidx: tuple[int, ...]) -> tuple[bytes, int]:
    """The key columns' raw text of the tuple at ``pos``, joined by NUL (NULL as empty), and
    the position after the tuple."""
    vals: dict[int, bytes] = {}
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    for i in range(n):
        if buf[pos] == 0x74:  # t
            end = pos + 5 + _I32_FROM(buf, pos + 1)[0]
            if i in kidx:
                vals[i] = buf[pos + 5 : end]
            pos = end
        else:  # n, u
            pos += 1
    return b"\x00".join(vals.get(i, b"") for i in kidx), pos


# --- pgoutput Relation messages, as logs written before relation items stored them ---------
# (the PostgreSQL capture decodes the same messages: sources/postgres/pgoutput.py re-exports)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode("utf-8"), end + 1


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


def legacy_relations(resolve: RelationResolver) -> Callable[[bytes], Relation]:
    """For :func:`syncline.core.records.decode_items`: a pgoutput Relation message (as logs
    written before relation items stored them) through ``resolve``."""
    return lambda msg: resolve(decode_relation(msg))


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
