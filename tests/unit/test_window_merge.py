"""A copy window's rows for keys that an update leaving a TOASTed value out touched: the
chunk's row with the changes its snapshot did not see applied on top."""

from __future__ import annotations

from syncline.core.events import UNCHANGED, Column, Relation
from syncline.sources.postgres.follow import Copy, Part, TableFollower, Window
from syncline.sources.postgres.visibility import Snapshot

OID = 16384
REL = Relation(
    OID,
    "public",
    "doc",
    "d",
    tuple(Column(n, 25, -1, "text") for n in ("id", "body", "rev")),
    ("id",),
)


def window(
    rows: list[tuple[str, str, str]], effects: dict[tuple[object, ...], list[tuple[int, str, object]]]
) -> Window:
    part = Part(Copy(OID, "public.doc"), None, rows=list(rows), snap=Snapshot.parse("100:105:101"))
    w = Window("t", [part], relations={OID: (b"", REL)}, key_idx={OID: (0,)})
    w.effects = {OID: effects}
    return w


def merged(w: Window) -> object:
    return TableFollower._merged(w, OID, w.parts)


def test_a_partial_update_the_snapshot_did_not_see_goes_on_top_of_the_chunks_row() -> None:
    w = window([("1", "long", "0")], {("1",): [(106, "partial", ("1", UNCHANGED, "1"))]})
    assert merged(w) == {("1",): ("1", "long", "1")}


def test_a_partial_update_the_snapshot_saw_is_in_the_chunks_row_already() -> None:
    w = window([("1", "long", "1")], {("1",): [(99, "partial", ("1", UNCHANGED, "1"))]})
    assert merged(w) == {("1",): ("1", "long", "1")}
    # 101 is listed as running in the snapshot: not seen, applied on top
    w = window([("1", "long", "0")], {("1",): [(101, "partial", ("1", UNCHANGED, "7"))]})
    assert merged(w) == {("1",): ("1", "long", "7")}


def test_a_key_beyond_the_chunk_is_left_to_its_own_window() -> None:
    # only partial updates and not in this chunk: the key lies further on (never a re-read)
    w = window([("1", "long", "0")], {("9",): [(106, "partial", ("9", UNCHANGED, "1"))]})
    assert merged(w) == {}


def test_a_row_inserted_then_updated_in_the_window_is_whole() -> None:
    w = window(
        [("1", "long", "0")],
        {("5",): [(106, "row", ("5", "new", "0")), (107, "partial", ("5", UNCHANGED, "2"))]},
    )
    assert merged(w) == {("5",): ("5", "new", "2")}
    w = window([("1", "long", "0")], {("1",): [(106, "partial", ("1", UNCHANGED, "1")), (107, "gone", None)]})
    assert merged(w) == {}


def test_a_changed_shape_reads_the_chunk_again() -> None:
    w = window([("1", "long", "0")], {("1",): [(106, "partial", ("1", UNCHANGED))]})
    assert merged(w) is None
