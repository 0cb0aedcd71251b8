"""The DuckDB view against real DuckDB files (and a real PostgreSQL for the type zoo)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.adapt import Loader

from syncline.core.config_models import ViewConfig
from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Item,
    Relation,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
    Value,
)
from syncline.testing.pgcluster import PgCluster, running_cluster
from syncline.testing.scripted import ScriptedBatches
from syncline.views.base import Batch
from syncline.views.duckdb import create_view
from syncline.views.duckdb.compare import fetch_text_rows
from syncline.views.duckdb.values import pg_float4, pg_float8
from syncline.views.duckdb.view import DuckdbView, table_sql
from syncline.views.ducklake import create_view as create_lake
from syncline.views.iceberg import create_view as create_iceberg

KIND = "duckdb"
"""The kind under test: every test here runs on the DuckDB view and on the DuckLake view (the
DuckDB view on a lake), but those marked ``file_only`` (a DuckDB file's own behaviour)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("file_only"):
        kinds = ["duckdb"]
    elif metafunc.definition.get_closest_marker("iceberg_only"):
        kinds = ["iceberg"]
    else:
        kinds = ["duckdb", "ducklake", "iceberg"]
    metafunc.parametrize("kind", kinds, indirect=True)


@pytest.fixture(autouse=True)
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    global KIND
    KIND = request.param
    yield KIND
    KIND = "duckdb"


def make_view(path: Path, tables: tuple[str, ...] = (), name: str = "warehouse") -> DuckdbView:
    if KIND == "ducklake":
        opts = {"catalog": f"{path}.sqlite", "data_path": f"{path}.lake"}
        return create_lake(ViewConfig(name=name, kind="ducklake", tables=tables, options=dict(opts)))
    if KIND == "iceberg":
        opts = {"catalog": f"{path}.sqlite", "warehouse": f"{path}.iceberg"}
        return create_iceberg(ViewConfig(name=name, kind="iceberg", tables=tables, options=dict(opts)))
    return create_view(ViewConfig(name=name, kind="duckdb", tables=tables, options={"path": str(path)}))


class Warehouse(ScriptedBatches):
    """A view plus a hand-driven stream: seq numbers, batches and queries."""

    def __init__(self, path: Path, tables: tuple[str, ...] = ()) -> None:
        self.path = path
        self.tables = tables
        self.view = make_view(path, tables)
        self.checkpoint = self.view.open()
        self.seq = self.checkpoint.seq
        self.relations: dict[int, Relation] = dict(self.view.relations())

    def reopen(self) -> None:
        self.view.close()
        self.view = make_view(self.path, self.tables)
        self.checkpoint = self.view.open()

    def apply(self, *groups: list[Item]) -> Batch:
        b = self.batch(*(self.txn(*g) for g in groups))
        self.view.apply(b)
        if KIND == "iceberg" and b.commit:
            assert_published(self.view)
        return b

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return list(self.view.connection.execute(query, params).fetchall())

    def table(self, qualified: str, order: str = "1") -> list[tuple[Any, ...]]:
        schema, name = qualified.split(".", 1)
        return self.rows(f"SELECT * FROM {table_sql(schema, name)} ORDER BY {order}")  # noqa: S608


def _uuid_text(v: Any) -> Any:
    import uuid

    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, list | tuple):
        return type(v)(_uuid_text(x) for x in v)
    return v


def assert_published(view: Any) -> None:
    """An Iceberg view's tables, read by DuckDB's iceberg extension at the position the
    batch recorded, equal its working copy (which the rest of this file checks)."""
    from syncline.views.iceberg import lake

    assert view.healed == 0  # no commit left a row count that had to be mended
    con, read = lake.reading_connection(view._catalog(), view.name)
    try:
        assert read.batch is not None and read.batch.checkpoint.seq == view.read_checkpoint().seq
        mine = {(r.schema, r.name) for r in view.relations().values()}
        assert set(read.tables) == mine
        for schema, name in mine:
            q = f"SELECT * FROM {table_sql(schema, name)} ORDER BY ALL"  # noqa: S608
            want = view.connection.execute(q).fetchall()
            got = con.execute(q).fetchall()
            # repr: NaN equals NaN; Iceberg has no JSON or UUID type of DuckDB's: text
            assert repr(_uuid_text(got)) == repr(_uuid_text(want)), (schema, name)
    finally:
        con.close()


@pytest.fixture()
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    w = Warehouse(tmp_path / "w.duckdb")
    yield w
    w.view.close()


def col(name: str, type_name: str = "text", ident: bool = False, **kw: Any) -> Column:
    return Column(
        name=name,
        type_oid=0,
        typmod=-1,
        type_name=type_name,
        base=type_name,
        in_identity=ident,
        **kw,
    )


def rel(
    oid: int, name: str, *cols: Column, key: tuple[str, ...] = ("id",), schema: str = "public"
) -> Relation:
    return Relation(oid=oid, schema=schema, name=name, replident="d", columns=cols, key=key)


ITEMS = rel(
    10,
    "items",
    col("id", "integer", True),
    col("name"),
    col("price", "numeric(10,2)"),
    col("note"),
)


def ins(relation: Relation, *values: Value) -> RowChange:
    return RowChange("insert", relation.oid, tuple(values))


def upd(relation: Relation, *values: Value, old: tuple[Value, ...] | None = None) -> RowChange:
    return RowChange("update", relation.oid, tuple(values), old=old)


def dele(relation: Relation, *key: Value) -> RowChange:
    kidx = relation.key_indexes()
    old: list[Value] = [None] * len(relation.columns)
    for i, v in zip(kidx, key, strict=True):
        old[i] = v
    return RowChange("delete", relation.oid, None, old=tuple(old))


# ------------------------------------------------------------------ basics


def test_insert_update_delete(wh: Warehouse) -> None:
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1.50", None), ins(ITEMS, "2", "b", "2", "x")])
    assert wh.table("public.items") == [
        (1, "a", Decimal("1.50"), None),
        (2, "b", Decimal("2.00"), "x"),
    ]
    wh.apply([upd(ITEMS, "1", "A", "9.99", "n")], [dele(ITEMS, "2")])
    assert [r[:2] for r in wh.table("public.items")] == [(1, "A")]
    assert wh.view.count_rows("public.items") == 1
    assert wh.view.read_checkpoint() == Checkpoint(wh.seq, wh.seq * 1000)
    types = wh.rows("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'items'")
    assert types == [("id", "INTEGER"), ("name", "VARCHAR"), ("price", "DECIMAL(10,2)"), ("note", "VARCHAR")]
    # no primary key constraint on data tables
    assert wh.rows("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'items'") == [(0,)]


@pytest.mark.iceberg_only
def test_a_catalog_emptied_under_the_working_copy_is_published_again(wh: Warehouse, tmp_path: Path) -> None:
    """The catalog and its files gone (the working copy kept): the next batch publishes
    every table whole, not only the one it changes."""
    import shutil

    other = rel(11, "other", col("id", "integer", True), col("v"))
    wh.apply(
        [SchemaChange(ITEMS), SchemaChange(other)], [ins(ITEMS, "1", "a", "1", None), ins(other, "7", "x")]
    )
    wh.view.close()
    (tmp_path / "w.duckdb.sqlite").unlink()
    for d in (tmp_path / "w.duckdb.iceberg").iterdir():
        if d.name != "_syncline":
            shutil.rmtree(d)
    wh.reopen()
    wh.apply([ins(ITEMS, "2", "b", "2", None)])  # checks every table against the working copy
    assert [r[0] for r in wh.table("public.other")] == [7]


@pytest.mark.iceberg_only
@pytest.mark.parametrize("key_type", ["integer", "timestamp with time zone"])
def test_many_changed_keys_are_deleted_by_ranges(wh: Warehouse, key_type: str) -> None:
    """More than 256 changed keys of an ordered type: the copy-on-write deletes ranges and
    appends the working copy's rows of those ranges (every batch checked against it)."""
    t = rel(12, "many", col("id", key_type, True), col("v"))

    def key(i: int) -> str:
        return str(i) if key_type == "integer" else f"2024-01-01 00:00:{i // 1000:02d}.{i % 1000:03d}+00"

    wh.apply([SchemaChange(t)], [ins(t, key(i), "a") for i in range(2000)])
    sqls: list[str] = []
    arrow = wh.view._arrow

    def spy(sql: str, params: Any = None) -> Any:
        sqls.append(sql)
        return arrow(sql, params)

    wh.view._arrow = spy  # type: ignore[method-assign]
    changed = [*range(0, 300, 1), *range(1500, 1600)]
    wh.apply([upd(t, key(i), "b") for i in changed], [dele(t, key(1000)), dele(t, key(1999))])
    assert any("BETWEEN" in q for q in sqls), sqls
    assert not any(q.endswith(f"FROM {table_sql('public', 'many')}") for q in sqls), "written whole"
    got = wh.rows("SELECT count(*) FILTER (v = 'b'), count(*) FROM public.many")
    assert got == [(400, 1998)]


def test_net_effect_in_one_batch(wh: Warehouse) -> None:
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None), ins(ITEMS, "2", "b", "2", None)])
    wh.apply(
        [ins(ITEMS, "3", "c", "3", None), upd(ITEMS, "3", "c2", "3", None)],
        [dele(ITEMS, "1"), ins(ITEMS, "1", "again", "1", None)],
        [dele(ITEMS, "2")],
        [ins(ITEMS, "4", "d", "4", None), dele(ITEMS, "4")],
        [upd(ITEMS, "1", "final", "1", None)],
    )
    assert [r[:2] for r in wh.table("public.items")] == [(1, "final"), (3, "c2")]


def test_primary_key_update(wh: Warehouse) -> None:
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None), ins(ITEMS, "2", "b", "2", None)])
    # swap keys 1 and 2 through 3, in one batch
    wh.apply(
        [upd(ITEMS, "3", "a", "1", None, old=("1", None, None, None))],
        [upd(ITEMS, "1", "b", "2", None, old=("2", None, None, None))],
        [upd(ITEMS, "2", "a", "1", None, old=("3", None, None, None))],
    )
    assert [r[:2] for r in wh.table("public.items")] == [(1, "b"), (2, "a")]


def test_partial_rows_keep_stored_values(wh: Warehouse) -> None:
    big = "x" * 10_000
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", big), ins(ITEMS, "2", "b", "2", big + "2")])
    # same key, unchanged TOAST value
    wh.apply([upd(ITEMS, "1", "a2", "1.5", UNCHANGED)])
    # moved key: the unchanged value comes from the row stored under the old key
    wh.apply([upd(ITEMS, "20", "b2", "2", UNCHANGED, old=("2", None, None, None))])
    rows = wh.table("public.items")
    assert [(r[0], r[1], r[3]) for r in rows] == [(1, "a2", big), (20, "b2", big + "2")]
    # partial after a full row in the same batch: netting merges; chain of moves
    wh.apply(
        [upd(ITEMS, "1", "a3", "1", UNCHANGED)],
        [upd(ITEMS, "5", "a4", "1", UNCHANGED, old=("1", None, None, None))],
        [upd(ITEMS, "6", "a5", "1", UNCHANGED, old=("5", None, None, None))],
        [ins(ITEMS, "7", "n", "1", "new"), upd(ITEMS, "7", "n2", "1", UNCHANGED)],
    )
    rows = wh.table("public.items")
    assert [(r[0], r[1], r[3]) for r in rows] == [(6, "a5", big), (7, "n2", "new"), (20, "b2", big + "2")]


def test_truncate(wh: Warehouse) -> None:
    other = rel(11, "other", col("id", "bigint", True), col("v"))
    wh.apply(
        [SchemaChange(ITEMS), SchemaChange(other)], [ins(ITEMS, "1", "a", "1", None), ins(other, "1", "x")]
    )
    wh.apply([ins(ITEMS, "2", "b", "2", None), Truncate((10, 11)), ins(ITEMS, "3", "c", "3", None)])
    assert [r[0] for r in wh.table("public.items")] == [3]
    assert wh.table("public.other") == []


def test_schema_changes(wh: Warehouse) -> None:
    t1 = rel(20, "evolve", col("id", "integer", True), col("a", "integer"), col("b"), col("c"))
    wh.apply([SchemaChange(t1)], [ins(t1, "1", "10", "bee", "sea")])
    # add a column, drop one, rename one, change a type
    t2 = rel(20, "evolve", col("id", "integer", True), col("a", "bigint"), col("bb"), col("d", "date"))
    wh.apply([SchemaChange(t2), ins(t2, "2", "20000000000", "bee2", "2024-01-02")])
    assert wh.rows("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'evolve'") == [
        ("id", "INTEGER"),
        ("a", "BIGINT"),
        ("bb", "VARCHAR"),
        ("d", "DATE"),
    ]
    assert [tuple(map(str, r)) for r in wh.table("public.evolve")] == [
        ("1", "10", "bee", "None"),
        ("2", "20000000000", "bee2", "2024-01-02"),
    ]
    # rename the table (same schema) and move it to another schema
    t3 = rel(20, "evolved", *t2.columns)
    wh.apply([SchemaChange(t3), upd(t3, "1", "11", "b", None)])
    assert [r[:2] for r in wh.table("public.evolved")] == [(1, 11), (2, 20000000000)]
    t4 = rel(20, "evolved", *t2.columns, schema="archive")
    wh.apply([SchemaChange(t4), dele(t4, "2")])
    assert [r[:2] for r in wh.table("archive.evolved")] == [(1, 11)]
    assert wh.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'evolve%'") == [(1,)]
    # relations survive a restart
    wh.reopen()
    assert wh.view.relations()[20] == t4


def test_rows_deleted_then_the_table_altered_in_one_batch(wh: Warehouse) -> None:
    """A source batch that deletes and updates rows, then alters the table (type, add, drop,
    rename), then writes it again: DuckDB 1.x refuses to commit a transaction that altered a
    table after deleting or updating its rows, so the view copies such a table first."""
    t1 = rel(21, "churn", col("id", "integer", True), col("a", "integer"), col("b"), col("c"))
    wh.apply([SchemaChange(t1)], [ins(t1, str(i), str(i), f"b{i}", f"c{i}") for i in range(1, 6)])
    t2 = rel(21, "churn", col("id", "integer", True), col("a", "bigint"), col("bb"), col("d", "date"))
    t3 = rel(21, "churn", col("id", "integer", True), col("a", "text"), col("bb"), col("d", "date"))
    wh.apply(
        [dele(t1, "1"), upd(t1, "2", "20", "B2", "C2")],
        [SchemaChange(t2), ins(t2, "6", "60000000000", "b6", "2024-01-02"), dele(t2, "3")],
        [upd(t2, "4", "40", "B4", None), SchemaChange(t3), ins(t3, "7", "x", "b7", None)],
    )
    assert [tuple(map(str, r)) for r in wh.table("public.churn")] == [
        ("2", "20", "B2", "None"),
        ("4", "40", "B4", "None"),
        ("5", "5", "b5", "None"),
        ("6", "60000000000", "b6", "2024-01-02"),
        ("7", "x", "b7", "None"),
    ]
    assert wh.rows(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'churn' "
        "AND database_name = current_database()"
    ) == [("id", "INTEGER"), ("a", "VARCHAR"), ("bb", "VARCHAR"), ("d", "DATE")]
    wh.reopen()
    assert wh.view.relations()[21] == t3


def test_weird_identifiers(wh: Warehouse) -> None:
    t = rel(30, 'we"ird.table', col('i"d', "integer", True), col("sel ect"), key=('i"d',), schema="My Schema")
    wh.apply([SchemaChange(t)], [ins(t, "1", "x"), ins(t, "2", "y")], [dele(t, "1")])
    assert wh.rows('SELECT * FROM "My Schema"."we""ird.table"') == [(2, "y")]
    assert wh.view.count_rows('My Schema.we"ird.table') == 1


def test_idempotent_reapply_and_restart(wh: Warehouse) -> None:
    b1 = wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None)])
    b2 = wh.apply([upd(ITEMS, "1", "b", "1", None)])
    wh.view.apply(b1)
    wh.view.apply(b2)
    assert [r[:2] for r in wh.table("public.items")] == [(1, "b")]
    wh.reopen()
    assert wh.checkpoint == Checkpoint(b2.checkpoint.seq, b2.checkpoint.commit_lsn)
    wh.view.apply(b2)
    assert [r[:2] for r in wh.table("public.items")] == [(1, "b")]
    assert wh.view.relations() == {10: ITEMS}


def test_atomicity_on_failure(wh: Warehouse) -> None:
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None)])
    before = wh.view.read_checkpoint()
    t2 = rel(10, "items", *ITEMS.columns, col("extra", "integer"))
    bad = wh.batch(
        wh.txn(ins(ITEMS, "2", "b", "2", None), dele(ITEMS, "1")),
        wh.txn(SchemaChange(t2), ins(t2, "3", "c", "3", None, "not a number")),
    )
    with pytest.raises(ViewError) as err:
        wh.view.apply(bad)
    msg = str(err.value)
    assert "warehouse" in msg and "public.items" in msg and f"seq {before.seq}" in msg
    assert not isinstance(err.value, TransientViewError)
    assert wh.view.read_checkpoint() == before
    assert [r[:2] for r in wh.table("public.items")] == [(1, "a")]
    assert wh.view.relations() == {10: ITEMS}
    assert [c for (c,) in wh.rows("SELECT column_name FROM duckdb_columns() WHERE table_name = 'items'")] == [
        "id",
        "name",
        "price",
        "note",
    ]
    # the view keeps working: a corrected batch goes through
    wh.relations = {10: ITEMS}
    wh.seq = before.seq
    wh.apply([ins(ITEMS, "2", "b", "2", None)])
    assert [r[0] for r in wh.table("public.items")] == [1, 2]


def test_batches_inside_one_source_transaction(wh: Warehouse) -> None:
    wh.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None)])
    stored = wh.view.read_checkpoint()
    t = wh.txn(ins(ITEMS, "2", "b", "2", None))
    t.last = False
    part1 = wh.batch(t, commit=False)
    wh.view.apply(part1)
    assert wh.view.read_checkpoint() == stored  # nothing committed yet
    part2 = Batch(
        [Transaction(t.seq, t.commit_lsn, t.end_lsn, t.xid, 0, [ins(ITEMS, "3", "c", "3", None)])],
        dict(wh.relations),
        Checkpoint(t.seq, t.commit_lsn),
    )
    wh.view.apply(part2)
    assert wh.view.read_checkpoint() == Checkpoint(t.seq, t.commit_lsn)
    assert [r[0] for r in wh.table("public.items")] == [1, 2, 3]
    # an uncommitted part is rolled back by close
    t4 = wh.txn(ins(ITEMS, "4", "d", "4", None))
    wh.view.apply(wh.batch(t4, commit=False))
    wh.reopen()
    assert [r[0] for r in wh.table("public.items")] == [1, 2, 3]


def test_batches_share_the_callers_relations(tmp_path: Path) -> None:
    """Regression: the runtime passes one ``relations`` dict (the schema state where it
    started reading) with every batch and relies on views advancing it in place. The view
    used a copy, so a batch without the table's SchemaChange skipped all its rows while
    storing its checkpoint: the warehouse silently stopped changing."""
    view = make_view(tmp_path / "r.duckdb")
    view.open()
    relations: dict[int, Relation] = {}  # like reader.relations_at(0)

    def txn(seq: int, *items: Item) -> Transaction:
        return Transaction(seq, seq * 10, seq * 10 + 1, 700 + seq, 0, list(items))

    def apply(*txns: Transaction) -> None:
        last = txns[-1]
        view.apply(Batch(list(txns), relations, Checkpoint(last.seq, last.commit_lsn), commit=last.last))

    try:
        snap = txn(1, SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1", None))
        snap.last = False
        apply(snap)  # a snapshot larger than a batch: ends inside the transaction
        apply(txn(1, ins(ITEMS, "2", "b", "2", None)))
        apply(txn(2, upd(ITEMS, "1", "A", "1", None)), txn(3, ins(ITEMS, "3", "c", "3", None)))
        apply(txn(4, dele(ITEMS, "2")))
        assert relations == {ITEMS.oid: ITEMS}
        assert view.read_checkpoint() == Checkpoint(4, 40)
        rows = view.connection.execute("SELECT id, name FROM public.items ORDER BY id").fetchall()
        assert rows == [(1, "A"), (3, "c")]
        # a caller whose relations are stale (here: empty) still gets every row applied:
        # the view knows the shape of the tables it holds, also after a restart
        view.close()
        view.open()
        relations = {}
        apply(txn(5, ins(ITEMS, "5", "e", "5", None)))
        rows = view.connection.execute("SELECT id, name FROM public.items ORDER BY id").fetchall()
        assert rows == [(1, "A"), (3, "c"), (5, "e")]
        assert relations == {}  # no schema change in that batch
    finally:
        view.close()


def test_table_filter(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "f.duckdb", tables=("public.keep*",))
    keep = rel(40, "keep_me", col("id", "integer", True), col("v"))
    skip = rel(41, "skip_me", col("id", "integer", True), col("v"))
    w.apply([SchemaChange(keep), SchemaChange(skip)], [ins(keep, "1", "a"), ins(skip, "1", "b")])
    names = [n for (n,) in w.rows("SELECT table_name FROM duckdb_tables() WHERE schema_name='public'")]
    assert names == ["keep_me"]
    w.view.close()


def _type(wh: Warehouse, table: str, column: str) -> str:
    rows = wh.rows(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = ? AND column_name = ?", [table, column]
    )
    return str(rows[0][0])


def _text_rows(wh: Warehouse, relation: Relation) -> list[tuple[str | None, ...]]:
    rows = fetch_text_rows(wh.view.connection, relation, cast=False)
    return sorted(rows, key=lambda r: int(r[0] or 0))


def test_arrays_dimensionality(wh: Warehouse, caplog: pytest.LogCaptureFixture) -> None:
    t = rel(50, "arr", col("id", "integer", True), col("a", "integer[]", category="A", element="integer"))
    wh.apply([SchemaChange(t)], [ins(t, "1", "{}"), ins(t, "2", None)])
    wh.apply([ins(t, "3", "{{1,2},{NULL,4}}")])
    assert _type(wh, "arr", "a") == "INTEGER[][]"
    assert wh.table("public.arr") == [(1, []), (2, None), (3, [[1, 2], [None, 4]])]
    # PostgreSQL does not enforce dimensions: a 1-D value turns the column into text
    with caplog.at_level("WARNING"):
        wh.apply([ins(t, "4", "{5}")], [ins(t, "5", "{{{1}},{{2}}}")])
    assert _type(wh, "arr", "a") == "VARCHAR"
    assert caplog.text.count("now VARCHAR") == 1
    assert wh.table("public.arr") == [
        (1, "{}"),
        (2, None),
        (3, "{{1,2},{NULL,4}}"),
        (4, "{5}"),
        (5, "{{{1}},{{2}}}"),
    ]
    wh.apply([upd(t, "1", "[0:1]={7,8}")], [dele(t, "4")])
    assert _text_rows(wh, t) == [
        ("1", "[0:1]={7,8}"),
        ("2", None),
        ("3", "{{1,2},{NULL,4}}"),
        ("5", "{{{1}},{{2}}}"),
    ]


def test_mixed_dimensionality_in_one_batch_and_rendering(wh: Warehouse) -> None:
    """Stored lists of every element kind are re-rendered as PostgreSQL's array text."""
    cols: dict[str, tuple[str, str, list[str | None]]] = {
        "ints": ("integer[]", "integer", ["{{1,2},{3,NULL}}", "{}", "{NULL}"]),
        "texts": ("text[]", "text", ['{"a b","c,d","\\"q\\"",NULL,"NULL",""}', "{x}", None]),
        "f8": ("double precision[]", "double precision", ["{NaN,-0,1e+300,Infinity,0.1}", "{1}", None]),
        "ts": (
            "timestamp with time zone[]",
            "timestamp with time zone",
            ['{"0044-03-15 12:00:00+00 BC",infinity,"2021-03-14 02:30:00.5+00"}', "{}", None],
        ),
        "ivs": (
            "interval[]",
            "interval",
            ['{"1 year 2 mons 3 days 04:05:06.789","-1 days +02:00:00"}', "{}", None],
        ),
        "nums": ("numeric(5,2)[]", "numeric(5,2)", ["{1.50,-0.25}", "{0.00}", None]),
        "blobs": ("bytea[]", "bytea", ['{"\\\\x00ff",NULL}', "{}", None]),
        "bools": ("boolean[]", "boolean", ["{t,f,NULL}", "{}", None]),
    }
    t = rel(
        51,
        "zarr",
        col("id", "integer", True),
        *(col(n, tn, category="A", element=el) for n, (tn, el, _) in cols.items()),
    )
    rows = [tuple([str(i + 1), *(v[i] for _, _, v in cols.values())]) for i in range(3)]
    wh.apply([SchemaChange(t)], [ins(t, *r) for r in rows])
    assert _type(wh, "zarr", "ints") == "VARCHAR"  # 2-D and 1-D in one batch
    assert _type(wh, "zarr", "texts") == "VARCHAR[]"
    assert _text_rows(wh, t) == rows
    # every list column meets a value of another dimensionality: converted from stored lists
    odd = {
        "texts": '{{"a b",NULL}}',
        "f8": "{{-0}}",
        "ts": '{{"2000-01-01 00:00:00+00"}}',
        "ivs": "{{00:00:01}}",
        "nums": "{NaN}",  # NaN does not fit DECIMAL either
        "blobs": '{{"\\\\x01"}}',
        "bools": "[2:2]={t}",  # lower bounds are kept by text
    }
    row4 = tuple(["4", "{1}", *odd.values()])
    wh.apply([ins(t, *row4)])
    for name in cols:
        assert _type(wh, "zarr", name) == "VARCHAR", name
    assert _text_rows(wh, t) == [*rows, row4]
    wh.reopen()
    assert _text_rows(wh, t) == [*rows, row4]


# ------------------------------------------------------------------ locking


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        c = duckdb.connect({str(path)!r})
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.file_only
def test_locked_file_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    w = Warehouse(path)
    w.apply([SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1", None)])
    cp = w.view.read_checkpoint()
    w.view.close()
    assert make_view(path).read_checkpoint() == cp  # not open: reads the file read-only
    holder = _hold_lock(path)
    try:
        v = make_view(path)
        with pytest.raises(TransientViewError, match="warehouse"):
            v.open()
        assert v.read_checkpoint() is None
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    deadline = time.monotonic() + 10
    v = make_view(path)
    while True:
        try:
            assert v.open() == cp
            break
        except TransientViewError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    v.close()


# ------------------------------------------------------------------ type zoo


ZOO_SETUP = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (n integer, s text);
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
"""

# column -> (type, SQL literals, one per row; missing rows are NULL)
ZOO: dict[str, tuple[str, list[str]]] = {
    "n_big": (
        "numeric",
        [
            "repeat('9', 1000)::numeric",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'0.000000000000000000001'",
            "'-12345.678900'",
            "(repeat('1', 500) || '.' || repeat('2', 500))::numeric",
        ],
    ),
    "n_fix": ("numeric(10,2)", ["'1.5'", "'-99999999.99'", "'0'", "'0.01'"]),
    "n_38": ("numeric(38,10)", ["'9999999999999999999999999999.9999999999'", "'-1'"]),
    "n_wide": ("numeric(50,5)", ["'123456789012345678901234567890123456789012345.12345'"]),
    "f8": (
        "double precision",
        [
            "'-0'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'1e300'",
            "'1.5e-7'",
            "'0.1'",
            "'123456789012345678'",
            "'1e15'",
            "'1e14'",
            "'2.2250738585072014e-308'",
            "'5e-324'",
            "'-1.7976931348623157e308'",
        ],
    ),
    "f4": (
        "real",
        [
            "'-0'",
            "'NaN'",
            "'Infinity'",
            "'3.4028235e38'",
            "'1e-45'",
            "'0.1'",
            "'123456'",
            "'1234567'",
            "'1.17549435e-38'",
            "'-Infinity'",
        ],
    ),
    "si": ("smallint", ["-32768", "32767"]),
    "i4": ("integer", ["-2147483648", "2147483647"]),
    "i8": ("bigint", ["-9223372036854775808", "9223372036854775807"]),
    "dom": ("posint", ["42"]),
    "b": ("boolean", ["true", "false"]),
    "t": ("text", [r"E'a\"b\\c'", "''", "'ünïcødé ✓ 😀'", r"E'line\nbreak\ttab'", "'NULL'"]),
    "vc": ("varchar(5)", ["'abc'"]),
    "ch": ("char(5)", ["'ab'"]),
    "qc": ('"char"', ["'x'"]),
    "d": (
        "date",
        [
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 BC'",
            "'0001-01-01 BC'",
            "'5874897-12-31'",
            "'2024-02-29'",
            "'4713-01-01 BC'",
            "'0001-01-01'",
            "'10000-01-01'",
        ],
    ),
    "ts": (
        "timestamp",
        [
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 12:00:00.5 BC'",
            "'2024-03-10 02:30:00'",
            "'4713-01-01 00:00:00 BC'",
            "'10000-01-01 00:00:00'",
            "'2000-01-01 00:00:00.000001'",
            "'1999-12-31 23:59:59.999999'",
        ],
    ),
    "tstz": (
        "timestamptz",
        [
            "'2024-03-10 02:30:00 America/New_York'",
            "'2024-11-03 01:30:00-04'",
            "'2024-11-03 01:30:00-05'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 12:00:00+00 BC'",
            "'1900-01-01 00:00:00 Europe/Amsterdam'",
            "'2024-01-01 00:00:00.000001+00'",
            "'2024-03-31 02:30:00 Europe/Berlin'",
            "'1883-11-18 12:00:00 America/New_York'",
        ],
    ),
    "tm": ("time", ["'24:00:00'", "'00:00:00'", "'12:34:56.789'", "'23:59:59.999999'"]),
    "ttz": ("timetz", ["'12:00:00+05:30'"]),
    "iv": (
        "interval",
        [
            "'1 year 2 mons 3 days 04:05:06.789'",
            "'-1 days +02:03:00'",
            "'0'",
            "'-1 year -2 mons +3 days -04:05:06'",
            "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775806'",
            "'-178956970 years -8 mons -2147483648 days -2562047788:00:54.775807'",
            "'1 day -00:00:01'",
            "'-00:00:00.000001'",
            "'25 hours'",
            "'1 mon -1 day'",
        ],
    ),
    "j": (
        "json",
        [
            '\'{"a" :  1, "a": 2}\'',
            "'[1, 2.50, \"x\\u0000\", 1e400]'",
            "'\"str\"'",
            "'null'",
        ],
    ),
    "jb": ("jsonb", ['\'{"b": 1, "a": [1, 2.50, null]}\'', "'\"é\"'", "'{}'"]),
    "by": ("bytea", ["'\\x'", "'\\x00ff10'", "convert_to('hello', 'UTF8')"]),
    "u": ("uuid", ["'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "'00000000-0000-0000-0000-000000000000'"]),
    "ip": ("inet", ["'192.168.0.1/24'", "'::1'"]),
    "mac": ("macaddr", ["'08:00:2b:01:02:03'"]),
    "e": ("mood", ["'happy'", "'sad'"]),
    "rng": ("int4range", ["'[1,5)'", "'empty'", "'(,3]'"]),
    "tsr": ("tstzrange", ["'[2024-01-01 00:00:00+00,infinity)'"]),
    "comp": ("pair", ["ROW(1, 'a b')::pair", "ROW(NULL, '\"')::pair"]),
    "mon": ("money", ["'12.34'"]),
    "bits": ("bit(4)", ["B'1010'"]),
    "vbits": ("varbit", ["B'101'"]),
    "pt": ("point", ["'(1.5,2)'"]),
    "bx": ("box", ["'((0,0),(1,1))'"]),
    "tsv": ("tsvector", ["'a fat cat'"]),
    "arr1": ("integer[]", ["'{1,NULL,3}'", "'{}'", "'{-1}'"]),
    "arr2": ("integer[][]", ["'{{1,2},{NULL,4}}'", "'{}'", "'{{5}}'"]),
    "tarr": (
        "text[]",
        [
            "ARRAY['a,b', '', 'NULL', NULL, 'x\"y', 'sp ace', 'back\\slash', '{}']",
            "'{}'",
        ],
    ),
    "tsarr": (
        "timestamptz[]",
        [
            "ARRAY['infinity', '2024-01-01 00:00:00+00', '0044-03-15 12:00:00+00 BC']::timestamptz[]",
        ],
    ),
    "darr": ("date[]", ["ARRAY['0044-03-15 BC', '-infinity', NULL]::date[]"]),
    "ivarr": ("interval[]", ["ARRAY['1 day', '-00:00:01', '1 year 1 mon']::interval[]"]),
    "byarr": ("bytea[]", ["ARRAY['\\x00ff'::bytea, NULL, '\\x'::bytea]"]),
    "f8arr": ("float8[]", ["'{NaN,-0,1e+300,Infinity,0.1}'"]),
    "f4arr": ("real[]", ["'{NaN,-0,0.1,1234567}'"]),
    "numarr": ("numeric[]", ["'{1.10,NaN,-Infinity}'"]),
    "nfixarr": ("numeric(6,2)[]", ["'{1.10,2}'"]),
    "jarr": ("jsonb[]", ["ARRAY['{\"a\": 1}'::jsonb, 'null'::jsonb, NULL]"]),
    "uarr": ("uuid[]", ["ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]"]),
    "barr": ("boolean[]", ["'{t,f,NULL}'"]),
    "earr": ("mood[]", ["'{ok,happy}'"]),
    "bxarr": ("box[]", ["ARRAY['((0,0),(1,1))'::box, '((2,2),(3,3))'::box]"]),
    "tmarr": ("time[]", ["'{24:00:00,12:00:00.5}'"]),
    "rarr": ("int4range[]", ["ARRAY['[1,2)'::int4range, 'empty']"]),
    "arr3": ("text[][][]", ["'{{{a,b}},{{\"c d\",NULL}}}'"]),
}

CATALOG = """
SELECT a.attname, a.atttypid::int, a.atttypmod, format_type(a.atttypid, a.atttypmod),
       b.typcategory,
       CASE WHEN b.typcategory = 'A' THEN format_type(b.typelem, NULL) ELSE '' END,
       format_type(b.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = 'public.zoo'::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class RawText(Loader):
    def load(self, data: Any) -> str:
        return bytes(data).decode()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


def test_type_zoo_round_trip(cluster: PgCluster, tmp_path: Path) -> None:
    nrows = max(len(v) for _, v in ZOO.values())
    cluster.psql(f"CREATE DATABASE zoo_{KIND}")  # the module's cluster serves both kinds
    with psycopg.connect(cluster.dsn(f"zoo_{KIND}"), autocommit=True) as pg:
        pg.execute("SET TimeZone = 'UTC'")
        pg.execute(ZOO_SETUP)  # type: ignore[arg-type]
        cols = ", ".join(f"{n} {t}" for n, (t, _) in ZOO.items())
        pg.execute(f"CREATE TABLE zoo (id integer PRIMARY KEY, {cols})")  # type: ignore[arg-type]
        for i in range(nrows):
            vals = [v[i] if i < len(v) else "NULL" for _, v in ZOO.values()]
            pg.execute(f"INSERT INTO zoo VALUES ({i}, {', '.join(vals)})")  # type: ignore[arg-type]  # noqa: S608
        catalog = pg.execute(CATALOG).fetchall()  # type: ignore[arg-type]
        # The event stream carries each type's *output function* text (pgoutput), which is
        # what a text-mode result holds; note `col::text` differs for boolean ('true'),
        # char(n) (trailing blanks cut) and inet ('/32' added).
        for (oid,) in pg.execute("SELECT oid::int FROM pg_type").fetchall():
            pg.adapters.register_loader(oid, RawText)
        names = ", ".join(n for n, *_ in catalog)
        query = f"SELECT {names} FROM zoo ORDER BY id"  # noqa: S608
        source = pg.execute(query).fetchall()  # type: ignore[arg-type]
        casts = ", ".join(f"{n}::text" for n, *_ in catalog)
        query = f"SELECT {casts} FROM zoo ORDER BY zoo.id"  # noqa: S608
        cast_source = pg.execute(query).fetchall()  # type: ignore[arg-type]
    columns = tuple(
        Column(
            name=n,
            type_oid=oid,
            typmod=mod,
            type_name=tn,
            category=cat,
            element=el,
            base=base,
            in_identity=(n == "id"),
        )
        for n, oid, mod, tn, cat, el, base in catalog
    )
    zoo = Relation(oid=99, schema="public", name="zoo", replident="d", columns=columns, key=("id",))
    w = Warehouse(tmp_path / "zoo.duckdb")
    try:
        w.apply([SchemaChange(zoo)], [RowChange("insert", 99, tuple(r)) for r in source])
        got = sorted(
            fetch_text_rows(w.view.connection, zoo, w.view.table_types(99), cast=False),
            key=lambda r: int(r[0] or 0),
        )
        types = dict(w.rows("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'zoo'"))
        mismatches = [
            (columns[j].name, types[columns[j].name], src[j], dst[j])
            for src, dst in zip(source, got, strict=True)
            for j in range(len(columns))
            if src[j] != dst[j]
        ]
        assert mismatches == []
        # the default renders what `col::text` prints (boolean, char(n), inet differ)
        got_cast = sorted(fetch_text_rows(w.view.connection, zoo), key=lambda r: int(r[0] or 0))
        assert got_cast == [tuple(r) for r in cast_source]
        assert cast_source != source
        # Iceberg: a timestamp column holding infinity becomes PostgreSQL's text
        tstz = "VARCHAR" if KIND == "iceberg" else "TIMESTAMP WITH TIME ZONE"
        assert types["n_fix"] == "DECIMAL(10,2)" and types["tstz"] == tstz
        assert types["arr2"] == "INTEGER[][]" and types["arr3"] == "VARCHAR[][][]"
        # DuckLake: intervals as PostgreSQL's text (Parquet's INTERVAL holds neither negative
        # parts nor microseconds)
        assert types["iv"] == ("VARCHAR" if KIND in ("ducklake", "iceberg") else "INTERVAL")
        assert types["by"] == "BLOB" and types["u"] == "UUID"
        # updates of every row (values moved between rows) round-trip too
        shifted = [tuple([r[0], *source[(i + 1) % len(source)][1:]]) for i, r in enumerate(source)]
        w.apply([RowChange("update", 99, s) for s in shifted])
        got2 = sorted(fetch_text_rows(w.view.connection, zoo, cast=False), key=lambda r: int(r[0] or 0))
        assert got2 == shifted
    finally:
        w.view.close()


def test_float_text_matches_postgres(cluster: PgCluster) -> None:
    import random
    import struct

    rnd = random.Random(7)
    doubles = [struct.unpack("d", rnd.randbytes(8))[0] for _ in range(3000)]
    doubles += [10.0**e for e in range(-20, 25)] + [1.5 * 10.0**e for e in range(-8, 20)]
    doubles = [d for d in doubles if d == d and abs(d) != float("inf")]
    floats = [struct.unpack("f", rnd.randbytes(4))[0] for _ in range(3000)]
    floats += [float(struct.unpack("f", struct.pack("f", 10.0**e))[0]) for e in range(-10, 12)]
    floats = [f for f in floats if f == f and abs(f) != float("inf")]
    with psycopg.connect(cluster.dsn(), autocommit=True) as pg:
        d_out = pg.execute(
            "SELECT x::float8::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, i) ORDER BY i",
            [[repr(d) for d in doubles]],
        ).fetchall()
        f_out = pg.execute(
            "SELECT x::float4::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, i) ORDER BY i",
            [[repr(f) for f in floats]],
        ).fetchall()
    assert [pg_float8(d) for d in doubles] == [r[0] for r in d_out]
    assert [pg_float4(f) for f in floats] == [r[0] for r in f_out]


def test_nan_in_constrained_numeric_turns_the_column_into_text(
    wh: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    t = rel(
        60,
        "nums",
        col("id", "integer", True),
        col("n", "numeric(10,2)"),
        col("u", "numeric"),
        col("s", "numeric(3,3)"),
    )
    wh.apply(
        [SchemaChange(t)],
        [
            ins(t, "1", "-0.50", "NaN", "-0.100"),
            ins(t, "2", "1.25", "Infinity", "0.001"),
            ins(t, "3", None, None, None),
        ],
    )
    assert _type(wh, "nums", "n") == "DECIMAL(10,2)"
    with caplog.at_level("WARNING"):
        wh.apply([ins(t, "4", "NaN", "1", "NaN")])
    assert _type(wh, "nums", "n") == "VARCHAR" and _type(wh, "nums", "s") == "VARCHAR"
    assert "NaN cannot be stored in DECIMAL" in caplog.text
    expected = [
        ("1", "-0.50", "NaN", "-0.100"),
        ("2", "1.25", "Infinity", "0.001"),
        ("3", None, None, None),
        ("4", "NaN", "1", "NaN"),
    ]
    assert _text_rows(wh, t) == expected
    # a later type change of the source column keeps the text (and NaN)
    wider = rel(
        60,
        "nums",
        col("id", "integer", True),
        col("n", "numeric(12,3)"),
        col("u", "numeric"),
        col("s", "numeric(3,3)"),
    )
    wh.apply([SchemaChange(wider)], [ins(wider, "5", "2.000", "2", "0.200")])
    assert _type(wh, "nums", "n") == "VARCHAR"
    assert [r[1] for r in _text_rows(wh, wider)] == ["-0.500", "1.250", None, "NaN", "2.000"]
