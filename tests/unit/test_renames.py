"""Which columns were renamed between two shapes (``syncline.core.renames``)."""

from __future__ import annotations

from syncline.core.events import Column
from syncline.core.renames import column_renames


def cols(spec: str) -> list[Column]:
    """``"id:int a:text"`` -> columns."""
    out = []
    for part in spec.split():
        name, _, typ = part.partition(":")
        out.append(Column(name, 0, -1, {"int": "integer", "text": "text", "big": "bigint"}[typ]))
    return out


def test_a_rename_alone() -> None:
    assert column_renames(cols("id:int a:text b:int"), cols("id:int title:text b:int")) == {"a": "title"}
    assert column_renames(cols("id:int a:text b:int"), cols("id:int a:text x:int")) == {"b": "x"}


def test_a_column_dropped_and_another_renamed_between_two_changes() -> None:
    # the CI failure: (id, a, b, c, d) -> (id, title, c, d): a renamed, b dropped
    got = column_renames(cols("id:int a:text b:int c:int d:int"), cols("id:int title:text c:big d:int"))
    assert got == {"a": "title"}
    assert column_renames(cols("id:int a:text b:int d:int"), cols("id:int title:text d:int")) == {
        "a": "title"
    }
    # the renamed column need not be the first of its gap: the one of its type is taken
    assert column_renames(cols("id:int b:int a:text d:int"), cols("id:int title:text d:int")) == {
        "a": "title"
    }


def test_added_columns_come_after_every_existing_one() -> None:
    # x after the surviving c: added, not b renamed
    assert column_renames(cols("id:int a:text b:int c:int"), cols("id:int a:text c:int x:int")) == {}
    assert column_renames(cols("id:int a:text"), cols("id:int a:text x:text")) == {}
    # a column dropped only
    assert column_renames(cols("id:int a:text b:int"), cols("id:int b:int")) == {}


def test_after_the_last_anchor_only_the_same_place_and_type() -> None:
    assert column_renames(cols("id:int a:text"), cols("id:int x:int")) == {}
    assert column_renames(cols("id:int a:text b:int"), cols("id:int x:text")) == {"a": "x"}


def test_several_renames_keep_their_order() -> None:
    got = column_renames(cols("id:int a:text b:text c:int"), cols("id:int x:text y:text c:int"))
    assert got == {"a": "x", "b": "y"}
    # a renamed key column
    assert column_renames(cols("id:int v:text"), cols("key:int v:text")) == {"id": "key"}


def test_names_both_shapes_have_are_never_renamed() -> None:
    assert column_renames(cols("a:int b:int"), cols("b:int a:int")) == {}
    assert column_renames(cols("id:int a:text"), cols("id:int a:text")) == {}
