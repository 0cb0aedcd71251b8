"""Partitioned apply (pure): which changes of a batch one partition of a view applies.

A view with ``partitions = N`` is applied by N appliers; each reads the whole log and keeps
the row changes whose key hashes to its partition (CRC-32 of the key columns' text, the
same on every host), so the changes of one key stay in one applier, in log order. Truncates
and schema changes go to every partition: each applies them to the keys it holds.

A primary-key change whose old and new keys fall in different partitions is split: the
old key's partition deletes it, the new key's partition writes the new row. A new row with
unchanged TOASTed values keeps the old row for them (``moved_in``: read the row stored
under the old key, do not delete it); that read races with the other partition, so such a
row may take those values from a later version of the old key. Tables without a key go to
partition 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from syncline.core.events import (
    UNCHANGED,
    Item,
    Relation,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
)
from syncline.core.records import key_partition
from syncline.views.netting import KeyFn, fill_unchanged, key_function


def partition_of(key: Sequence[str | None], count: int) -> int:
    """The partition of a key (its columns' text): :func:`key_partition` of it, as a reader
    computes it from a record's raw bytes."""
    return key_partition("\x00".join("" if v is None else v for v in key).encode(), count)


def take_partition(
    txns: list[Transaction], relations: dict[int, Relation], index: int, count: int
) -> list[Transaction]:
    """The transactions with only what partition ``index`` of ``count`` applies (every
    transaction is kept, emptied or not, so positions move on). ``relations``: the shapes
    in force before the first transaction (not modified)."""
    if count <= 1:
        return txns
    shapes: dict[int, Relation | None] = {}
    keys: dict[int, KeyFn | None] = {}
    out: list[Transaction] = []
    for t in txns:
        items: list[Item] = []
        for it in t.items:
            if isinstance(it, RowChange):
                if it.relid in keys:
                    kf = keys[it.relid]
                else:
                    rel = shapes[it.relid] if it.relid in shapes else relations.get(it.relid)
                    kf = keys[it.relid] = key_function(rel.key_indexes()) if rel and rel.key else None
                if kf is not None:
                    _route(it, kf, index, count, items)
                elif index == 0:
                    items.append(it)
                continue
            if isinstance(it, SchemaChange):
                shapes[it.relation.oid] = it.relation
                keys.pop(it.relation.oid, None)
            elif isinstance(it, Truncate) and it.dropped:
                for oid in it.relids:
                    shapes[oid] = None
                    keys.pop(oid, None)
            items.append(it)
        out.append(replace(t, items=items))
    return out


def _route(ch: RowChange, kf: KeyFn, index: int, count: int, out: list[Item]) -> None:
    if ch.op == "insert":
        assert ch.new is not None
        if partition_of(kf(ch.new), count) == index:
            out.append(ch)
        return
    if ch.op == "delete":
        assert ch.old is not None
        if partition_of(kf(ch.old), count) == index:
            out.append(ch)
        return
    assert ch.new is not None
    new_p = partition_of(kf(ch.new), count)
    old_p = new_p if ch.old is None else partition_of(kf(ch.old), count)
    if old_p == new_p:
        if new_p == index:
            out.append(ch)
        return
    if old_p == index:  # the key moved away: its row leaves this partition
        out.append(RowChange("delete", ch.relid, None, old=ch.old, ordinal=ch.ordinal))
    elif new_p == index:  # the key moved in
        new = fill_unchanged(ch.new, ch.old) if ch.old is not None else ch.new
        if UNCHANGED in new:
            out.append(RowChange("update", ch.relid, new, old=ch.old, ordinal=ch.ordinal, moved_in=True))
        else:
            out.append(RowChange("insert", ch.relid, new, ordinal=ch.ordinal))
