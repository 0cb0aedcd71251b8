"""The Redis view against a private redis-server (and a real PostgreSQL for ``::text``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Item,
    Relation,
    SchemaChange,
    Truncate,
)
from syncline.testing.harness import RedisServer
from syncline.testing.pgcluster import PgCluster
from syncline.testing.scripted import ScriptedBatches, dele, ins, upd
from syncline.views.base import Batch
from syncline.views.redis import create_view
from syncline.views.redis.view import RedisView

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path_factory.mktemp("redis"), start=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def make_view(url: str, name: str = "cache", **options: Any) -> RedisView:
    return create_view(ViewConfig(name=name, kind="redis", options={"url": Secret(url), **options}))


class Cache(ScriptedBatches):
    def __init__(self, server: RedisServer, name: str = "cache", **options: Any) -> None:
        super().__init__()
        self.server = server
        self.name = name
        self.options = options
        self.view = make_view(server.url, name, **options)
        self.checkpoint = self.view.open()
        self.seq = self.checkpoint.seq
        self.relations = dict(self.view.relations())
        self.r = redis.Redis.from_url(server.url, decode_responses=True)

    def apply(self, *groups: Sequence[Item], commit: bool = True) -> Batch:
        b = self.batch(*(self.txn(*g) for g in groups), commit=commit)
        self.view.apply(b)
        return b

    def h(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.r.hgetall(key).items()}


@pytest.fixture()
def cache(server: RedisServer) -> Iterator[Cache]:
    redis.Redis.from_url(server.url).flushall()
    c = Cache(server)
    yield c
    c.view.close()


def col(name: str, type_name: str = "text", **kw: Any) -> Column:
    return Column(name=name, type_oid=0, typmod=-1, type_name=type_name, base=type_name, **kw)


def rel(
    oid: int, name: str, *cols: Column, key: tuple[str, ...] = ("id",), schema: str = "public"
) -> Relation:
    return Relation(oid=oid, schema=schema, name=name, replident="d", columns=cols, key=key)


ITEMS = rel(10, "items", col("id", "integer"), col("name"), col("price", "numeric(10,2)"), col("note"))
OTHER = rel(11, "other", col("id", "integer"), col("v"))
PAIR = rel(12, "pair", col("a", "integer"), col("b"), col("v"), key=("a", "b"), schema="s")


# ------------------------------------------------------------------ basics


def test_insert_update_delete(cache: Cache) -> None:
    cache.apply(
        [SchemaChange(ITEMS)], [ins(ITEMS, "1", "a", "1.50", None), ins(ITEMS, "2", "b", "2.00", "x")]
    )
    assert cache.h("public.items:1") == {"id": "1", "name": "a", "price": "1.50"}  # NULL: absent
    assert cache.h("public.items:2") == {"id": "2", "name": "b", "price": "2.00", "note": "x"}
    cache.apply([upd(ITEMS, "2", "B", "3.00", None)], [dele(ITEMS, "1")])
    assert not cache.r.exists("public.items:1")
    assert cache.h("public.items:2") == {"id": "2", "name": "B", "price": "3.00"}  # note now NULL
    assert cache.view.count_rows("public.items") == 1
    assert cache.view.read_checkpoint() == Checkpoint(cache.seq, cache.seq * 1000)
    assert cache.h("_syncline:position:cache") == {
        "seq": str(cache.seq),
        "commit_lsn": str(cache.seq * 1000),
        "log_id": "",  # scripted batches name no log
    }
    # reopen: checkpoint and relations survive
    v2 = make_view(cache.server.url)
    assert v2.open() == Checkpoint(cache.seq, cache.seq * 1000)
    assert v2.relations() == {10: ITEMS}
    v2.close()


def test_composite_key_and_template(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()
    c = Cache(server, key="cache:{schema}/{name}/{pk}")
    try:
        c.apply([SchemaChange(PAIR), ins(PAIR, "1", "x:y", "v")])
        # a colon inside a column of a key of several is escaped (interface.md)
        assert c.h("cache:s/pair/1:x\\:y") == {"a": "1", "b": "x:y", "v": "v"}
        c.apply([Truncate((PAIR.oid,))])
        assert c.r.keys("cache:*") == []
    finally:
        c.view.close()


def test_bad_template_is_config_error() -> None:
    for bad in ("{table}:{id}", "{table}", "{pk!r}", "{pk:>3}", "{pk"):
        with pytest.raises(ConfigError, match=r"'cache'.*key"):
            make_view("redis://127.0.0.1:1/0", key=bad)


def test_columns_subset(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()
    c = Cache(server, columns=["name", "note"])
    try:
        c.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.50", "n")])
        assert c.h("public.items:1") == {"name": "a", "note": "n"}
    finally:
        c.view.close()


# ------------------------------------------------------------------ TOAST partial rows


def test_partial_keeps_cached_field(cache: Cache) -> None:
    cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", "big")])
    cache.apply([upd(ITEMS, "1", "b", None, UNCHANGED)])
    assert cache.h("public.items:1") == {"id": "1", "name": "b", "note": "big"}


def test_partial_with_primary_key_move(cache: Cache) -> None:
    cache.apply(
        [SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", "big"), ins(ITEMS, "2", "z", "2.00", "big2")]
    )
    old = ("1", None, None, None)
    cache.apply([upd(ITEMS, "5", "moved", "1.00", UNCHANGED, old=old)])
    assert not cache.r.exists("public.items:1")
    assert cache.h("public.items:5") == {"id": "5", "name": "moved", "price": "1.00", "note": "big"}
    # swap-like chain inside one batch: 2 -> 1, 5 -> 2 (both partial)
    cache.apply(
        [upd(ITEMS, "1", "from2", "2.00", UNCHANGED, old=("2", None, None, None))],
        [upd(ITEMS, "2", "from5", "1.00", UNCHANGED, old=("5", None, None, None))],
    )
    assert cache.h("public.items:1")["note"] == "big2"
    assert cache.h("public.items:2")["note"] == "big"
    assert not cache.r.exists("public.items:5")
    assert sorted(cache.r.smembers("_syncline:keys:cache:public.items")) == [
        "public.items:1",
        "public.items:2",
    ]
    assert not cache.r.keys("_syncline:scratch:*")


# ------------------------------------------------------------------ truncate, modes, ttl


def test_truncate_removes_only_that_table(cache: Cache) -> None:
    cache.apply(
        [SchemaChange(ITEMS), SchemaChange(OTHER)],
        [ins(ITEMS, str(i), "n", "1.00", None) for i in range(1200)] + [ins(OTHER, "1", "keep")],
    )
    assert cache.view.count_rows("public.items") == 1200
    # a truncate after rows inserted in the same batch removes those too
    cache.apply(
        [ins(ITEMS, "5000", "n", "1.00", None)],
        [Truncate((ITEMS.oid,))],
        [ins(ITEMS, "7", "after", None, None)],
    )
    assert cache.r.keys("public.items:*") == ["public.items:7"]
    assert cache.h("public.other:1") == {"id": "1", "v": "keep"}
    assert cache.view.count_rows("public.items") == 1


def test_invalidate_mode(server: RedisServer) -> None:
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.flushall()
    c = Cache(server, mode="invalidate")
    try:
        c.apply([SchemaChange(ITEMS), SchemaChange(OTHER)])
        r.set("public.items:1", "cached by the app")
        r.set("public.items:2", "cached")
        r.set("public.items:3", "cached")
        r.set("public.other:1", "cached")
        c.apply([upd(ITEMS, "1", "a", None, None)], [dele(ITEMS, "2")])
        assert r.keys("public.items:*") == ["public.items:3"]
        assert not r.exists("public.items:1")
        c.apply([Truncate((ITEMS.oid,))])
        assert r.keys("public.*") == ["public.other:1"]
    finally:
        c.view.close()


def test_invalidate_mode_unlinks_the_cached_keys_of_a_renamed_table_or_schema(server: RedisServer) -> None:
    """A rename in mode ``invalidate``: what the application cached under the old name goes
    (a new table under that name must not find the old table's rows), other tables' stay."""
    r = redis.Redis.from_url(server.url, decode_responses=True)
    r.flushall()
    c = Cache(server, mode="invalidate")
    try:
        c.apply([SchemaChange(ITEMS), SchemaChange(OTHER), SchemaChange(PAIR)])
        for k in ("public.items:1", "public.items:2", "public.other:1", "public.items2:9", "s.pair:1:x"):
            r.set(k, "cached by the app")
        c.apply([SchemaChange(replace(ITEMS, name="items2"))])
        assert sorted(r.keys("*.*")) == ["public.items2:9", "public.other:1", "s.pair:1:x"]
        c.apply([SchemaChange(replace(PAIR, schema="s2"))])
        assert sorted(r.keys("*.*")) == ["public.items2:9", "public.other:1"]
    finally:
        c.view.close()


def test_ttl(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()
    c = Cache(server, ttl=100)
    try:
        c.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", "x")])
        assert 0 < c.r.ttl("public.items:1") <= 100
        c.apply([upd(ITEMS, "1", "b", None, UNCHANGED)])
        assert 0 < c.r.ttl("public.items:1") <= 100
        assert c.r.ttl("_syncline:position:cache") == -1
    finally:
        c.view.close()


# ------------------------------------------------------------------ atomicity, restarts, errors


def test_value_above_the_server_limit(cache: Cache) -> None:
    """A value above Redis's proto-max-bulk-len (read from the server): the view stops at the
    batch before, naming table and key; with on_error = "skip" the row is skipped, counted."""
    cache.r.config_set("proto-max-bulk-len", 1024 * 1024)  # the smallest Redis allows
    try:
        cache.view.close()
        cache.view.open()  # reads the limit
        cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", None)])
        before = cache.view.read_checkpoint()
        big = "é" * (600 * 1024)  # 1.2 MB in UTF-8 (600k characters)
        with pytest.raises(
            ViewError, match=r"'cache'.*public\.items key public\.items:3.*note.*exceeds"
        ) as ei:
            cache.apply(
                [ins(ITEMS, "2", "ok", None, None), upd(ITEMS, "1", "changed", None, None)],
                [ins(ITEMS, "3", "x", None, big)],
            )
        assert not isinstance(ei.value, TransientViewError)
        assert "stored checkpoint seq" in str(ei.value)
        assert cache.view.read_checkpoint() == before
        assert not cache.r.exists("public.items:2")
        assert cache.h("public.items:1")["name"] == "a"
        # the same batch with on_error = "skip": the row's key is deleted, the row counted
        cache.r.hset("public.items:3", "stale", "x")
        skip = make_view(cache.server.url, on_error="skip")
        skip.open()
        b = ScriptedBatches(cache.seq, {10: ITEMS})
        t = b.txn(ins(ITEMS, "2", "ok", None, None), ins(ITEMS, "3", "x", None, big))
        skip.apply(b.batch(t))
        assert skip.skipped == 1
        assert cache.h("public.items:2") == {"id": "2", "name": "ok"}
        assert not cache.r.exists("public.items:3")
        assert skip.read_checkpoint() == Checkpoint(b.seq, b.seq * 1000)
        # just below the limit is stored
        ok = "y" * (1024 * 1024 - 1)
        skip.apply(b.batch(b.txn(ins(ITEMS, "4", "x", None, ok))))
        assert skip.skipped == 1
        assert cache.r.hget("public.items:4", "note") == ok
        skip.close()
    finally:
        cache.r.config_set("proto-max-bulk-len", 512 * 1024 * 1024)


def test_command_refused_names_table_and_key(server: RedisServer) -> None:
    """Redis refuses a command (here: an ACL that allows only some keys): nothing of the
    batch is applied, the view stops with an error naming table and key."""
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    admin.flushall()
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+pw123456"],
        keys=["public.items:*", "_syncline:*"],
        commands=["+@all"],
    )
    url = server.url.replace("redis://", "redis://limited:pw123456@")
    v = make_view(url)
    try:
        assert v.open() == Checkpoint()
        b = ScriptedBatches()
        v.apply(b.batch(b.txn(SchemaChange(ITEMS), SchemaChange(OTHER), ins(ITEMS, "1", "a", None, None))))
        before = v.read_checkpoint()
        with pytest.raises(ViewError, match=r"'cache'.*table public\.other.*public\.other:7.*NOPERM") as ei:
            v.apply(b.batch(b.txn(ins(ITEMS, "2", "b", None, None)), b.txn(ins(OTHER, "7", "no"))))
        assert not isinstance(ei.value, TransientViewError)
        assert "pw123456" not in str(ei.value)
        assert v.read_checkpoint() == before
        assert not admin.exists("public.items:2")
    finally:
        v.close()
        admin.acl_deluser("limited")


def test_exec_time_failure_keeps_the_position(cache: Cache) -> None:
    """A command failing while EXEC runs (a user replaced a stored key set by a string):
    Redis applied the rest, but the position stays before the batch and the error names
    the table and key."""
    cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", None, None)])
    before = cache.view.read_checkpoint()
    cache.r.delete("_syncline:keys:cache:public.items")
    cache.r.set("_syncline:keys:cache:public.items", "not a set")
    with pytest.raises(
        ViewError, match=r"table public\.items.*_syncline:keys:cache:public\.items.*WRONGTYPE"
    ):
        cache.apply([ins(ITEMS, "2", "b", None, None)])
    assert cache.view.read_checkpoint() == before


def test_batches_inside_one_transaction(cache: Cache) -> None:
    cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", None)])
    before = cache.view.read_checkpoint()
    cache.apply([ins(ITEMS, "2", "b", None, None)], commit=False)
    cache.apply([upd(ITEMS, "1", "c", None, UNCHANGED)], commit=False)
    # nothing visible until the batch with commit=True
    assert not cache.r.exists("public.items:2")
    assert cache.view.read_checkpoint() == before
    cache.apply([dele(ITEMS, "2"), ins(ITEMS, "3", "d", None, None)])
    assert sorted(cache.r.keys("public.items:*")) == ["public.items:1", "public.items:3"]
    assert cache.h("public.items:1") == {"id": "1", "name": "c"}
    assert cache.view.read_checkpoint() == Checkpoint(cache.seq, cache.seq * 1000)
    # an open MULTI dropped by close() leaves nothing behind
    cache.apply([ins(ITEMS, "9", "lost", None, None)], commit=False)
    cache.view.close()
    assert not cache.r.exists("public.items:9")


def test_replayed_batch_is_skipped(cache: Cache) -> None:
    b = cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", None, None)])
    cache.r.hset("public.items:1", "name", "edited")
    b.relations = {}
    cache.view.apply(b)
    assert cache.h("public.items:1")["name"] == "edited"


def test_restart_empty_and_unreachable(tmp_path: Path) -> None:
    s = RedisServer(tmp_path, start=False)
    s.start()
    try:
        c = Cache(s, name="vol")
        c.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", None, None)])
        assert c.view.read_checkpoint() == Checkpoint(1, 1000)
        s.stop()
        with pytest.raises(TransientViewError) as ei:
            c.apply([ins(ITEMS, "2", "b", None, None)])
        assert s.url not in str(ei.value)
        assert c.view.read_checkpoint() is None
        s.start()
        # Redis restarted empty: a new view (the runtime refills it from the compacted log)
        assert c.view.open() == Checkpoint()
        assert c.view.relations() == {}
        c.view.close()
    finally:
        s.stop()


def test_password_not_in_errors() -> None:
    v = make_view("redis://:hunter2secret@127.0.0.1:1/0")
    with pytest.raises(TransientViewError) as ei:
        v.open()
    assert "hunter2secret" not in str(ei.value)


# ------------------------------------------------------------------ values vs PostgreSQL ::text


TYPES = {
    "b": ("boolean", ["true", "false"]),
    "c": ("char(4)", ["'ab'", "'    '"]),
    "bc": ("bpchar", ["'ab  '", "'x'"]),
    "vc": ("varchar(5)", ["'ab  '", "''"]),
    "i": ("inet", ["'10.1.2.3'", "'10.1.2.3/24'", "'::1'", "'fe80::1/64'", "'10.0.0.1/32'"]),
    "n": ("cidr", ["'10.1.2.0/24'", "'::/0'"]),
    "ba": ("boolean[]", ["ARRAY[true,false]"]),
    "ca": ("char(3)[]", ["ARRAY['a'::char(3)]"]),
    "ia": ("inet[]", ["ARRAY['1.2.3.4'::inet]"]),
    "ts": ("timestamptz", ["'2024-01-02 03:04:05+02'"]),
    "d": ("dbool", ["true"]),
    "dc": ("dchar", ["'z'"]),
}


def test_values_match_postgres_text(pg: PgCluster, cache: Cache) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("DROP TABLE IF EXISTS rzoo; DROP DOMAIN IF EXISTS dbool; DROP DOMAIN IF EXISTS dchar")
        conn.execute("CREATE DOMAIN dbool AS boolean; CREATE DOMAIN dchar AS char(3)")
        cols = ", ".join(f"{n} {t}" for n, (t, _) in TYPES.items())
        conn.execute(f"CREATE TABLE rzoo (id integer PRIMARY KEY, {cols})")
        nrows = max(len(v) for _, v in TYPES.values())
        for i in range(nrows):
            vals = [v[i] if i < len(v) else "NULL" for _, v in TYPES.values()]
            conn.execute(f"INSERT INTO rzoo VALUES ({i}, {', '.join(vals)})")  # noqa: S608
        catalog = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, "
            "format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, "
            "CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = 'rzoo'::regclass AND a.attnum > 0 ORDER BY a.attnum"
        ).fetchall()
        names = ", ".join(n for n, *_ in catalog)
        cur = conn.execute(f"SELECT {names} FROM rzoo ORDER BY id")  # noqa: S608
        assert cur.pgresult is not None
        raw = [
            tuple(
                None if (v := cur.pgresult.get_value(r, c)) is None else bytes(v).decode()
                for c in range(cur.pgresult.nfields)
            )
            for r in range(cur.pgresult.ntuples)
        ]  # the output-function text, as pgoutput sends it
        casts = ", ".join(f"{n}::text" for n, *_ in catalog)
        expected = conn.execute(f"SELECT {casts} FROM rzoo ORDER BY id").fetchall()  # noqa: S608
    zoo = Relation(
        oid=99,
        schema="public",
        name="rzoo",
        replident="d",
        columns=tuple(
            Column(name=n, type_oid=0, typmod=-1, type_name=t, category=cat, base=base)
            for n, t, cat, base in catalog
        ),
        key=("id",),
    )
    assert raw != expected  # the test is meaningful: output text differs from ::text
    cache.apply([SchemaChange(zoo), *(ins(zoo, *row) for row in raw)])
    for row in expected:
        want = {n: v for (n, *_), v in zip(catalog, row, strict=True) if v is not None}
        assert cache.h(f"public.rzoo:{row[0]}") == want


def test_dropped_column_fields_removed(cache: Cache) -> None:
    cache.apply([SchemaChange(ITEMS), ins(ITEMS, "1", "a", "1.00", "n")])
    narrower = rel(10, "items", col("id", "integer"), col("name"), col("price", "numeric(10,2)"))
    cache.apply([SchemaChange(narrower), ins(narrower, "2", "b", None)])
    assert cache.h("public.items:1") == {"id": "1", "name": "a", "price": "1.00"}
    assert cache.view.relations()[10] == narrower


def test_registry_creates_redis_view(server: RedisServer) -> None:
    from syncline.views.registry import create_view as registry_create

    v = registry_create(ViewConfig(name="r", kind="redis", options={"url": Secret(server.url)}))
    assert isinstance(v, RedisView)
    assert v.open() == Checkpoint()
    v.close()
