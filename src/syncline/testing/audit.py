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


class Writers:
    """``n`` audit writers on threads of their own (:func:`writer`), from :meth:`start` until
    :meth:`stop` (which fails on what a writer met) or :meth:`close` (in a ``finally``)."""

    def __init__(self, dsn: str, n: int = 2) -> None:
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=writer, args=(dsn, i, self.stop_event, self.errors)) for i in range(n)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.close()
        assert not self.errors, self.errors

    def close(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            if t.is_alive():
                t.join()


def measure(source_dsn: str, replica_dsn: str) -> dict[str, int]:
    """The replica against the source, counted: rows checked; audit rows lost; effects
    applied twice (counter increments above the source's, audit rows the source does not
    have); and versions out of order (a key's audit in the replica, in commit order, not
    1, 2, 3, ...)."""
    with psycopg.connect(source_dsn) as src, psycopg.connect(replica_dsn) as rep:
        q = "SELECT id, n FROM public.counters ORDER BY id"
        sc: dict[int, int] = {int(i): int(n) for i, n in src.execute(q)}
        rc: dict[int, int] = {int(i): int(n) for i, n in rep.execute(q)}
        s_ids = {int(r[0]) for r in src.execute("SELECT id FROM public.audit")}
        r_audit = rep.execute("SELECT id, k, ver FROM public.audit ORDER BY id").fetchall()
        r_ids = {int(r[0]) for r in r_audit}
        last: dict[int, int] = {}
        out_of_order = 0
        for _id, k, ver in r_audit:
            if ver != last.get(k, 0) + 1:
                out_of_order += 1
            last[k] = ver
        versions = src.execute("SELECT count(*) FROM public.versions").fetchone()
    return {
        "rows_checked": len(s_ids) + len(sc) + int(versions[0] if versions else 0),
        "lost": len(s_ids - r_ids) + sum(max(0, n - rc.get(i, 0)) for i, n in sc.items()),
        "duplicated": len(r_ids - s_ids) + sum(max(0, n - sc.get(i, 0)) for i, n in rc.items()),
        "out_of_order": out_of_order,
    }


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
