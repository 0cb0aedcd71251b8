from syncline.core.events import Column, Relation, SchemaChange, Truncate
from syncline.runtime.workers import view_events
from syncline.testing.scripted import ScriptedBatches, ins


def _rel(oid: int, name: str) -> Relation:
    return Relation(
        oid, "public", name, "d", (Column("id", 23, -1, "integer", "N", "", "integer", True),), ("id",)
    )


def test_a_view_counts_only_the_events_of_its_tables() -> None:
    a, b = _rel(1, "a"), _rel(2, "b")
    s = ScriptedBatches()
    batch = s.batch(
        s.txn(SchemaChange(a), SchemaChange(b), ins(a, "1"), ins(b, "1"), ins(b, "2"), Truncate((2,)))
    )
    batch.events = 6  # as the worker sets it: every item of the batch
    assert view_events(batch, ()) == 6
    assert view_events(batch, ("public.*",)) == 6  # counted table by table: the same six
    assert view_events(batch, ("public.a",)) == 2
    assert view_events(batch, ("!public.a",)) == 4
