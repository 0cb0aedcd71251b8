"""``syncline demo dual-writes``: DDIA's Figure 11-4 (dual writes) made runnable.

Clients update the same keys. Under **dual writes** each client writes PostgreSQL and then,
itself, the cache (Redis) and the search index (tantivy, with the demo's own writer on its
own index directory). Under **syncline** the same clients write only PostgreSQL and
``syncline run`` derives the cache and the index. Then every store is compared with the
database, key by key.

The interleavings are not left to luck: the whole run is a *schedule*, a list of steps
(client, key, step) generated from a seed, and a :class:`Sequencer` lets each client thread
perform its next step only when it is that step's turn (clients still sleep a random
jitter before each step, as real requests do). A typical race round on one key is::

    A: UPDATE in PostgreSQL      (db = A)
    B: UPDATE in PostgreSQL      (db = B, committed after A)
    B: HSET cache, index doc     (cache = B)
    A: HSET cache, index doc     (cache = A: stale, and nothing will ever fix it)

The crash variant runs updates one at a time, but some clients die after their database
commit and before their cache or index write (the process restarts and goes on).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import psycopg
import redis
import tantivy
from rich.console import Console
from rich.table import Table

from syncline.config import load_config
from syncline.demo.services import (
    DemoFailed,
    DemoServices,
    Run,
    clear_dir,
    current_lsn,
    no_interrupts,
    sigterm_as_interrupt,
    stop_leftovers,
)
from syncline.demo.shop import product
from syncline.runtime.status import views_caught_up
from syncline.testing.pgcluster import PgBinariesMissing, free_port

Step = Literal["db", "cache", "index", "crash"]
Scenario = Literal["race", "crash"]
Approach = Literal["dual", "syncline"]
Store = Literal["cache", "index"]

TABLE = "public.items"
SCENARIOS: dict[Scenario, str] = {
    "race": "concurrent updates",
    "crash": "a client crashes between its writes",
}
APPROACHES: dict[Approach, str] = {"dual": "dual writes", "syncline": "syncline"}
STORES: dict[Store, str] = {"cache": "cache (Redis)", "index": "search index (tantivy)"}

EXPLANATION = (
    "With dual writes, client A committed to PostgreSQL before client B, but B's cache or index "
    "write landed first, so that store kept A's older value: no error, nothing retries, and it "
    "stays wrong; a client that crashed after its commit never wrote the other stores at all. "
    "With syncline the clients write only to PostgreSQL, and every store applies the database's "
    "own commit order, read from its replication log, so each ends equal to the database."
)


@dataclass(frozen=True)
class Op:
    """One step of one client; ``update`` numbers the client's update (its values)."""

    client: int
    key: int
    step: Step
    update: int


# Race patterns over two clients a (first to commit) and b: the order of their six steps.
_PATTERNS: tuple[tuple[tuple[str, Step], ...], ...] = (
    (("a", "db"), ("a", "cache"), ("a", "index"), ("b", "db"), ("b", "cache"), ("b", "index")),
    (("a", "db"), ("b", "db"), ("b", "cache"), ("b", "index"), ("a", "cache"), ("a", "index")),
    (("a", "db"), ("b", "db"), ("b", "cache"), ("a", "cache"), ("a", "index"), ("b", "index")),
    (("a", "db"), ("b", "db"), ("a", "cache"), ("b", "cache"), ("b", "index"), ("a", "index")),
)
_WORST = 1  # both stores end with the value of the first commit


def schedule(seed: int, clients: int, keys: int, rounds: int) -> list[tuple[Scenario, Op]]:
    """The global order of every step: race rounds on keys 1..keys, then crash rounds on
    keys keys+1..2*keys. The last round of each scenario always diverges on its first key,
    so the demo shows the effect whatever the seed."""
    if clients < 2:
        raise ValueError("dual-writes needs at least 2 clients")
    rnd = random.Random(seed)
    out: list[tuple[Scenario, Op]] = []
    n = 0
    for r in range(rounds):
        for k in range(1, keys + 1):
            a, b = rnd.sample(range(clients), 2)
            last_first = r == rounds - 1 and k == 1
            pattern = _PATTERNS[_WORST] if last_first else rnd.choice(_PATTERNS)
            ua, ub = n, n + 1
            n += 2
            for who, step in pattern:
                c, u = (a, ua) if who == "a" else (b, ub)
                out.append(("race", Op(c, k, step, u)))
    for r in range(rounds):
        for k in range(keys + 1, 2 * keys + 1):
            c = rnd.randrange(clients)
            forced = r == rounds - 1 and k == keys + 1
            fate = "after db" if forced else rnd.choice(("ok", "ok", "ok", "after db", "after cache"))
            steps: list[Step] = ["db", "cache", "index"]
            if fate == "after db":
                steps = ["db", "crash"]
            elif fate == "after cache":
                steps = ["db", "cache", "crash"]
            for step in steps:
                out.append(("crash", Op(c, k, step, n)))
            n += 1
    return out


def predicted(ops: list[tuple[Scenario, Op]], keys: int) -> dict[tuple[Scenario, Store], int]:
    """What the schedule must leave behind under dual writes: per scenario and store, the
    keys whose last write to the store came from another update than the last database
    write (a model of the run, for tests and for the curious)."""
    last: dict[tuple[str, int], int] = {}
    for _, op in ops:
        if op.step != "crash":
            last[(op.step, op.key)] = op.update
    ranges: dict[Scenario, range] = {"race": range(1, keys + 1), "crash": range(keys + 1, 2 * keys + 1)}
    out: dict[tuple[Scenario, Store], int] = {}
    for scenario, keyrange in ranges.items():
        for store in STORES:
            out[(scenario, store)] = sum(
                1
                for k in keyrange
                if (k_db := last.get(("db", k))) is not None and last.get((store, k)) != k_db
            )
    return out


class Sequencer:
    """Lets step ``i`` of the schedule run only after steps 0..i-1 have finished."""

    def __init__(self) -> None:
        self._turn = 0
        self._cond = threading.Condition()
        self.failed: BaseException | None = None

    def wait(self, i: int, timeout: float = 60) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._turn == i or self.failed is not None, timeout):
                raise TimeoutError(f"step {i} never got its turn")

    def done(self) -> None:
        with self._cond:
            self._turn += 1
            self._cond.notify_all()

    def fail(self, e: BaseException) -> None:
        with self._cond:
            self.failed = e
            self._cond.notify_all()


COLUMNS = ("id", "name", "price", "updated_by")


class IndexWriter:
    """The dual-writing application's own search index: one document per item, every column
    a stored field (tantivy allows one writer per index, so the clients share it)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("id", stored=True, tokenizer_name="raw")
        sb.add_text_field("name", stored=True, tokenizer_name="en_stem")
        sb.add_text_field("price", stored=True, tokenizer_name="raw")
        sb.add_text_field("updated_by", stored=True, tokenizer_name="raw")
        self.index = tantivy.Index(sb.build(), path=str(path))
        self.writer = self.index.writer()
        self.lock = threading.Lock()

    def put(self, fields: dict[str, str], commit: bool = True) -> None:
        d = tantivy.Document()
        for c in COLUMNS:
            d.add_text(c, fields[c])
        with self.lock:
            self.writer.delete_documents_by_term("id", fields["id"])
            self.writer.add_document(d)
            if commit:
                self.writer.commit()

    def commit(self) -> None:
        with self.lock:
            self.writer.commit()

    def close(self) -> None:
        with self.lock:
            self.writer.wait_merging_threads()

    @staticmethod
    def rows(path: Path) -> dict[str, dict[str, str]]:
        """Every document of the index at ``path``, by id."""
        index = tantivy.Index.open(str(path))
        index.reload()
        searcher = index.searcher()
        out = {}
        for _, addr in searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1)).hits:
            d = searcher.doc(addr)
            row = {c: str(d.get_first(c)) for c in COLUMNS}
            out[row["id"]] = row
        return out


def syncline_index_rows(path: Path) -> dict[str, dict[str, str]]:
    """Every row in syncline's search view at ``path`` (through ``syncline search``'s API)."""
    from syncline.views.tantivy.view import search

    return {
        str(h["key"]): {k: str(v) for k, v in h["fields"].items() if v is not None}
        for h in search(str(path), f'_table:"{TABLE}"', 10_000)
        if h["table"] == TABLE
    }


_COLUMNS = "id::text, name, price::text, updated_by"


def _hash(row: dict[str, str]) -> dict[Any, Any]:
    """A row as the mapping redis-py's (invariant) ``hset`` signature accepts."""
    return dict(row)


def _row(r: tuple[Any, ...]) -> dict[str, str]:
    return dict(zip(("id", "name", "price", "updated_by"), (str(v) for v in r), strict=True))


@dataclass
class Client:
    """One application process: its own connections; ``dual`` = it writes the stores too."""

    number: int
    dsn: str
    redis_url: str
    index: IndexWriter | None
    jitter: float
    seed: int
    crashes: int = 0
    _conn: psycopg.Connection[Any] | None = None
    _redis: redis.Redis | None = None
    _last: dict[str, str] = field(default_factory=dict)

    def connect(self) -> None:
        self._conn = psycopg.connect(self.dsn, autocommit=True)
        self._redis = redis.Redis.from_url(self.redis_url, decode_responses=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._redis is not None:
            self._redis.close()
        self._conn = self._redis = None

    def run(self, ops: list[tuple[int, Op]], seq: Sequencer) -> None:
        rnd = random.Random(self.seed)
        try:
            self.connect()
            for i, op in ops:
                time.sleep(rnd.uniform(0, self.jitter))  # real requests take varying time
                seq.wait(i)
                if seq.failed is not None:
                    return
                self.perform(op, rnd)
                seq.done()
        except BaseException as e:
            seq.fail(e)
        finally:
            self.close()

    def perform(self, op: Op, rnd: random.Random) -> None:
        assert self._conn is not None and self._redis is not None
        if op.step == "db":
            name = f"{product(random.Random(op.update))[1]} (update {op.update} by client {self.number})"
            price = Decimal(random.Random(op.update).randrange(500, 20000)) / 100
            row = self._conn.execute(
                f"UPDATE items SET name = %s, price = %s, updated_by = %s WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
                (name, price, f"client {self.number}", op.key),
            ).fetchone()
            assert row is not None
            self._last = _row(row)  # what this client will write to the cache and the index
        elif op.step == "crash":
            # the process dies here (its pending writes are lost) and is restarted
            self.crashes += 1
            self.close()
            self.connect()
        elif self.index is None:
            return  # syncline: the application writes only to PostgreSQL
        elif op.step == "cache":
            key = f"{TABLE}:{op.key}"
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=_hash(self._last))
            pipe.execute()
        elif op.step == "index":
            self.index.put(self._last)


def run_schedule(
    ops: list[tuple[Scenario, Op]],
    clients: int,
    dsn: str,
    redis_url: str,
    index: IndexWriter | None,
    seed: int,
    jitter: float,
) -> int:
    """Run the schedule with one thread per client; returns the number of crashes."""
    seq = Sequencer()
    per: dict[int, list[tuple[int, Op]]] = {c: [] for c in range(clients)}
    for i, (_, op) in enumerate(ops):
        per[op.client].append((i, op))
    cs = [Client(c, dsn, redis_url, index, jitter, seed * 1000 + c) for c in range(clients)]
    threads = [
        threading.Thread(
            target=cl.run, args=(per[cl.number], seq), name=f"dual-writes-client-{cl.number}", daemon=True
        )
        for cl in cs
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        seq.fail(KeyboardInterrupt())  # every client stops at its next turn
        for t in threads:
            t.join(timeout=10)
        raise
    if seq.failed is not None:
        raise DemoFailed(f"a client failed: {seq.failed!r}")
    return sum(c.crashes for c in cs)


def _seed_db(dsn: str, keys: int) -> None:
    rnd = random.Random(0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL,"
            " updated_by text NOT NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items VALUES (%s, %s, %s, 'seed')",
                [(k, product(rnd)[1], Decimal(1000 + k) / 100) for k in range(1, 2 * keys + 1)],
            )


def _db_rows(dsn: str) -> dict[str, dict[str, str]]:
    from syncline.sources.postgres.replication import session_conninfo

    with psycopg.connect(session_conninfo(dsn), autocommit=True) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM items").fetchall()  # noqa: S608
    return {str(r[0]): _row(r) for r in rows}


def _differing(
    db: dict[str, dict[str, str]], redis_url: str, docs: dict[str, dict[str, str]]
) -> dict[Store, set[str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        cache = {k: client.hgetall(f"{TABLE}:{k}") for k in db}
    finally:
        client.close()
    return {
        "cache": {k for k, row in db.items() if cache.get(k) != row},
        "index": {k for k, row in db.items() if docs.get(k) != row},
    }


@dataclass(frozen=True)
class DualWritesResult:
    keys: int
    """Keys per scenario (race: 1..keys, crash: keys+1..2*keys)."""
    differing: dict[tuple[Scenario, Approach, Store], int]
    """Keys whose value in the store differs from the database's."""
    crashes: int
    steps: int

    def count(self, scenario: Scenario, approach: Approach, store: Store) -> int:
        return self.differing[(scenario, approach, store)]


def run_dual_writes(
    workdir: Path,
    clients: int = 4,
    keys: int = 20,
    rounds: int = 3,
    seed: int = 11,
    jitter: float = 0.002,
    progress: Callable[[str], None] = lambda s: None,
) -> DualWritesResult:
    """Both approaches on the same schedule, on a private PostgreSQL and Redis under
    ``workdir`` (stopped on return); how many keys of each store differ from the database."""
    svc = DemoServices(workdir)
    if not svc.has_redis:
        raise DemoFailed("redis-server is not installed (e.g. `apt-get install redis-server`)")
    run: Run | None = None
    ops = schedule(seed, clients, keys, rounds)
    differing: dict[tuple[Scenario, Approach, Store], int] = {}
    crashes = 0
    try:
        svc.start_postgres()
        svc.start_redis()
        for db in ("dual", "derived"):
            svc.pg.psql(f"CREATE DATABASE {db}")
            _seed_db(svc.pg_dsn(db), keys)
        progress(
            f"private PostgreSQL on 127.0.0.1:{svc.pg.port} and Redis on 127.0.0.1:{svc.redis_port}; "
            f"{2 * keys} keys, {clients} clients, {len(ops)} scheduled steps"
        )

        # 1. dual writes: the application writes PostgreSQL, then the cache and the index
        dual_dsn, dual_redis, dual_index = svc.pg_dsn("dual"), svc.redis_url(0), workdir / "dual-index"
        index = IndexWriter(dual_index)
        try:
            initial = _db_rows(dual_dsn)
            client = redis.Redis.from_url(dual_redis, decode_responses=True)
            try:
                for k, row in initial.items():  # the initial load: stores equal the database
                    client.hset(f"{TABLE}:{k}", mapping=_hash(row))
            finally:
                client.close()
            for row in initial.values():
                index.put(row, commit=False)
            index.commit()
            progress("dual writes: running the schedule")
            crashes = run_schedule(ops, clients, dual_dsn, dual_redis, index, seed, jitter)
        finally:
            index.close()
        diff = _differing(_db_rows(dual_dsn), dual_redis, IndexWriter.rows(dual_index))
        _count(differing, "dual", diff, keys)

        # 2. syncline: the application writes PostgreSQL only; syncline derives the stores
        derived_dsn, derived_redis = svc.pg_dsn("derived"), svc.redis_url(1)
        config = _write_config(workdir, derived_dsn, derived_redis)
        cfg = load_config(config)
        run = Run(config)
        run.start()
        progress("syncline: syncline run started (snapshot of the items table)")
        _wait(cfg, run, derived_dsn)
        progress("syncline: running the same schedule, writing to PostgreSQL only")
        run_schedule(ops, clients, derived_dsn, derived_redis, None, seed, jitter)
        _wait(cfg, run, derived_dsn)
        rc = run.stop()
        run = None
        if rc != 0:
            raise DemoFailed(f"syncline run exited {rc}: see {config.parent / 'run.log'}")
        diff = _differing(
            _db_rows(derived_dsn), derived_redis, syncline_index_rows(workdir / "syncline-index")
        )
        _count(differing, "syncline", diff, keys)
    finally:
        with no_interrupts():  # a second Ctrl-C must not skip this
            if run is not None:
                run.stop()
            svc.stop()
    return DualWritesResult(keys=keys, differing=differing, crashes=crashes, steps=len(ops))


def _count(
    out: dict[tuple[Scenario, Approach, Store], int],
    approach: Approach,
    diff: dict[Store, set[str]],
    keys: int,
) -> None:
    for store, ks in diff.items():
        out[("race", approach, store)] = sum(1 for k in ks if int(k) <= keys)
        out[("crash", approach, store)] = sum(1 for k in ks if int(k) > keys)


def _write_config(workdir: Path, dsn: str, redis_url: str) -> Path:
    path = workdir / "syncline.toml"
    path.write_text(
        "# Written by `syncline demo dual-writes`: the application's database, a cache and an index.\n"
        f'[source]\ndsn = "{dsn}"\ntables = ["{TABLE}"]\n'
        'slot = "dual_writes"\npublication = "dual_writes"\n\n'
        '[log]\npath = "log"\n\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n\n'
        f'[views.cache]\nkind = "redis"\nurl = "{redis_url}"\n\n'
        '[views.search]\nkind = "tantivy"\npath = "syncline-index"\ntext_fields = ["name"]\n'
        'tokenizer = "en_stem"\n'
    )
    return path


def _wait(cfg: Any, run: Run, dsn: str, timeout: float = 120) -> None:
    lsn = current_lsn(dsn)
    names = [v.name for v in cfg.views]
    deadline = time.monotonic() + timeout
    while not views_caught_up(cfg, lsn, names):
        if run.exited() is not None:
            raise DemoFailed(f"syncline run exited {run.exited()}:\n{run.tail()}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"views not caught up in {timeout:.0f}s:\n{run.tail()}")
        time.sleep(0.05)


def render(console: Console, result: DualWritesResult) -> None:
    t = Table(
        title=f"keys that differ from PostgreSQL, of {result.keys} per scenario",
        title_justify="left",
    )
    t.add_column("scenario")
    t.add_column("store")
    for label in APPROACHES.values():
        t.add_column(label, justify="right")
    for scenario, slabel in SCENARIOS.items():
        for store, label in STORES.items():
            cells = []
            for approach in APPROACHES:
                n = result.count(scenario, approach, store)
                cells.append(f"[red]{n}[/red]" if n else "[green]0[/green]")
            t.add_row(slabel, label, *cells)
    console.print(t)
    console.print(EXPLANATION, highlight=False)


def main(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    if args.clients < 2:
        console.print("[red]syncline demo dual-writes:[/red] --clients: at least 2 (a race needs two)")
        return 2
    workdir = Path(args.dir).resolve() / "dual-writes"
    for what in stop_leftovers(workdir):
        console.print(f"stopped {what} left running by a previous demo in {workdir}")
    clear_dir(workdir)
    workdir.mkdir(parents=True)
    console.rule("[bold]syncline demo dual-writes")
    try:
        with sigterm_as_interrupt():
            result = run_dual_writes(
                workdir,
                clients=args.clients,
                seed=args.seed,
                progress=lambda s: console.print(f"  {s}", highlight=False),
            )
    except PgBinariesMissing as e:
        console.print(f"[red]syncline demo needs the PostgreSQL server binaries:[/red] {e}")
        return 2
    except DemoFailed as e:
        console.print(f"[red]demo failed:[/red] {e}")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: the servers and syncline run are stopped[/yellow]")
        return 130
    console.print(f"  {result.crashes} client crashes; files in {workdir}", highlight=False)
    render(console, result)
    ok = all(result.count(s, "syncline", st) == 0 for s in SCENARIOS for st in STORES)
    return 0 if ok else 1
