"""Transforms (issue 16 item 1): a user's function between the log and a view, against a
real PostgreSQL source and real Redis and PostgreSQL views.

- values reach the function as Python types and go back without loss: an identity
  transform, and one that rebuilds every value (so each goes through the text printer),
  keep the replica equal to the source for every type, while the function checks the types;
- filters, renames, masks and computed fields in a Redis view, compared with a SQL query
  over the source after a workload that updates rows in and out of the filter and deletes;
- a function that raises stops the view naming function, key and position (or, with
  ``transform_errors = "skip"``, the row is left out); one that cannot be imported is an
  error at load."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis

from syncline.testing.compare import TableDiff, compare_postgres, source_tables
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

SHAPES = textwrap.dedent(
    """
    import copy
    import datetime as dt
    import uuid
    from decimal import Decimal

    from syncline.transform import UNCHANGED, Change, Output

    EXPECTED = {
        "i": int, "n": Decimal, "f": float, "b": bool, "t": str, "j": (dict, list), "jb": (list, dict),
        "u": uuid.UUID, "by": bytes, "d": dt.date, "ts": dt.datetime, "tz": dt.datetime,
        "tm": dt.time, "ia": list, "ta": list, "iv": str, "inf": str, "big": str,
    }

    def check(change: Change) -> None:
        for k, v in (change.new or {}).items():
            if v is None or v is UNCHANGED or k not in EXPECTED or v in ("infinity", "-infinity"):
                continue  # out of Python's range: the text PostgreSQL printed
            if k == "inf" and change.new["id"] == 1:
                assert isinstance(v, dt.date), (k, v)
                continue
            assert isinstance(v, EXPECTED[k]), (k, type(v), v)
        if change.new and isinstance(change.new.get("tz"), dt.datetime):
            assert change.new["tz"].tzinfo is not None

    def identity(change: Change):
        check(change)
        return None if change.new is None else change.new

    def rebuilt(change: Change):
        check(change)
        if change.new is None:
            return None
        return {k: (v if v is UNCHANGED else copy.deepcopy(v)) for k, v in change.new.items()}

    def users(change: Change):
        new = change.new
        if new is None or not new["active"]:
            return None
        return {
            "id": new["id"],
            "display": new["name"].upper(),
            "email": "***",
            "name_len": len(new["name"]),
            "since": new["created"].date(),
        }

    def boom(change: Change):
        if change.new and change.new["v"] == "bad":
            raise RuntimeError("cannot shape this row")
        return change.new
    """
)

TYPES = """
CREATE TABLE kinds (
    id int PRIMARY KEY, i bigint, n numeric(12,4), f float8, b boolean, t text, j json, jb jsonb,
    u uuid, by bytea, d date, ts timestamp, tz timestamptz, tm time, ia int[], ta text[],
    iv interval, inf date, big text
);
INSERT INTO kinds VALUES
 (1, 9007199254740993, 12345678.1234, 1.5, true, 'héllo "q"', '{"a": [1, 2.50]}', '[1, {"b": null}]',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '2024-02-29', '2024-01-02 03:04:05.123456',
  '2024-06-01 12:00:00+02', '23:59:59.5', '{1,NULL,3}', '{"a b",NULL,"c,d"}', '1 mon 2 days 03:04:05',
  '2020-01-01', repeat('x', 5000)),
 (2, NULL, 'NaN', 'Infinity', false, '', 'null', '{}', NULL, '\\x', '0001-01-01', 'infinity',
  '-infinity', '00:00', '{}', '{}', '-1 year', 'infinity', NULL),
 (3, -1, -0.0001, -1e-300, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, '-infinity', 'y');
"""


def with_transform(p: Pipeline, section: str, ref: str, extra: str = "") -> None:
    (p.workdir / "shapes.py").write_text(SHAPES)
    text = p.config_path.read_text()
    head = f"[views.{section}]\n"
    assert head in text
    p.config_path.write_text(text.replace(head, f'{head}transform = "{ref}"\n{extra}'))


def differing(columns: list[str], diffs: list[TableDiff]) -> list[tuple[str, str, object, object]]:
    """(key, column, source, view) of each value that differs."""
    out = []
    for d in diffs:
        view = {r[0]: r for r in d.extra}
        for src in d.missing:
            got = view.get(src[0])
            for i, c in enumerate(columns):
                if got is None or got[i] != src[i]:
                    out.append((str(src[0]), c, src[i], got[i] if got else None))
    return out


def test_values_round_trip_through_python(pg: PgCluster, tmp_path: Path) -> None:
    for ref in ("shapes:identity", "shapes:rebuilt"):
        p = Pipeline(pg, tmp_path / ref.split(":")[1], views=("postgres",))
        try:
            with_transform(p, "replica", ref)
            p.sql(TYPES)
            p.start()
            p.wait_caught_up()
            p.sql(
                "UPDATE kinds SET i = i + 1, ia = ia || 4, tz = tz + interval '1 hour' WHERE id = 1;"
                "UPDATE kinds SET b = true WHERE id = 2;"  # big (TOASTed) is not sent: UNCHANGED
                "UPDATE kinds SET t = 'z' WHERE id = 3; DELETE FROM kinds WHERE id = 3;"
                "INSERT INTO kinds (id, j, n) VALUES (4, '[]', 1e7)"
            )
            p.wait_caught_up()
            assert not p.failed_views(), p.output()[-3000:]
            tables = source_tables(p.source_dsn)
            diffs = compare_postgres(p.source_dsn, p.replica_dsn, tables)
            bad = differing(tables["public.kinds"], diffs)
            if ref == "shapes:rebuilt":  # a json value rebuilt is written as JSON: equal as JSON
                bad = [x for x in bad if not (x[1] == "j" and json.loads(str(x[2])) == json.loads(str(x[3])))]
            assert not bad, (ref, bad)
            v = p.cli("verify", "--view", "replica")
            assert v.returncode == 2 and "transform shapes:" in v.stderr, v.stderr
            assert p.stop() == 0, p.output()[-3000:]
        finally:
            p.close()


def test_filter_rename_mask_and_computed_fields_in_redis(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis",))
    try:
        with_transform(p, "cache", "shapes:users")
        p.sql(
            "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text, active boolean,"
            " created timestamptz NOT NULL DEFAULT '2024-05-06 07:08:09+00');"
            "INSERT INTO users (id, name, email, active) SELECT g, 'user' || g, 'u' || g || '@x', g % 3 <> 0"
            " FROM generate_series(1, 300) g"
        )
        p.start()
        p.wait_caught_up()
        p.sql(
            "UPDATE users SET active = NOT active WHERE id % 5 = 0;"  # in and out of the filter
            "UPDATE users SET name = 'renamed' || id WHERE id % 7 = 0;"
            "DELETE FROM users WHERE id % 11 = 0;"
            "UPDATE users SET id = id + 1000 WHERE id IN (1, 2)"  # keys that move
        )
        p.wait_caught_up()
        assert not p.failed_views(), p.output()[-3000:]
        assert p.redis is not None
        r = redis.Redis.from_url(p.redis.url, decode_responses=True)
        want = {
            f"public.users:{i}": {
                "id": str(i),
                "display": name.upper(),
                "email": "***",
                "name_len": str(len(name)),
                "since": "2024-05-06",
            }
            for i, name in p.sql("SELECT id, name FROM users WHERE active")
        }
        got = {k: r.hgetall(k) for k in r.scan_iter("public.users:*")}
        assert got == want, (
            sorted(set(got) ^ set(want))[:10],
            [k for k in want if got.get(k) != want[k]][:5],
        )
        r.close()
        assert p.stop() == 0
    finally:
        p.close()


def test_a_failing_transform_stops_the_view_or_skips_the_row(pg: PgCluster, tmp_path: Path) -> None:
    for mode in ("stop", "skip"):
        p = Pipeline(pg, tmp_path / mode, views=("redis",))
        try:
            with_transform(p, "cache", "shapes:boom", f'transform_errors = "{mode}"\n')
            p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'ok')")
            p.start()
            p.wait_caught_up()
            p.sql("INSERT INTO t VALUES (2, 'bad'), (3, 'fine')")
            if mode == "stop":
                deadline = time.monotonic() + 60
                while "cache" not in p.failed_views():
                    assert time.monotonic() < deadline, p.output()[-3000:]
                    time.sleep(0.3)
                st = p.cli("status")
                assert "shapes:boom failed on public.t key {'id': 2}" in st.stdout, st.stdout
                assert "RuntimeError: cannot shape this row" in p.output()
                assert "Traceback" in p.output()
                assert "syncline retry cache" in st.stdout
            else:
                p.wait_caught_up()
                assert "row skipped" in p.output() and "public.t key {'id': 2}" in p.output()
                assert p.redis is not None
                r = redis.Redis.from_url(p.redis.url, decode_responses=True)
                assert sorted(r.scan_iter("public.t:*")) == ["public.t:1", "public.t:3"]
                r.close()
        finally:
            p.close()


def test_a_transform_that_cannot_be_loaded_is_one_error_at_load(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis",))
    try:
        for ref, needle in (
            ("nosuchmodule:f", "cannot import 'nosuchmodule'"),
            ("shapes:nosuch", "module 'shapes' has no 'nosuch'"),
            ("shapes", "expected module:function"),
        ):
            text = p.config_path.read_text()
            with_transform(p, "cache", ref)
            r = p.cli("status")
            assert r.returncode == 2 and needle in r.stderr, (ref, r.stderr)
            p.config_path.write_text(text)
    finally:
        p.close()


_ = copy


def replay(p: Pipeline, recording: str, ref: str) -> subprocess.CompletedProcess[str]:
    """``syncline replay RECORDING --transform REF`` in the config's directory (``shapes``)."""
    return subprocess.run(
        [sys.executable, "-m", "syncline", "replay", recording, "--transform", ref],
        capture_output=True,
        text=True,
        cwd=p.workdir,
    )


def test_record_then_replay_a_transform_offline(pg: PgCluster, tmp_path: Path) -> None:
    from syncline.transform.record import changes

    p = Pipeline(pg, tmp_path, views=("redis",))
    # the log keeps what the views applied (by default it is trimmed then, at any moment)
    p.keep_log()
    try:
        (p.workdir / "shapes.py").write_text(SHAPES)
        p.sql(
            "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text, active boolean,"
            " created timestamptz NOT NULL DEFAULT '2024-05-06 07:08:09+00');"
            "CREATE TABLE t (id int PRIMARY KEY, v text)"
        )
        p.start()
        p.wait_caught_up()
        p.sql(
            "INSERT INTO users (id, name, email, active) VALUES (1, 'ann', 'a@x', true), (2, 'bob', 'b@x', false);"
            "UPDATE users SET active = false WHERE id = 1; INSERT INTO t VALUES (1, 'bad');"
            "DELETE FROM users WHERE id = 2"
        )
        p.wait_caught_up()
        rec = tmp_path / "users.jsonl"
        r = p.cli("record", str(rec), "--table", "public.users")
        assert r.returncode == 0 and "recorded" in r.stdout and "(4 row changes)" in r.stdout, (
            r.stdout + r.stderr
        )

        # the recording as a user's unit test reads it: typed values, in order
        got = [(c.op, c.table, c.key, c.new and c.new["active"]) for c in changes(rec)]
        assert got == [
            ("insert", "public.users", {"id": 1}, True),
            ("insert", "public.users", {"id": 2}, False),
            ("update", "public.users", {"id": 1}, False),
            ("delete", "public.users", {"id": 2}, None),
        ], got
        assert next(iter(changes(rec))).commit_time.tzinfo is not None

        out = replay(p, str(rec), "shapes:users")
        assert out.returncode == 0, out.stderr
        docs = [json.loads(line) for line in out.stdout.splitlines()]
        assert docs[0] == {
            "seq": docs[0]["seq"],
            "op": "insert",
            "table": "public.users",
            "row": {"id": "1", "display": "ANN", "email": "***", "name_len": "3", "since": "2024-05-06"},
        }
        # ann leaves the filter: her row is removed; bob's delete removes a row never made
        assert [(d["op"], d["row"]) for d in docs[1:]] == [
            ("delete", {"id": "1"}),
            ("delete", {"id": "2"}),
        ], docs
        assert "3 rows made, 0 skipped" in out.stderr, out.stderr

        # a function that fails: exit 1 naming the row; a file that is no recording: exit 2
        r = p.cli("record", str(tmp_path / "t.jsonl"), "--table", "public.t")
        assert r.returncode == 0
        bad = replay(p, str(tmp_path / "t.jsonl"), "shapes:boom")
        assert bad.returncode == 1 and "public.t key {'id': 1}" in bad.stderr, bad.stderr
        (tmp_path / "junk.jsonl").write_text("hello\n")
        junk = replay(p, str(tmp_path / "junk.jsonl"), "shapes:boom")
        assert junk.returncode == 2 and "not a recording" in junk.stderr, junk.stderr
        assert p.stop() == 0

        # by default the log is trimmed once every view applied it: record says why it has
        # nothing instead of writing an empty recording with success
        p.keep_log(False)
        p.start()
        deadline = time.monotonic() + 60
        while (r := p.cli("record", str(tmp_path / "late.jsonl"))).returncode == 0:
            assert time.monotonic() < deadline, "the log was not trimmed: " + r.stdout + r.stderr
            time.sleep(0.5)
        assert r.returncode == 1 and "recorded 0 transactions" in r.stdout, r.stdout + r.stderr
        assert "retention trimmed" in r.stderr and 'retention = "keep"' in r.stderr, r.stderr
        assert p.stop() == 0
    finally:
        p.close()
