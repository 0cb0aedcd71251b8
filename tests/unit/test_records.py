"""The log's record items (core/records.py): changes and relation items round-trip; a
pgoutput Relation message from an older log is read through the backend's legacy reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.core.events import UNCHANGED, Column, Relation, RowChange, SchemaChange, Truncate
from syncline.core.records import (
    RecordError,
    decode_items,
    encode_delete,
    encode_insert,
    encode_relation_item,
    encode_truncate,
    encode_update,
    frame,
    is_packed,
    item_kinds,
    iter_changes,
    pack_record,
)
from syncline.sources.postgres.pgoutput import RelationMessage, encode_relation

REL = Relation(
    7,
    "s",
    "t",
    "d",
    (Column("id", 23, -1, "integer", "N", "", "integer", True), Column("v", 25, -1, "text", "S", "", "text")),
    ("id",),
)


def test_items_round_trip_and_relation_items_carry_the_whole_shape() -> None:
    blob = frame(
        [
            encode_relation_item(REL),
            encode_insert(7, ("1", "é")),
            encode_update(7, ("2", UNCHANGED), old=("1", None), old_kind=b"K"),
            encode_delete(7, ("2", None)),
            encode_truncate((7,), False, True, dropped=True),
        ]
    )
    rels: dict[int, Relation] = {}
    items = list(decode_items(blob, rels, first_ordinal=10))
    assert items[0] == SchemaChange(REL, 10) and rels == {7: REL}
    assert items[1] == RowChange("insert", 7, ("1", "é"), None, 11)
    assert items[2] == RowChange("update", 7, ("2", UNCHANGED), ("1", None), 12)
    assert items[3] == RowChange("delete", 7, None, ("2", None), 13)
    assert items[4] == Truncate((7,), False, True, 14, True)


def test_an_older_logs_relation_message_needs_the_legacy_reader() -> None:
    msg = encode_relation(RelationMessage(7, "s", "t", "d", ((1, "id", 23, -1), (0, "v", 25, -1))))
    with pytest.raises(RecordError):
        list(decode_items(frame([msg]), {}))
    rels: dict[int, Relation] = {}
    (item,) = decode_items(frame([msg]), rels, legacy=lambda m: REL)
    assert item == SchemaChange(REL, 0) and rels == {7: REL}


# --- packed records: what the writer stores, decoded once ----------------------------------

REL2 = Relation(
    7,
    "s",
    "t",
    "d",
    (Column("v", 25, -1, "text", "S", "", "text"), Column("id", 23, -1, "integer", "N", "", "integer", True)),
    ("id",),
)
_value = st.one_of(st.none(), st.just(UNCHANGED), st.text(max_size=6), st.sampled_from(["", "1", "a:b", "é"]))
_row = st.tuples(st.one_of(st.sampled_from(["1", "2", "3"]), st.none()), _value)
_item = st.one_of(
    st.builds(lambda r: encode_insert(7, r), _row),
    st.builds(
        lambda r, o, k: encode_update(7, r, old=o, old_kind=k),
        _row,
        st.none() | _row,
        st.sampled_from([b"K", b"O"]),
    ),
    st.builds(lambda o, k: encode_delete(7, o, old_kind=k), _row, st.sampled_from([b"K", b"O"])),
    st.builds(lambda r, o: encode_insert(r, o), st.sampled_from([7, 8]), _row),
    st.builds(lambda c, r: encode_truncate((7, 8)[: 1 + c], bool(c), r), st.integers(0, 1), st.booleans()),
    st.sampled_from([encode_relation_item(REL), encode_relation_item(REL2)]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_item, min_size=1, max_size=30),
    st.integers(min_value=0, max_value=10_000),
    st.one_of(
        st.none(),
        st.integers(min_value=2, max_value=4).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
    ),
    st.booleans(),
)
def test_a_packed_record_reads_as_its_framed_items(
    msgs: list[bytes], first: int, part: tuple[int, int] | None, known: bool
) -> None:
    """Every reader gets from a packed record exactly what the framed items give: the same
    items, ordinals, relations learnt on the way, partition cut and changes."""
    packed = pack_record(msgs)
    assert is_packed(packed) and not is_packed(frame(msgs))
    rels_f: dict[int, Relation] = {7: REL} if known else {}
    rels_p: dict[int, Relation] = dict(rels_f)
    want = list(decode_items(frame(msgs), rels_f, first_ordinal=first, part=part))
    got = list(decode_items(packed, rels_p, first_ordinal=first, part=part))
    assert got == want
    assert rels_p == rels_f
    assert list(iter_changes(packed)) == list(iter_changes(frame(msgs)))
    assert item_kinds(packed) == item_kinds(frame(msgs)) == [chr(m[0]) for m in msgs]


def test_decoded_inserts_pack_as_their_items() -> None:
    """A copy's rows handed to the writer decoded (``add_insert``) make the same record as
    their insert items: same bytes, ordinals counted over every item."""
    rows = [("1", "a"), ("2", None), ("3", "tab\tand\\ \u2603"), ("4", "")]
    trunc = encode_truncate((7,), False, False)
    items: list[bytes] = [encode_insert(7, rows[0]), trunc, *(encode_insert(7, r) for r in rows[1:])]
    decoded: list[bytes | RowChange] = [RowChange("insert", 7, rows[0]), trunc]
    decoded += [RowChange("insert", 7, r) for r in rows[1:]]
    assert pack_record(decoded) == pack_record(items)
    assert [c.ordinal for c in iter_changes(pack_record(decoded)) if isinstance(c, RowChange)] == [0, 2, 3, 4]
