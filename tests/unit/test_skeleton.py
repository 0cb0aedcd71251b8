"""The apply skeleton (views.skeleton.AppliedView) on an in-memory kind: what it promises
every view kind, whatever the store."""

from __future__ import annotations

import pytest

from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import Checkpoint, Relation, RowChange, SchemaChange, Transaction, Truncate
from syncline.core.position import Position
from syncline.views.base import Batch
from syncline.views.netting import TableDelta
from syncline.views.skeleton import AppliedView
from tests.unit.test_netting import REL


class MemoryView(AppliedView):
    """A store of dicts with a transaction: ``committed`` is what a crash keeps."""

    kind = "memory"

    def __init__(self, fail_on: str | None = None, transient: bool = False) -> None:
        super().__init__("mem")
        self.committed: dict[str, tuple[object, ...]] = {}
        self.position = Checkpoint()
        self.work: dict[str, tuple[object, ...]] | None = None
        self.shapes: dict[int, Relation] = {}
        self.fail_on = fail_on
        self.transient = transient
        self.calls: list[str] = []

    def _ensure_open(self) -> None:
        self.calls.append("open")

    def _applied(self) -> Checkpoint:
        return self.position

    def _begin(self, batch: Batch) -> bool:
        self.calls.append("begin")
        self.work = dict(self.committed)
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return {**batch.relations, **self.shapes}

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        self.shapes[new.oid] = new

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        assert self.work is not None
        self.work.clear()

    def _on_delta(self, td: TableDelta) -> None:
        assert self.work is not None
        for k in td.deleted:
            self.work.pop(str(k[0]), None)
        for row in td.upserts():
            if row[1] == self.fail_on:
                raise (OSError if self.transient else ValueError)(f"store refused {row[0]}")
            self.work[str(row[0])] = row

    def _commit(self, batch: Batch) -> None:
        assert self.work is not None
        self.committed, self.work = self.work, None
        self.position = batch.checkpoint
        self.calls.append("commit")

    def _abort(self) -> None:
        self.work = None
        self.calls.append("abort")


def txn(seq: int, *items: RowChange | Truncate | SchemaChange, last: bool = True) -> Transaction:
    return Transaction(seq, Position(seq * 10), Position(seq * 10 + 1), seq, 0, list(items), last=last)


def ins(k: str, a: str = "x") -> RowChange:
    return RowChange("insert", 1, (k, a, "b"))


def batch(*txns: Transaction, commit: bool = True) -> Batch:
    last = txns[-1]
    return Batch(list(txns), {1: REL}, Checkpoint(last.seq, last.commit_lsn), commit=commit)


def test_a_batch_is_committed_with_its_checkpoint() -> None:
    v = MemoryView()
    v.apply(batch(txn(1, ins("1")), txn(2, ins("2"))))
    assert set(v.committed) == {"1", "2"}
    assert v.position == Checkpoint(2, Position(20))
    assert v.calls == ["open", "begin", "commit"]


def test_a_batch_at_or_below_the_stored_checkpoint_is_skipped_and_relations_still_advance() -> None:
    v = MemoryView()
    v.apply(batch(txn(1, ins("1"))))
    wider = Relation(1, "public", "t", "d", (*REL.columns[:2],), ("id",))
    again = batch(txn(1, SchemaChange(wider), ins("9")))
    v.apply(again)
    assert set(v.committed) == {"1"}
    assert again.relations[1] == wider  # the caller's shapes move past the skipped batch
    assert v.calls.count("begin") == 1


def test_a_source_transaction_over_several_batches_commits_once_with_the_last() -> None:
    v = MemoryView()
    v.apply(batch(txn(1, ins("1"), last=False), commit=False))
    assert v.committed == {} and v.position == Checkpoint()
    v.apply(batch(txn(1, ins("2")), commit=True))
    assert set(v.committed) == {"1", "2"}
    assert v.calls.count("begin") == 1 and v.calls.count("commit") == 1


@pytest.mark.parametrize("transient", [False, True])
def test_an_error_aborts_the_batch_names_the_table_and_is_classified(transient: bool) -> None:
    v = MemoryView(fail_on="bad", transient=transient)
    v.apply(batch(txn(1, ins("1"))))
    with pytest.raises(ViewError) as got:
        v.apply(batch(txn(2, ins("2"), ins("3", "bad"))))
    assert isinstance(got.value, TransientViewError) == transient
    assert "table public.t" in str(got.value) and "store refused 3" in str(got.value)
    assert "batch up to seq 2" in str(got.value)
    assert set(v.committed) == {"1"} and v.position.seq == 1  # nothing of the batch kept
    assert v.calls[-1] == "abort"
    v.fail_on = None
    v.apply(batch(txn(2, ins("2"), ins("3", "bad"))))  # applied again, whole
    assert set(v.committed) == {"1", "2", "3"}


def test_a_truncate_empties_the_table_inside_the_batch() -> None:
    v = MemoryView()
    v.apply(batch(txn(1, ins("1"), ins("2"))))
    v.apply(batch(txn(2, Truncate((1,)), ins("3"))))
    assert set(v.committed) == {"3"}
