"""A workload whose result proves order and exactly-once in effect: counters incremented by
every transaction (a change applied twice shows as a higher count), and an insert-only audit
of each key's versions next to the key's current version (a key that went back, or a
version lost, shows as a break in the audit). Used by the fault suites."""

from __future__ import annotations

import threading
import time

import psycopg

SCHEMA = """
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counters SELECT g, 0 FROM generate_series(0, 19) g;
CREATE TABLE versions (k int PRIMARY KEY, ver int NOT NULL);
CREATE TABLE audit (id bigserial PRIMARY KEY, k int NOT NULL, ver int NOT NULL);
CREATE TABLE bulk (id int PRIMARY KEY, pad text);
"""
KEYS = 50


def writer(dsn: str, seed: int, stop: threading.Event, errors: list[BaseException]) -> None:
    """Small transactions until ``stop``: a counter, a key's next version and its audit row."""
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                i += 1
                k = (seed * 7 + i) % KEYS
                with c.transaction():
                    c.execute("UPDATE counters SET n = n + 1 WHERE id = %s", (i % 20,))
                    row = c.execute(
                        "INSERT INTO versions (k, ver) VALUES (%s, 1) ON CONFLICT (k) DO UPDATE"
                        " SET ver = versions.ver + 1 RETURNING ver",
                        (k,),
                    ).fetchone()
                    assert row is not None
                    c.execute("INSERT INTO audit (k, ver) VALUES (%s, %s)", (k, row[0]))
                time.sleep(0.003)
    except BaseException as e:
        errors.append(e)


def check(source_dsn: str, replica_dsn: str) -> None:
    """In the replica: the counters equal the source's (nothing applied twice), and each
    key's audit is versions 1..n in order, ending at the key's current version."""
    with psycopg.connect(source_dsn) as src, psycopg.connect(replica_dsn) as rep:
        q = "SELECT id, n FROM public.counters ORDER BY id"
        assert src.execute(q).fetchall() == rep.execute(q).fetchall(), "counters differ"
        last: dict[int, int] = {}
        for k, ver in rep.execute("SELECT k, ver FROM public.audit ORDER BY id"):
            assert ver == last.get(k, 0) + 1, f"key {k}: version {ver} after {last.get(k)}"
            last[k] = ver
        assert last == dict(rep.execute("SELECT k, ver FROM public.versions").fetchall())
        assert len(last) == KEYS, f"{len(last)} keys in the audit, not {KEYS}"
