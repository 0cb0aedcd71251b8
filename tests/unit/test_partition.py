"""Partitioned apply: each partition applies its keys' changes, in any order of partitions,
and together they reach the state of applying the whole log (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.core.config_models import ViewConfig, partition_consumer, split_consumer
from syncline.core.events import UNCHANGED, Row, RowChange, SchemaChange, Transaction, Truncate
from syncline.log.base import ConsumerRow, by_view
from syncline.views.netting import DeltaStep, net_steps
from syncline.views.partition import partition_of, take_partition
from tests.unit.test_netting import REL, netted, script_changes, sequential

KEYS = [str(i) for i in range(1, 13)]
keys = st.sampled_from(KEYS)
vals = st.sampled_from(["x", "y", None])


def applied_by_partition(
    state: dict[str, Row], txns: list[Transaction], index: int, count: int
) -> dict[str, Row]:
    """One partition's effect on a shared store: like a Redis partition, a truncate removes
    only the keys this partition holds."""
    part = take_partition(txns, {1: REL}, index, count)
    return netted(state, part, owns=lambda k: partition_of(k, count) == index)


@st.composite
def ops(draw: st.DrawFn) -> tuple[str, str, str, object, object]:
    kind = draw(
        st.sampled_from(["insert", "update", "update", "delete", "truncate", "pkmove", "pkmove_full"])
    )
    big = draw(st.one_of(vals, st.just(UNCHANGED)))
    return kind, draw(keys), draw(keys), draw(vals), big


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ops(), max_size=30),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=2, max_value=4),
    st.booleans(),
)
def test_partitions_together_equal_the_whole(script: list, per_txn: int, count: int, reverse: bool) -> None:
    state: dict[str, Row] = {k: (k, "init", "B" + k) for k in KEYS[:4]}

    def moved(k: str, k2: str, big: object) -> object:
        # a key-only old row (REPLICA IDENTITY DEFAULT): unchanged TOAST only within a partition
        same = partition_of((k,), count) == partition_of((k2,), count)
        return big if same or big is not UNCHANGED else "moved"

    changes = script_changes(script, state, moved)
    txns = [
        Transaction(i + 1, i + 1, i + 1, i, 0, list(changes[i : i + per_txn]))
        for i in range(0, len(changes), per_txn)
    ]
    s = dict(state)
    order = range(count - 1, -1, -1) if reverse else range(count)
    for p in order:  # one partition entirely before the next: the farthest they can drift
        s = applied_by_partition(s, txns, p, count)
    assert s == sequential(state, changes)


def test_every_transaction_is_kept_so_positions_move_on() -> None:
    txns = [Transaction(i, i, i, i, 0, [RowChange("insert", 1, (str(i), "a", "b"))]) for i in range(1, 9)]
    for p in range(3):
        got = take_partition(txns, {1: REL}, p, 3)
        assert [t.seq for t in got] == [t.seq for t in txns]
    total = sum(len(t.items) for p in range(3) for t in take_partition(txns, {1: REL}, p, 3))
    assert total == 8


def test_a_key_moved_across_partitions_with_unchanged_values_reads_but_keeps_its_origin() -> None:
    count = 2
    a = next(k for k in KEYS if partition_of((k,), count) == 0)
    b = next(k for k in KEYS if partition_of((k,), count) == 1)
    txn = Transaction(1, 1, 1, 1, 0, [RowChange("update", 1, (b, "x", UNCHANGED), old=(a, None, None))])
    (p0,) = take_partition([txn], {1: REL}, 0, count)
    (p1,) = take_partition([txn], {1: REL}, 1, count)
    assert [(c.op, c.old) for c in p0.items if isinstance(c, RowChange)] == [("delete", (a, None, None))]
    (moved,) = [c for c in p1.items if isinstance(c, RowChange)]
    assert moved.moved_in and moved.op == "update"
    (step,) = net_steps([p1], {1: REL})
    assert isinstance(step, DeltaStep)
    (d,) = step.tables
    assert d.partials() == [((b, "x", UNCHANGED), (a,))]
    assert not d.deleted, "the origin belongs to the other partition: never deleted here"


def test_schema_changes_and_truncates_reach_every_partition() -> None:
    txn = Transaction(
        1, 1, 1, 1, 0, [SchemaChange(REL), Truncate((1,)), RowChange("insert", 1, ("1", "a", "b"))]
    )
    for p in range(3):
        (got,) = take_partition([txn], {}, p, 3)
        assert isinstance(got.items[0], SchemaChange) and isinstance(got.items[1], Truncate)
    rows = [
        it for p in range(3) for it in take_partition([txn], {}, p, 3)[0].items if isinstance(it, RowChange)
    ]
    assert len(rows) == 1  # the table's key came with the schema change in the same transaction


def test_consumer_names_round_trip_and_merge_to_the_slowest_partition() -> None:
    v = ViewConfig("cache", "redis", partitions=3)
    names = [a.consumer for a in v.appliers()]
    assert names == [partition_consumer("cache", i, 3) for i in range(3)]
    assert [split_consumer(n) for n in names] == [("cache", i, 3) for i in range(3)]
    assert split_consumer("cache") is None and split_consumer("my-view") is None
    rows = {
        names[0]: ConsumerRow(names[0], "redis", 10, 100, "running", "", 5, 1.0),
        names[1]: ConsumerRow(names[1], "redis", 7, 70, "retrying", "Redis away", 3, 2.0),
        "other": ConsumerRow("other", "postgres", 9, 90, "running", "", 1, 1.0),
    }
    merged = by_view(rows)
    assert merged["other"] == rows["other"]
    # partition 2 has not registered: the view is at 0, "new" is worse than "running"
    assert (merged["cache"].seq, merged["cache"].state) == (0, "retrying")
    rows[names[2]] = ConsumerRow(names[2], "redis", 12, 120, "running", "", 4, 3.0)
    merged = by_view(rows)
    assert (merged["cache"].seq, merged["cache"].commit_lsn) == (7, 70)
    assert merged["cache"].applied_events == 12 and merged["cache"].error == "Redis away"


def test_rows_of_a_partition_count_no_longer_used_give_way_to_the_newest() -> None:
    def row(name: str, seq: int, state: str, at: float) -> ConsumerRow:
        return ConsumerRow(name, "redis", seq, seq, state, "", 1, at)

    old = {
        "cache.p0of2": row("cache.p0of2", 50, "stopped", 1.0),
        "cache.p1of2": row("cache.p1of2", 50, "stopped", 1.0),
    }
    rows = {**old, "cache": row("cache", 7, "running", 2.0)}
    assert (by_view(rows)["cache"].seq, by_view(rows)["cache"].state) == (7, "running")
    rows = {
        **old,
        "cache.p0of3": row("cache.p0of3", 9, "running", 3.0),
        "cache": row("cache", 7, "stopped", 2.0),
    }
    merged = by_view(rows)["cache"]
    assert (merged.seq, merged.state) == (0, "new"), "partitions 1 and 2 of 3 have not registered"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "update", "pkmove", "delete"]),
            keys,
            keys,
            st.one_of(vals, st.just(UNCHANGED)),
        ),
        max_size=25,
    ),
    st.integers(min_value=2, max_value=4),
)
def test_a_reader_leaving_out_other_partitions_undecoded_changes_nothing_a_partition_keeps(
    script: list[tuple[str, str, str, object]], count: int
) -> None:
    from syncline.core.records import (
        decode_items,
        encode_delete,
        encode_insert,
        encode_relation_item,
        encode_update,
        frame,
    )

    msgs = [encode_relation_item(REL)]
    for op, k, k2, big in script:
        if op == "insert":
            msgs.append(encode_insert(1, (k, "a", big if big is not UNCHANGED else "b")))  # type: ignore[arg-type]
        elif op == "update":
            msgs.append(encode_update(1, (k, "a", big)))  # type: ignore[arg-type]
        elif op == "pkmove":
            msgs.append(encode_update(1, (k2, "a", big), old=(k, None, None), old_kind=b"K"))  # type: ignore[arg-type]
        else:
            msgs.append(encode_delete(1, (k, None, None)))
    blob = frame(msgs)
    for index in range(count):
        whole = Transaction(1, 1, 1, 1, 0, list(decode_items(blob, {})))
        pre = Transaction(1, 1, 1, 1, 0, list(decode_items(blob, {}, part=(index, count))))
        assert take_partition([pre], {}, index, count) == take_partition([whole], {}, index, count)
        assert len(pre.items) <= len(whole.items)


def test_a_partitions_reader_does_not_decode_the_other_partitions_rows() -> None:
    from syncline.core.records import decode_items, encode_insert, encode_relation_item, frame

    blob = frame([encode_relation_item(REL), *(encode_insert(1, (k, "a", "b")) for k in KEYS)])
    kept = [[it for it in decode_items(blob, {}, part=(i, 2)) if isinstance(it, RowChange)] for i in range(2)]
    assert sorted(len(k) for k in kept) != [len(KEYS), len(KEYS)]
    assert sum(len(k) for k in kept) == len(KEYS)
    for i, rows in enumerate(kept):
        assert all(partition_of((r.new[0],), 2) == i for r in rows if r.new is not None)
