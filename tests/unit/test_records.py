"""The log's record items (core/records.py): changes and relation items round-trip; a
pgoutput Relation message from an older log is read through the backend's legacy reader."""

from __future__ import annotations

import pytest

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
