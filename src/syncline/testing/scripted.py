"""Scripted transactions and batches for testing a view without a source (our own fake of
our own interface: the view under test is real)."""

from __future__ import annotations

from syncline.core.events import Checkpoint, Item, Relation, RowChange, SchemaChange, Transaction, Value
from syncline.core.position import Position
from syncline.views.base import Batch


class ScriptedBatches:
    """Numbers transactions after ``seq`` and tracks the schema state between batches, as
    the runtime does."""

    def __init__(self, seq: int = 0, relations: dict[int, Relation] | None = None) -> None:
        self.seq = seq
        self.relations: dict[int, Relation] = dict(relations or {})

    def txn(self, *items: Item) -> Transaction:
        self.seq += 1
        for i, it in enumerate(items):
            it.ordinal = i
        return Transaction(
            seq=self.seq,
            commit_lsn=Position(self.seq * 1000),
            end_lsn=Position(self.seq * 1000 + 8),
            xid=700 + self.seq,
            commit_time=0,
            items=list(items),
        )

    def batch(self, *txns: Transaction, commit: bool = True) -> Batch:
        b = Batch(
            transactions=list(txns),
            relations=dict(self.relations),
            checkpoint=Checkpoint(txns[-1].seq, txns[-1].commit_lsn),
            commit=commit,
        )
        for t in txns:
            for it in t.items:
                if isinstance(it, SchemaChange):
                    self.relations[it.relation.oid] = it.relation
        return b


def ins(relation: Relation, *values: Value) -> RowChange:
    return RowChange("insert", relation.oid, tuple(values))


def upd(relation: Relation, *values: Value, old: tuple[Value, ...] | None = None) -> RowChange:
    return RowChange("update", relation.oid, tuple(values), old=old)


def dele(relation: Relation, *key: Value) -> RowChange:
    """A delete as pgoutput sends it with REPLICA IDENTITY DEFAULT: key columns only."""
    old: list[Value] = [None] * len(relation.columns)
    for i, v in zip(relation.key_indexes(), key, strict=True):
        old[i] = v
    return RowChange("delete", relation.oid, None, old=tuple(old))
