"""The tantivy search view against real index directories (hand-built transactions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncline.core.config_models import ViewConfig
from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Item,
    Relation,
    SchemaChange,
    Truncate,
)
from syncline.testing.scripted import ScriptedBatches, dele, ins, upd
from syncline.views.base import Batch
from syncline.views.tantivy import create_view
from syncline.views.tantivy.view import TantivyView, search


def make_view(path: Path, **options: Any) -> TantivyView:
    return create_view(ViewConfig(name="search", kind="tantivy", options={"path": str(path), **options}))


def col(name: str, type_name: str = "text") -> Column:
    return Column(name=name, type_oid=0, typmod=-1, type_name=type_name, base=type_name)


def rel(oid: int, name: str, *cols: Column, key: tuple[str, ...] = ("id",)) -> Relation:
    return Relation(oid=oid, schema="public", name=name, replident="d", columns=cols, key=key)


ITEMS = rel(10, "items", col("id", "integer"), col("name"), col("body"), col("price", "numeric(10,2)"))
USERS = rel(11, "users", col("id", "integer"), col("name"))


class Index(ScriptedBatches):
    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.options = options
        self.view = make_view(path, **options)
        self.checkpoint = self.view.open()
        self.seq = self.checkpoint.seq
        self.relations: dict[int, Relation] = dict(self.view.relations())

    def reopen(self) -> None:
        self.view.close()
        self.view = make_view(self.path, **self.options)
        self.checkpoint = self.view.open()

    def apply(self, *groups: list[Item], commit: bool = True) -> Batch:
        b = self.batch(*(self.txn(*g) for g in groups), commit=commit)
        self.view.apply(b)
        return b

    def find(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return search(str(self.path), query, limit)

    def keys(self, query: str) -> list[str]:
        return sorted(h["key"] for h in self.find(query, 100))

    def fields(self, table: str, key: str) -> dict[str, Any]:
        hits = [h for h in self.find(f'_table:"{table}" AND _key:"{key}"', 5)]
        assert len(hits) == 1, hits
        return dict(hits[0]["fields"])


@pytest.fixture()
def ix(tmp_path: Path) -> Iterator[Index]:
    i = Index(tmp_path / "idx", text_fields=["name", "body"], tokenizer="en_stem")
    yield i
    i.view.close()


def setup_items(ix: Index) -> None:
    ix.apply(
        [SchemaChange(ITEMS), SchemaChange(USERS)],
        [
            ins(ITEMS, "1", "red running shoes", "fast and light", "10.50"),
            ins(ITEMS, "2", "blue hat", "warm wool", "5.00"),
            ins(USERS, "1", "alice runner"),
        ],
    )


def test_insert_update_delete_and_search(ix: Index) -> None:
    setup_items(ix)
    assert ix.view.count_rows("public.items") == 2
    hit = ix.find("wool")[0]
    assert hit["table"] == "public.items" and hit["key"] == "2"
    assert hit["fields"] == {"id": "2", "name": "blue hat", "body": "warm wool", "price": "5.00"}
    assert hit["score"] > 0
    # en_stem: "run" finds "running" (not "runner", another stem)
    assert ix.keys("run") == ["1"]
    assert ix.keys("doc.name:hat") == ["2"]
    assert ix.keys("num.price:[5 TO 6]") == ["2"]
    ix.apply([upd(ITEMS, "2", "green hat", "cotton", "6.00")])
    assert ix.keys("wool") == []
    assert ix.keys("cotton") == ["2"]
    ix.apply([dele(ITEMS, "1")])
    assert ix.keys("run") == []
    assert ix.view.count_rows("public.items") == 1
    assert ix.view.read_checkpoint() == Checkpoint(4, 4000)


def test_partial_toast_keeps_stored_values(ix: Index) -> None:
    setup_items(ix)
    ix.apply([upd(ITEMS, "1", "red shoes", UNCHANGED, "11.00")])
    assert ix.fields("public.items", "1") == {
        "id": "1",
        "name": "red shoes",
        "body": "fast and light",
        "price": "11.00",
    }
    assert ix.keys("light") == ["1"]
    # within one uncommitted span: a partial row resolved against an uncommitted document
    ix.apply([upd(ITEMS, "2", "blue cap", "thick wool", "5.00")], commit=False)
    ix.apply([upd(ITEMS, "2", "blue cap", UNCHANGED, "7.00")])
    assert ix.fields("public.items", "2")["body"] == "thick wool"


def test_primary_key_move_with_partial_row(ix: Index) -> None:
    setup_items(ix)
    ix.apply([upd(ITEMS, "9", "red shoes", UNCHANGED, "10.50", old=("1", None, None, None))])
    assert ix.keys('_table:"public.items"') == ["2", "9"]
    assert ix.fields("public.items", "9")["body"] == "fast and light"


def test_truncate_one_table_only(ix: Index) -> None:
    setup_items(ix)
    ix.apply([Truncate((ITEMS.oid,)), ins(ITEMS, "3", "new item", None, None)])
    assert ix.view.count_rows("public.items") == 1
    assert ix.view.count_rows("public.users") == 1
    assert ix.keys("runner") == ["1"]
    assert ix.fields("public.items", "3") == {"id": "3", "name": "new item", "body": None, "price": None}


def test_new_column_and_dropped_column(ix: Index) -> None:
    setup_items(ix)
    wider = rel(10, "items", *ITEMS.columns, col("color"))
    ix.apply([SchemaChange(wider), ins(wider, "4", "scarf", "long", "3.00", "crimson")])
    assert ix.fields("public.items", "4")["color"] == "crimson"
    assert ix.keys("doc.color:crimson") == ["4"]
    narrower = rel(10, "items", col("id", "integer"), col("name"), col("price", "numeric(10,2)"))
    ix.apply([SchemaChange(narrower)])
    assert ix.fields("public.items", "1") == {"id": "1", "name": "red running shoes", "price": "10.50"}
    assert ix.view.relations()[10] == narrower


def test_failing_batch_leaves_documents_and_checkpoint(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_items(ix)
    bad = Relation(oid=12, schema="public", name="bad", replident="d", columns=(col("x"),), key=("x",))
    real = ix.view._document

    def document(plan: Any, vals: Any) -> Any:
        if plan.qualified == "public.bad":
            raise ValueError("rejected")
        return real(plan, vals)

    monkeypatch.setattr(ix.view, "_document", document)
    b = ix.batch(
        ix.txn(ins(ITEMS, "5", "ghost", "boo", None)),
        ix.txn(SchemaChange(bad), ins(bad, "x")),
    )
    with pytest.raises(ViewError, match=r"public\.bad"):
        ix.view.apply(b)
    assert ix.keys("ghost") == []
    assert ix.view.read_checkpoint() == Checkpoint(2, 2000)
    ix.reopen()
    assert ix.checkpoint == Checkpoint(2, 2000)
    assert 12 not in ix.view.relations()


def test_keyless_table_is_left_out(ix: Index) -> None:
    setup_items(ix)
    keyless = Relation(oid=13, schema="public", name="nokey", replident="f", columns=(col("x"),), key=())
    ix.apply([SchemaChange(keyless), ins(keyless, "x"), ins(ITEMS, "6", "lamp", "on", None)])
    assert ix.view.count_rows("public.nokey") == 0
    assert ix.keys("lamp") == ["6"]


def test_reopen_reads_checkpoint_and_relations(ix: Index) -> None:
    setup_items(ix)
    ix.apply([ins(USERS, "2", "bob")])
    ix.reopen()
    assert ix.checkpoint == Checkpoint(3, 3000)
    assert ix.view.relations()[10] == ITEMS
    # a replayed batch (at or before the checkpoint) is skipped
    ix.view.apply(Batch([], {}, Checkpoint(3, 3000)))
    assert ix.view.count_rows("public.users") == 2


def test_second_writer_gets_clear_error_and_readers_work(ix: Index) -> None:
    setup_items(ix)
    other = make_view(ix.path)
    with pytest.raises(TransientViewError, match="held by another writer") as e:
        other.open()
    assert str(ix.path) in str(e.value)
    assert other.read_checkpoint() == Checkpoint(2, 2000)
    assert other.count_rows("public.items") == 2


def test_commit_false_not_visible_until_commit(ix: Index) -> None:
    setup_items(ix)
    ix.apply([ins(ITEMS, "6", "lamp", "bright", None)], commit=False)
    assert ix.keys("lamp") == []
    assert ix.view.read_checkpoint() == Checkpoint(2, 2000)
    ix.apply([ins(ITEMS, "7", "desk", "oak", None)])
    assert ix.keys("lamp") == ["6"] and ix.keys("oak") == ["7"]
    assert ix.view.read_checkpoint() == Checkpoint(4, 4000)


def test_close_inside_transaction_rolls_back(ix: Index) -> None:
    setup_items(ix)
    ix.apply([ins(ITEMS, "6", "lamp", "bright", None)], commit=False)
    ix.reopen()
    assert ix.checkpoint == Checkpoint(2, 2000)
    assert ix.keys("lamp") == []


def test_commit_interval_defers_and_close_flushes(tmp_path: Path) -> None:
    ix = Index(tmp_path / "i", commit_interval=3600)
    try:
        setup_items(ix)
        assert ix.view.read_checkpoint() == Checkpoint()
        ix.apply([ins(USERS, "2", "bob")])
        ix.reopen()
        assert ix.checkpoint == Checkpoint(3, 3000)
        assert ix.keys("bob") == ["2"]
    finally:
        ix.view.close()


def test_default_text_fields_are_all_columns(tmp_path: Path) -> None:
    ix = Index(tmp_path / "i")
    try:
        setup_items(ix)
        assert ix.keys("wool") == ["2"]
        assert ix.keys("running") == ["1"]
        assert ix.keys("run") == []  # default tokenizer: no stemming
    finally:
        ix.view.close()


def test_skip_on_error_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ix = Index(tmp_path / "i", on_error="skip")
    try:
        real = ix.view._document

        def reject(plan: Any, vals: Any) -> Any:
            if vals[0] == "2":
                raise ValueError("rejected")
            return real(plan, vals)

        monkeypatch.setattr(ix.view, "_document", reject)
        setup_items(ix)
        assert ix.view.skipped == 1
        assert ix.view.count_rows("public.items") == 1
    finally:
        ix.view.close()


def test_rejected_document_names_table_and_key(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(plan: Any, vals: Any) -> Any:
        raise ValueError("rejected")

    monkeypatch.setattr(ix.view, "_document", reject)
    with pytest.raises(ViewError, match=r"public\.items.*key '1'"):
        setup_items(ix)


def test_bad_query_and_unknown_tokenizer(ix: Index, tmp_path: Path) -> None:
    setup_items(ix)
    with pytest.raises(ViewError, match="invalid search query"):
        ix.find("nosuchfield:x")
    from syncline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer"):
        make_view(tmp_path / "t", tokenizer="bogus").open()


def test_throughput_100k_upserts(tmp_path: Path) -> None:
    ix = Index(tmp_path / "big", text_fields=["name", "body"])
    try:
        ix.apply([SchemaChange(ITEMS)])
        n, per = 100_000, 10_000
        t0 = time.perf_counter()
        for b in range(n // per):
            ix.apply(
                [
                    ins(ITEMS, str(i), f"item {i} widget", f"body text number {i % 97}", f"{i}.25")
                    for i in range(b * per, (b + 1) * per)
                ]
            )
        took = time.perf_counter() - t0
        print(f"\n100k upserts: {n / took:,.0f} docs/s")
        assert ix.view.count_rows("public.items") == n
    finally:
        ix.view.close()


ORDERS = rel(
    20,
    "orders",
    col("id", "integer"),
    col("note"),
    col("total", "numeric(12,2)"),
    col("qty", "bigint"),
    col("at", "timestamp with time zone"),
    col("day", "date"),
    col("paid", "boolean"),
    col("code", "character(4)"),
)


def setup_orders(ix: Index) -> None:
    ix.apply(
        [SchemaChange(ORDERS)],
        [
            ins(ORDERS, "1", "first", "10.50", "3", "2024-01-15 10:00:00+00", "2024-01-15", "t", "ab  "),
            ins(
                ORDERS,
                "2",
                "2024-05-01T00:00:00Z",
                "5.25",
                "-7",
                "2024-06-30 23:59:59.5+00",
                "2024-06-30",
                "f",
                "x   ",
            ),
            ins(
                ORDERS,
                "3",
                "big",
                "1200.00",
                "9000000000",
                "2023-12-31 23:00:00+00",
                "2023-12-31",
                None,
                None,
            ),
            ins(ORDERS, "4", "inf", "NaN", None, "infinity", "0044-03-15 BC", "t", "z   "),
            ins(ORDERS, "5", "old", "7", "0", "0001-01-01 00:00:00+00 BC", "1500-01-01", "f", "y   "),
        ],
    )


def test_numbers_and_dates_filter_and_sort(ix: Index) -> None:
    setup_orders(ix)
    assert ix.keys("num.total:[5 TO 11]") == ["1", "2", "5"]
    assert ix.keys("num.total:[5.5 TO 11.5]") == ["1", "5"]
    assert ix.keys("num.qty:>1000") == ["3"]
    assert ix.keys("num.qty:<0") == ["2"]
    assert ix.keys("date.at:[2024-01-01T00:00:00Z TO *]") == ["1", "2"]
    assert ix.keys("date.at:[2024-01-15T10:00:00Z TO 2024-01-15T10:00:00Z]") == ["1"]
    assert ix.keys("date.day:<2024-01-01T00:00:00Z") == ["3"]  # BC and 1500: stored only
    assert ix.keys("doc.note:first AND date.at:>=2024-01-01T00:00:00Z") == ["1"]

    def order(by: str, query: str = "*") -> list[str]:
        return [h["key"] for h in search(str(ix.path), query, 10, order_by=by)]

    assert order("total") == ["2", "5", "1", "3"]  # NaN: not a number, left out
    assert order("-total") == ["3", "1", "5", "2"]
    assert order("qty") == ["2", "5", "1", "3"]
    assert order("-at") == ["2", "1", "3"]  # infinity and BC are stored only
    assert order("day") == ["3", "1", "2"]
    assert order("-day", "num.total:<100") == ["2", "1"]
    assert order("total", "* -doc.note:first") == ["2", "5", "3"]
    with pytest.raises(ViewError, match="no column 'nosuchcolumn'"):
        order("nosuchcolumn")
    assert search(str(ix.path), "*", 2, order_by="total")[0]["fields"]["total"] == "5.25"
    # mixed integer / fractional bounds make tantivy panic: a clear error instead
    with pytest.raises(ViewError, match="fraction"):
        ix.find("num.total:[1.5 TO 11]")
    # after an update the sort follows the new value
    ix.apply([upd(ORDERS, "2", "moved", "2000", "1", "2025-01-01 00:00:00+00", "2025-01-01", "t", "x   ")])
    assert order("-total") == ["2", "3", "1", "5"]
    assert order("-at") == ["2", "1", "3"]


def test_stored_text_is_exactly_the_source_text(ix: Index) -> None:
    setup_orders(ix)
    # a string that looks like an RFC 3339 date stays a string; bool and char(n) as ::text
    assert ix.fields("public.orders", "2") == {
        "id": "2",
        "note": "2024-05-01T00:00:00Z",
        "total": "5.25",
        "qty": "-7",
        "at": "2024-06-30 23:59:59.5+00",
        "day": "2024-06-30",
        "paid": "false",
        "code": "x",
    }
    assert ix.fields("public.orders", "4")["at"] == "infinity"
    assert ix.fields("public.orders", "4")["day"] == "0044-03-15 BC"
    assert ix.fields("public.orders", "5")["at"] == "0001-01-01 00:00:00+00 BC"
    assert ix.fields("public.orders", "3")["paid"] is None


def test_default_text_fields_skip_numbers_and_dates(tmp_path: Path) -> None:
    ix = Index(tmp_path / "i")
    try:
        setup_orders(ix)
        assert ix.keys("first") == ["1"]
        assert ix.keys("1200.00") == []  # numbers: num.total / doc.total
        assert ix.keys("doc.total:1200.00") == ["3"]
    finally:
        ix.view.close()


def test_char_and_bool_keys_match_snapshot_text(ix: Index) -> None:
    """Output text (t, padded char) and ::text (snapshot) name the same document."""
    flags = rel(21, "flags", col("k", "character(3)"), col("on", "boolean"), col("v"), key=("k", "on"))
    ix.apply([SchemaChange(flags)], [ins(flags, "ab", "true", "snap")])
    ix.apply([upd(flags, "ab ", "t", "streamed")])
    assert ix.view.count_rows("public.flags") == 1
    assert ix.fields("public.flags", "ab:true") == {"k": "ab", "on": "true", "v": "streamed"}
    ix.apply([dele(flags, "ab ", "t")])
    assert ix.view.count_rows("public.flags") == 0


def test_index_of_an_older_layout_is_refused(tmp_path: Path) -> None:
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("_id", stored=True, tokenizer_name="raw")
    sb.add_text_field("text")
    (tmp_path / "old").mkdir()
    tantivy.Index(sb.build(), path=str(tmp_path / "old"))
    with pytest.raises(ViewError, match="did not create"):
        make_view(tmp_path / "old").open()
