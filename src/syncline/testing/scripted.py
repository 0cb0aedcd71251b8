"""Scripted transactions and batches for testing a view without a source (our own fake of
our own interface: the view under test is real)."""

from __future__ import annotations

from syncline.core.events import Checkpoint, Item, Relation, SchemaChange, Transaction
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
            commit_lsn=self.seq * 1000,
            end_lsn=self.seq * 1000 + 8,
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
