"""Rows whose plain keys would collide (issue 13): with the contract's escaping each keeps
its own Redis key and search document, and deleting one leaves the other."""

from __future__ import annotations

import redis

from syncline.testing.harness import Pipeline


def test_rows_that_would_share_a_key_stay_apart(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        'CREATE TABLE "k:1" (id text PRIMARY KEY, v text);'
        " CREATE TABLE k (id text PRIMARY KEY, v text);"
        " CREATE TABLE pair (a text, b text, v text, PRIMARY KEY (a, b));"
        ' CREATE TABLE "t.u" (id int PRIMARY KEY, v text);'
        ' CREATE TABLE "pub\\lic" (id int PRIMARY KEY, v text);'
        """ INSERT INTO "k:1" VALUES ('2', 'table k:1, key 2');"""
        " INSERT INTO k VALUES ('1:2', 'table k, key 1:2'), ('x', 'plain');"
        " INSERT INTO pair VALUES ('a:b', 'c', 'first'), ('a', 'b:c', 'second'), ('a\\', ':c', 'third');"
        """ INSERT INTO "t.u" VALUES (1, 'dotted');"""
        """ INSERT INTO "pub\\lic" VALUES (1, 'backslash')"""
    )
    p.start()
    p.wait_caught_up()
    assert p.redis is not None
    r = redis.Redis.from_url(p.redis.url, decode_responses=True)
    try:
        assert r.hgetall("public.k\\:1:2") == {"id": "2", "v": "table k:1, key 2"}
        assert r.hgetall("public.k:1:2") == {"id": "1:2", "v": "table k, key 1:2"}
        assert r.hget("public.pair:a\\:b:c", "v") == "first"
        assert r.hget("public.pair:a:b\\:c", "v") == "second"
        assert r.hget("public.pair:a\\\\:\\:c", "v") == "third"
        assert r.hget("public.t\\.u:1", "v") == "dotted"
        assert r.hget("public.pub\\\\lic:1", "v") == "backslash"
        # deletes and a truncate reach only their own rows
        p.sql("DELETE FROM k WHERE id = '1:2'; DELETE FROM pair WHERE a = 'a:b'")
        p.sql('TRUNCATE "k:1"')
        p.sql("""INSERT INTO "k:1" VALUES ('3', 'after the truncate')""")
        p.wait_caught_up()
        assert r.hget("public.k:x", "v") == "plain"
        assert not r.exists("public.k:1:2") and not r.exists("public.k\\:1:2")
        assert r.hget("public.k\\:1:3", "v") == "after the truncate"
        assert r.hget("public.pair:a:b\\:c", "v") == "second"
        assert not r.exists("public.pair:a\\:b:c")
    finally:
        r.close()
    assert not p.failed_views()
    assert p.stop() == 0
    p.assert_equal()  # the harness's own comparison computes the contract's keys itself
    p.assert_verified()


def test_key_columns_named_like_the_copys_own_names(pipeline: Pipeline) -> None:
    """A copy splits a table into chunks by its key with a window query; key columns called
    ``n``, ``rn``, ``s``, ``row_number`` or ``k0`` (names such a query might use itself) made
    it fail ("ORDER BY n is ambiguous") and stopped the capture."""
    p = pipeline
    cols = ("n", "rn", "s", "row_number", "k0")
    ddl = ", ".join(f'"{c}" int' for c in cols)
    keys = ", ".join(f'"{c}"' for c in cols)
    p.sql(
        f"CREATE TABLE first_copy ({ddl}, v text, PRIMARY KEY ({keys}));"
        "INSERT INTO first_copy SELECT g, g % 7, g % 3, g, -g, 'v' || g FROM generate_series(1, 300) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql(
        f"CREATE TABLE later_copy ({ddl}, v text, PRIMARY KEY ({keys}));"
        "INSERT INTO later_copy SELECT g, g, g, g, g, 'w' FROM generate_series(1, 300) g;"
        "UPDATE first_copy SET v = 'changed' WHERE \"n\" % 10 = 0"
    )
    p.wait_caught_up(new_tables=True)
    assert not p.failed_views()
    assert p.stop() == 0, p.output()[-3000:]
    p.assert_equal()
