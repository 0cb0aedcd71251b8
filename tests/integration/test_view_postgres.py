"""The postgres view against a real PostgreSQL server (private cluster, no mocks)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Item,
    Relation,
    RowChange,
    SchemaChange,
    Truncate,
    UserType,
    Value,
)
from syncline.testing.pgcluster import PgCluster, running_cluster
from syncline.testing.scripted import ScriptedBatches
from syncline.views.base import Batch
from syncline.views.postgres import create_view
from syncline.views.postgres.view import PostgresView

_dbs = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


@pytest.fixture()
def dsn(cluster: PgCluster) -> str:
    name = f"replica_{next(_dbs)}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn(name)


def make_view(dsn: str, tables: tuple[str, ...] = (), name: str = "replica") -> PostgresView:
    return create_view(ViewConfig(name=name, kind="postgres", tables=tables, options={"dsn": Secret(dsn)}))


class Replica(ScriptedBatches):
    """A view plus a hand-driven stream: seq numbers, batches and queries."""

    def __init__(self, dsn: str, tables: tuple[str, ...] = ()) -> None:
        self.dsn = dsn
        self.view = make_view(dsn, tables)
        self.checkpoint = self.view.open()
        self.seq = self.checkpoint.seq
        self.relations: dict[int, Relation] = dict(self.view.relations())

    def apply(self, *groups: list[Item]) -> Batch:
        """Apply one batch of transactions, each given as a list of items."""
        b = self.batch(*(self.txn(*g) for g in groups))
        self.view.apply(b)
        return b

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("SET TimeZone = 'UTC'")
            return c.execute(query, params).fetchall()  # type: ignore[arg-type]

    def table(self, qualified: str, order: str = "1") -> list[tuple[Any, ...]]:
        return self.rows(f"SELECT * FROM {qualified} ORDER BY {order}")  # noqa: S608


@pytest.fixture()
def replica(dsn: str) -> Iterator[Replica]:
    r = Replica(dsn)
    yield r
    r.view.close()


def col(name: str, type_name: str = "text", ident: bool = False) -> Column:
    base = type_name
    return Column(name=name, type_oid=0, typmod=-1, type_name=type_name, base=base, in_identity=ident)


def rel(
    oid: int,
    name: str,
    cols: list[tuple[str, str]],
    key: tuple[str, ...] = ("id",),
    schema: str = "public",
    user_types: tuple[UserType, ...] = (),
) -> Relation:
    return Relation(
        oid=oid,
        schema=schema,
        name=name,
        replident="d",
        columns=tuple(col(n, t, n in key) for n, t in cols),
        key=key,
        user_types=user_types,
    )


def ins(r: Relation, *vals: Value) -> RowChange:
    return RowChange("insert", r.oid, tuple(vals))


def upd(r: Relation, *vals: Value, old: tuple[Value, ...] | None = None) -> RowChange:
    return RowChange("update", r.oid, tuple(vals), old)


def dele(r: Relation, *key: Value) -> RowChange:
    kidx = r.key_indexes()
    old: list[Value] = [None] * len(r.columns)
    for i, v in zip(kidx, key, strict=True):
        old[i] = v
    return RowChange("delete", r.oid, None, tuple(old))


ITEMS = rel(16400, "items", [("id", "integer"), ("name", "text"), ("qty", "numeric(10,2)")])


# Row counts exercising the parameterised path (few rows) and the COPY staging path.
SIZES = [3, 40]


def test_create_table_from_relation(replica: Replica) -> None:
    replica.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "apple", "1.50")])
    cols = replica.rows(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'public.items'::regclass AND attnum > 0 ORDER BY attnum"
    )
    assert cols == [("id", "integer"), ("name", "text"), ("qty", "numeric(10,2)")]
    pk = replica.rows(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'public.items'::regclass"
        " AND i.indisprimary"
    )
    assert pk == [("id",)]
    assert replica.rows("SELECT id, name, qty::text FROM items") == [(1, "apple", "1.50")]
    assert replica.view.read_checkpoint() == Checkpoint(1, 1000)
    assert replica.view.count_rows("public.items") == 1


@pytest.mark.parametrize("n", SIZES)
def test_insert_update_delete(replica: Replica, n: int) -> None:
    replica.apply([SchemaChange(ITEMS)])
    replica.apply([ins(ITEMS, str(i), f"n{i}", f"{i}.00") for i in range(n)])
    assert replica.view.count_rows("public.items") == n
    replica.apply(
        [upd(ITEMS, str(i), f"u{i}", None) for i in range(0, n, 2)],
        [dele(ITEMS, str(i)) for i in range(1, n, 2)],
    )
    assert replica.rows("SELECT id, name, qty FROM items ORDER BY id") == [
        (i, f"u{i}", None) for i in range(0, n, 2)
    ]


@pytest.mark.parametrize("n", SIZES)
def test_net_effect_in_one_batch(replica: Replica, n: int) -> None:
    replica.apply([SchemaChange(ITEMS), *(ins(ITEMS, str(i), "old", "1") for i in range(n))])
    replica.apply(
        [*(ins(ITEMS, str(i), "a", "1") for i in range(n, 2 * n))],
        [*(upd(ITEMS, str(i), "b", "2") for i in range(2 * n))],
        [*(dele(ITEMS, str(i)) for i in range(2 * n))],
        [*(ins(ITEMS, str(i), "c", "3") for i in range(0, 2 * n, 3))],
    )
    assert replica.rows("SELECT id, name, qty::text FROM items ORDER BY id") == [
        (i, "c", "3.00") for i in range(0, 2 * n, 3)
    ]


@pytest.mark.parametrize("n", SIZES)
def test_primary_key_update(replica: Replica, n: int) -> None:
    replica.apply([SchemaChange(ITEMS), *(ins(ITEMS, str(i), f"n{i}", "1") for i in range(n))])
    # Shift every key by +1000 (old key sent as identity), in one batch.
    replica.apply([upd(ITEMS, str(i + 1000), f"n{i}", "2", old=(str(i), None, None)) for i in range(n)])
    assert replica.rows("SELECT id, name, qty::text FROM items ORDER BY id") == [
        (i + 1000, f"n{i}", "2.00") for i in range(n)
    ]


BLOBS = rel(16500, "blobs", [("id", "integer"), ("body", "text"), ("meta", "jsonb")])


@pytest.mark.parametrize("n", SIZES)
def test_unchanged_toast_keeps_stored_value(replica: Replica, n: int) -> None:
    big = "x" * 5000
    replica.apply([SchemaChange(BLOBS), *(ins(BLOBS, str(i), f"{big}{i}", '{"a": 1}') for i in range(n))])
    # Same key: body unchanged; next batch: key moves and body unchanged.
    replica.apply([upd(BLOBS, str(i), UNCHANGED, f'{{"v": {i}}}') for i in range(n)])
    replica.apply(
        [upd(BLOBS, str(i + 100), UNCHANGED, UNCHANGED, old=(str(i), None, None)) for i in range(n)]
    )
    assert replica.rows("SELECT id, body, meta::text FROM blobs ORDER BY id") == [
        (i + 100, f"{big}{i}", f'{{"v": {i}}}') for i in range(n)
    ]


def test_unchanged_with_key_swap_and_mixed_masks(replica: Replica) -> None:
    replica.apply([SchemaChange(BLOBS), ins(BLOBS, "1", "body1", '"m1"'), ins(BLOBS, "2", "body2", '"m2"')])
    # Swap keys 1 and 2 via 3, with different unchanged columns in each row.
    replica.apply(
        [upd(BLOBS, "3", UNCHANGED, '"n1"', old=("1", None, None))],
        [upd(BLOBS, "1", "B2", UNCHANGED, old=("2", None, None))],
        [upd(BLOBS, "2", UNCHANGED, UNCHANGED, old=("3", None, None))],
    )
    assert replica.table("blobs") == [(1, "B2", "m2"), (2, "body1", "n1")]


def test_truncate(replica: Replica) -> None:
    other = rel(16401, "other", [("id", "integer")])
    replica.apply([SchemaChange(ITEMS), SchemaChange(other), ins(ITEMS, "1", "a", "1"), ins(other, "5")])
    replica.apply(
        [ins(ITEMS, "2", "b", "1")],
        [Truncate((ITEMS.oid,), restart_identity=True)],
        [ins(ITEMS, "3", "c", "1")],
    )
    assert replica.rows("SELECT id FROM items") == [(3,)]
    assert replica.rows("SELECT id FROM other") == [(5,)]


def test_schema_changes(replica: Replica) -> None:
    v1 = rel(16600, "evolve", [("id", "integer"), ("a", "text"), ("b", "text")])
    replica.apply([SchemaChange(v1), ins(v1, "1", "a1", "42")])
    # rename b -> c (same position, same type)
    v2 = rel(16600, "evolve", [("id", "integer"), ("a", "text"), ("c", "text")])
    replica.apply([SchemaChange(v2), ins(v2, "2", "a2", "7")])
    assert replica.table("evolve") == [(1, "a1", "42"), (2, "a2", "7")]
    # add d, drop a, alter c to integer
    v3 = rel(16600, "evolve", [("id", "integer"), ("c", "integer"), ("d", "date")])
    replica.apply([SchemaChange(v3), ins(v3, "3", "9", "2024-02-29")])
    cols = replica.rows(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'public.evolve'::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum"
    )
    assert cols == [("id", "integer"), ("c", "integer"), ("d", "date")]
    assert replica.rows("SELECT id, c, d::text FROM evolve ORDER BY id") == [
        (1, 42, None),
        (2, 7, None),
        (3, 9, "2024-02-29"),
    ]
    # The stored shape survives a restart.
    replica.view.close()
    again = make_view(replica.dsn)
    assert again.open() == Checkpoint(3, 3000)
    assert again.relations() == {16600: v3}
    again.close()


def test_primary_key_change_and_table_rename(replica: Replica) -> None:
    v1 = rel(16700, "t1", [("id", "integer"), ("k", "text")])
    replica.apply([SchemaChange(v1), ins(v1, "1", "x"), ins(v1, "2", "y")])
    v2 = rel(16700, "t2", [("id", "integer"), ("k", "text")], key=("k",), schema="s2")
    replica.apply([SchemaChange(v2), upd(v2, "1", "z", old=(None, "x"))])
    assert replica.rows("SELECT to_regclass('public.t1') IS NULL")[0] == (True,)
    assert replica.table("s2.t2") == [(1, "z"), (2, "y")]
    pk = replica.rows(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 's2.t2'::regclass AND i.indisprimary"
    )
    assert pk == [("k",)]


def test_dropped_and_recreated_table(replica: Replica) -> None:
    old = rel(16800, "thing", [("id", "integer"), ("a", "text")])
    replica.apply([SchemaChange(old), ins(old, "1", "a")])
    new = rel(16801, "thing", [("id", "text"), ("b", "integer")])
    replica.apply([SchemaChange(new), ins(new, "x", "5")])
    assert replica.table("thing") == [("x", 5)]
    assert set(replica.view.relations()) == {16801}


def test_user_types(replica: Replica) -> None:
    mood = UserType("app", "mood", "e", labels=("sad", "ok", "happy"))
    pos = UserType("app", "pos", "c", attributes=(("x", "integer"), ("label", "app.mood")))
    pct = UserType("app", "pct", "d", base="numeric(5,2)")
    fr = UserType("app", "floatrange", "r", base="double precision")
    t = rel(
        16900,
        "typed",
        [
            ("id", "integer"),
            ("m", "app.mood"),
            ("ms", "app.mood[]"),
            ("p", "app.pos"),
            ("pc", "app.pct"),
            ("r", "app.floatrange"),
        ],
        user_types=(mood, pos, pct, fr),
    )
    replica.apply([SchemaChange(t), ins(t, "1", "happy", "{sad,ok}", "(3,ok)", "12.50", "[1.5,2.5)")])
    assert replica.rows("SELECT m::text, ms::text, p::text, pc::text, r::text FROM typed") == [
        ("happy", "{sad,ok}", "(3,ok)", "12.50", "[1.5,2.5)")
    ]
    # A label added at the source is added (in order) and usable in the same batch.
    mood2 = UserType("app", "mood", "e", labels=("sad", "meh", "ok", "happy"))
    t2 = rel(16900, "typed", [(c.name, c.type_name) for c in t.columns], user_types=(mood2,))
    t2 = Relation(t2.oid, "public", "typed", "d", t2.columns, t2.key, (mood2, pos, pct, fr))
    replica.apply([SchemaChange(t2), upd(t2, "1", "meh", "{meh}", "(4,meh)", None, None)])
    assert replica.rows("SELECT m::text, ms::text, p::text FROM typed") == [("meh", "{meh}", "(4,meh)")]
    labels = replica.rows("SELECT enum_range(NULL::app.mood)::text")
    assert labels == [("{sad,meh,ok,happy}",)]


def test_reapply_is_skipped(replica: Replica) -> None:
    b1 = replica.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1")])
    b2 = replica.apply([dele(ITEMS, "1"), ins(ITEMS, "2", "b", "1")])
    replica.view.apply(b1)
    replica.view.apply(b2)
    # A fresh view instance (no in-memory checkpoint) also skips via the stored checkpoint.
    other = make_view(replica.dsn)
    other._conn = other._connect()  # not opened: relies on the row lock + stored seq only
    other.apply(b1)
    other.close()
    assert replica.table("items") == [(2, "b", 1)]
    assert replica.view.read_checkpoint() == b2.checkpoint


def test_failure_leaves_data_and_checkpoint_unchanged(replica: Replica) -> None:
    other = rel(16450, "other", [("id", "integer"), ("n", "integer")])
    replica.apply([SchemaChange(ITEMS), SchemaChange(other), ins(ITEMS, "1", "a", "1")])
    before = replica.view.read_checkpoint()
    newt = rel(16451, "created_then_rolled_back", [("id", "integer")])
    b = replica.batch(
        replica.txn(*(ins(ITEMS, str(i), "c", "3") for i in range(2, 50))),
        replica.txn(upd(ITEMS, "1", "changed", "1"), dele(ITEMS, "2")),
        replica.txn(Truncate((other.oid,)), SchemaChange(newt), ins(newt, "1")),
        replica.txn(ins(other, "1", "1"), ins(other, "2", "not a number")),
    )
    with pytest.raises(ViewError) as exc:
        replica.view.apply(b)
    msg = str(exc.value)
    assert not isinstance(exc.value, TransientViewError)
    assert "public.other" in msg and "replica" in msg and "seq 5" in msg, msg
    assert replica.table("items") == [(1, "a", 1)]
    assert replica.rows("SELECT to_regclass('public.created_then_rolled_back')") == [(None,)]
    assert replica.view.read_checkpoint() == before
    assert replica.view.relations() == {ITEMS.oid: ITEMS, other.oid: other}
    # The view keeps working after the failure.
    replica.relations = replica.view.relations()
    replica.apply([ins(ITEMS, "5", "e", "5")])
    assert replica.table("items") == [(1, "a", 1), (5, "e", 5)]


def test_mixed_new_and_existing_keys_in_large_batches(replica: Replica) -> None:
    other = rel(16460, "other", [("id", "integer"), ("v", "text")])
    replica.apply([SchemaChange(ITEMS), SchemaChange(other)])
    for round_ in range(4):
        # Inserts of new keys plus updates of existing ones: the direct COPY attempt meets
        # existing keys and falls back to staging without losing earlier work of the batch.
        replica.apply(
            [ins(other, str(i), f"r{round_}") for i in range(100 * round_, 100 * round_ + 30)],
            [ins(ITEMS, str(i), f"r{round_}", "1") for i in range(100 * round_, 100 * round_ + 30)],
            [upd(ITEMS, str(i), f"r{round_}", "2") for i in range(0, 100 * round_, 100)],
        )
    assert replica.rows("SELECT count(*), count(*) FILTER (WHERE name = 'r3') FROM items") == [(120, 33)]
    assert replica.rows("SELECT count(*) FROM other") == [(120,)]


def test_connection_failure_is_transient_and_secret_free(cluster: PgCluster) -> None:
    from syncline.testing.pgcluster import free_port

    dsn = f"postgresql://someone:hunter2secret@127.0.0.1:{free_port()}/nowhere"
    view = make_view(dsn)
    with pytest.raises(TransientViewError) as exc:
        view.open()
    assert "hunter2secret" not in str(exc.value)
    assert dsn not in str(exc.value)


def test_table_selection(dsn: str) -> None:
    r = Replica(dsn, tables=("public.it*",))
    other = rel(17000, "other", [("id", "integer")])
    r.apply([SchemaChange(ITEMS), SchemaChange(other), ins(ITEMS, "1", "a", "1"), ins(other, "1")])
    assert r.rows("SELECT to_regclass('public.other') IS NULL") == [(True,)]
    assert r.table("items") == [(1, "a", 1)]
    assert set(r.view.relations()) == {ITEMS.oid}
    r.view.close()


def test_composite_key_and_key_only_table(replica: Replica) -> None:
    t = rel(17100, "pairs", [("a", "text"), ("b", "integer"), ("v", "text")], key=("a", "b"))
    k = rel(17101, "tags", [("tag", "text")], key=("tag",))
    replica.apply(
        [SchemaChange(t), SchemaChange(k)],
        [*(ins(t, f"k{i % 3}", str(i), "v") for i in range(30)), ins(k, "x"), ins(k, "y")],
    )
    replica.apply([*(dele(t, f"k{i % 3}", str(i)) for i in range(0, 30, 2)), ins(k, "x"), dele(k, "y")])
    assert replica.rows("SELECT count(*) FROM pairs") == [(15,)]
    assert replica.table("tags") == [("x",)]


# Type zoo: (type, source value). The expected text is what the source prints for it.
ZOO: list[tuple[str, str]] = [
    ("numeric", "1" + "2" * 999 + ".5"),
    ("numeric", "NaN"),
    ("numeric", "Infinity"),
    ("numeric", "-Infinity"),
    ("double precision", "-0"),
    ("double precision", "NaN"),
    ("double precision", "1.7976931348623157e+308"),
    ("real", "3.4028235e+38"),
    ("timestamp with time zone", "infinity"),
    ("timestamp with time zone", "2024-03-10 02:30:00.123456-03:30"),
    ("timestamp without time zone", "-infinity"),
    ("date", "0044-03-15 BC"),
    ("timestamp without time zone", "4713-01-01 00:00:00 BC"),
    ("time with time zone", "23:59:59.999999+14:59"),
    ("interval", "1 year 2 mons -3 days 04:05:06.789"),
    ("interval", "-178000000 years"),
    ("integer[]", "{{1,NULL},{3,4}}"),
    ("text[]", '{{"a b",NULL},{"\\"q\\"","NULL"}}'),
    ("integer[]", "[0:1]={7,8}"),
    ("json", '{"a" : 1,   "a": [1, 2 ]}'),
    ("jsonb", '{"a" : 1,   "a": [1, 2 ]}'),
    ("bytea", "\\x00ff5c0a"),
    ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("inet", "192.168.0.1/24"),
    ("cidr", "::ffff:1.2.3.0/120"),
    ("int4range", "[3,7)"),
    ("int4range", "empty"),
    ("tstzrange", '["2020-01-01 00:00:00+00",infinity)'),
    ("text", "tab\there\nnewline \\ backslash ünïcødé"),
    ("character(5)", "ab"),
    ("bit varying(8)", "1011"),
    ("boolean", "f"),
    ("bigint", "-9223372036854775808"),
    ("money", "$1,234.56"),
    ("xml", "<a>x</a>"),
    ("point", "(1.5,-2)"),
    ("tsvector", "'a' 'fat':2"),
    ('"char"', "x"),
]


def test_type_zoo_round_trip(replica: Replica, cluster: PgCluster) -> None:
    # What the source prints for each value (session in UTC, default output settings).
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        texts = [
            c.execute(f"SELECT %s::{typ}::text", (val,)).fetchone()[0]  # type: ignore[index]
            for typ, val in ZOO
        ]
    cols = [("id", "integer"), *((f"c{i}", typ) for i, (typ, _) in enumerate(ZOO))]
    t = rel(17200, "zoo", cols)
    nulls = [None] * len(ZOO)
    # Row 1 through the parameterised path, rows 100.. through COPY staging.
    replica.apply(
        [SchemaChange(t), ins(t, "1", *texts), ins(t, "2", *nulls)],
    )
    replica.apply([ins(t, str(100 + i), *texts) for i in range(20)])
    select = ", ".join(f"c{i}::text" for i in range(len(ZOO)))
    got = replica.rows(f"SELECT {select} FROM zoo WHERE id = 1")[0]  # noqa: S608
    for (typ, _), want, have in zip(ZOO, texts, got, strict=True):
        assert have == want, typ
    assert replica.rows(f"SELECT {select} FROM zoo WHERE id = 2")[0] == tuple(nulls)  # noqa: S608
    staged = replica.rows(f"SELECT DISTINCT {select} FROM zoo WHERE id >= 100")  # noqa: S608
    assert staged == [tuple(texts)]
    # json keeps whitespace and duplicate keys, jsonb normalises.
    assert texts[ZOO.index(("json", '{"a" : 1,   "a": [1, 2 ]}'))] == '{"a" : 1,   "a": [1, 2 ]}'


def test_lost_connection_is_transient_then_recovers(replica: Replica, cluster: PgCluster) -> None:
    replica.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1")])
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'syncline-replica' AND datname = %s",
            (replica.dsn.rsplit("/", 1)[1],),
        )
    b = replica.batch(replica.txn(ins(ITEMS, "2", "b", "2")))
    with pytest.raises(TransientViewError):
        replica.view.apply(b)
    replica.view.apply(b)  # reconnects
    assert replica.table("items") == [(1, "a", 1), (2, "b", 2)]
    assert replica.view.read_checkpoint() == b.checkpoint


def test_batches_inside_one_source_transaction(replica: Replica) -> None:
    """``commit=False`` batches continue one target transaction until the committing one."""
    replica.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1")])
    start = replica.view.read_checkpoint()
    relations = dict(replica.relations)
    wide = rel(16400, "items", [*((c.name, c.type_name) for c in ITEMS.columns), ("x", "text")])

    def part(*items: Item, last: bool) -> Batch:
        t = replica.txn(*items)
        t.last = last
        return Batch([t], relations, Checkpoint(t.seq, t.commit_lsn), commit=last)

    replica.view.apply(part(*(ins(ITEMS, str(i), "p1", "1") for i in range(2, 40)), last=False))
    assert replica.table("items") == [(1, "a", 1)]  # nothing visible yet
    replica.view.apply(part(SchemaChange(wide), upd(wide, "1", "p2", "2", "x"), last=False))
    assert relations[16400] == wide  # advanced in place for the next batch
    replica.view.apply(
        part(upd(wide, "2", UNCHANGED, "3", "y"), dele(wide, "3"), ins(wide, "99", "p3", "4", "z"), last=True)
    )
    assert replica.view.read_checkpoint() == Checkpoint(replica.seq, replica.seq * 1000)
    rows = replica.table("items")
    assert len(rows) == 39 and rows[0] == (1, "p2", 2, "x") and rows[1] == (2, "p1", 3, "y")
    assert rows[-1] == (99, "p3", 4, "z")
    assert replica.view.relations()[16400] == wide

    # A failure in the committing part rolls back every part.
    replica.relations = dict(relations)
    relations2 = dict(relations)
    committed = replica.view.read_checkpoint()
    t1 = replica.txn(ins(wide, "500", "q", "1", None))
    t1.last = False
    replica.view.apply(Batch([t1], relations2, Checkpoint(t1.seq, t1.commit_lsn), commit=False))
    t2 = replica.txn(ins(wide, "501", "q", "bad", None))
    with pytest.raises(ViewError):
        replica.view.apply(Batch([t2], relations2, Checkpoint(t2.seq, t2.commit_lsn)))
    assert replica.view.read_checkpoint() == committed != start
    assert replica.rows("SELECT count(*) FROM items WHERE id >= 500") == [(0,)]
