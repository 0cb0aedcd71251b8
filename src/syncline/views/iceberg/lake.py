"""Opening an Iceberg warehouse: pyiceberg's SQL catalog on a SQLite file or a PostgreSQL
database, the tables a view publishes, the positions their snapshots record, and a DuckDB
connection that reads them (its ``iceberg`` extension loaded offline, by path, from the
``duckdb-extension-iceberg`` package, as :mod:`syncline.views.ducklake.lake` does for DuckLake).

Every snapshot syncline commits records the view's checkpoint in its summary
(``syncline.view``, ``syncline.seq``, ``syncline.lsn``, ``syncline.log``). pyiceberg commits
one table at a time, so the tables of one batch are separate commits; the batch's last
commit is the row of ``_syncline.positions``: a reader that takes that table's position
``P`` and, of every other table, the newest snapshot at or before ``P`` sees one source
position across all tables (:func:`consistent_read`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from syncline.core.errors import ConfigError
from syncline.core.events import Checkpoint
from syncline.views.duckdb.session import open_duckdb

# a catalog is a SQLite file or a PostgreSQL DSN, as DuckLake's: the same rules and words
from syncline.views.ducklake.lake import describe as describe
from syncline.views.ducklake.lake import exists as exists
from syncline.views.ducklake.lake import is_postgres_catalog as is_postgres_catalog

NAME = "syncline"
"""The catalog name pyiceberg's SQL catalog files every table under."""
META = "_syncline"
"""The namespace of the bookkeeping table ``positions``."""
POSITIONS = (META, "positions")

VIEW, SEQ, LSN, LOG = "syncline.view", "syncline.seq", "syncline.lsn", "syncline.log"
OID, RELATION = "syncline.oid", "syncline.relation"
"""Table properties: the source table's oid and its relation (columns, key) as JSON."""


def default_warehouse(catalog: str) -> str:
    """Where data files go when ``warehouse`` is not given: beside a SQLite catalog."""
    if is_postgres_catalog(catalog):
        raise ConfigError("option 'warehouse' is required with a PostgreSQL catalog")
    return os.path.abspath(catalog) + ".files"


def sqlalchemy_url(catalog: str) -> Any:
    """The catalog as a SQLAlchemy URL (psycopg 3 for PostgreSQL; a key=value DSN parsed)."""
    from sqlalchemy.engine import URL, make_url

    if not is_postgres_catalog(catalog):
        return make_url(f"sqlite:///{os.path.abspath(catalog)}")
    from psycopg.conninfo import conninfo_to_dict

    parts = {k: str(v) for k, v in conninfo_to_dict(catalog).items() if v is not None}
    port = parts.pop("port", None)
    return URL.create(
        "postgresql+psycopg",
        username=parts.pop("user", None),
        password=parts.pop("password", None),
        host=parts.pop("host", None),
        port=int(port) if port else None,
        database=parts.pop("dbname", None),
        query=parts,
    )


def open_catalog(catalog: str, warehouse: str) -> Any:
    """pyiceberg's SQL catalog (its tables created when missing)."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not is_postgres_catalog(catalog):
        os.makedirs(os.path.dirname(os.path.abspath(catalog)) or ".", exist_ok=True)
    os.makedirs(warehouse, exist_ok=True)
    url = sqlalchemy_url(catalog)
    cat = SqlCatalog(
        NAME,
        uri=url.render_as_string(hide_password=False),
        warehouse=f"file://{os.path.abspath(warehouse)}",
    )
    if is_postgres_catalog(catalog):
        # no pool: a connection per catalog operation, closed after it (a pooled one would
        # stay open until the catalog object is collected)
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        cat.engine.dispose()
        cat.engine = create_engine(url, poolclass=NullPool)
    return cat


def scrub(text: str, catalog: str) -> str:
    from syncline.views.ducklake.lake import scrub as ducklake_scrub

    out = ducklake_scrub(text, catalog)
    if is_postgres_catalog(catalog):
        url = sqlalchemy_url(catalog)
        if url.password:
            out = out.replace(str(url.password), "***")
        out = out.replace(url.render_as_string(hide_password=False), url.render_as_string())
    return out


# --------------------------------------------------------------------------- positions


def summary(view: str, cp: Checkpoint) -> dict[str, str]:
    """What a snapshot syncline commits records: the view and its checkpoint."""
    return {VIEW: view, SEQ: str(cp.seq), LSN: str(cp.commit_lsn), LOG: cp.log}


def summary_checkpoint(props: dict[str, str], view: str) -> Checkpoint | None:
    """The checkpoint a snapshot summary (or table properties) records for ``view``."""
    if props.get(VIEW) != view or SEQ not in props:
        return None
    return Checkpoint.stored(int(props[SEQ]), int(props[LSN]), props.get(LOG) or "")


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of ``_syncline.positions``: one batch the view committed."""

    id: int
    time: str
    checkpoint: Checkpoint


def _time(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table_snapshots(table: Any, view: str) -> list[Snapshot]:
    """The retained snapshots of ``table`` that record a position of ``view``, oldest first
    (of several with one position, the last: a commit may hold several snapshots).

    A snapshot that another writer committed after one of the view's (no position in its
    summary: someone wrote the table behind syncline's back) stands for that position: it
    is what readers saw there, so ``verify`` finds its rows and ``--at`` answers with them."""
    out: dict[int, Snapshot] = {}
    last: Checkpoint | None = None
    for s in sorted(table.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms)):
        props = dict(s.summary.additional_properties) if s.summary else {}
        cp = summary_checkpoint(props, view) or (last if VIEW not in props else None)
        if cp is not None:
            out[cp.seq] = Snapshot(int(s.snapshot_id), _time(int(s.timestamp_ms)), cp)
            last = cp
    return sorted(out.values(), key=lambda s: s.checkpoint.seq)


def batches(cat: Any, view: str) -> list[Snapshot]:
    """The batches ``view`` committed that the warehouse retains (snapshots of
    ``_syncline.positions``), oldest first."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = cat.load_table(POSITIONS)
    except NoSuchTableError:
        return []
    return table_snapshots(table, view)


def view_tables(cat: Any, view: str) -> list[Any]:
    """The tables ``view`` publishes (by their ``syncline.view`` property)."""
    out = []
    todo = [tuple(ns) for ns in cat.list_namespaces()]
    seen: set[tuple[str, ...]] = set()
    while todo:  # a schema named "a.b" is the nested namespace (a, b) to the SQL catalog
        ns = todo.pop()
        if ns in seen or ns == (META,):
            continue
        seen.add(ns)
        todo += [tuple(n) for n in cat.list_namespaces(ns) if tuple(n) != ns]
        for ident in cat.list_tables(ns):
            t = cat.load_table(ident)
            if t.properties.get(VIEW) == view:
                out.append(t)
    return out


def source_name(t: Any) -> tuple[str, str]:
    """The source (schema, table) an Iceberg table of the view holds: from its relation
    property (a dotted schema name comes back from the catalog split in parts)."""
    rel = t.properties.get(RELATION)
    if rel:
        got = json.loads(rel)
        return str(got["schema"]), str(got["name"])
    name = tuple(t.name())
    return ".".join(name[:-1]), name[-1]


def extension_connection() -> Any:
    """An in-memory DuckDB connection with the ``iceberg`` extension loaded offline."""
    from syncline.views.ducklake.lake import extension_path

    con = open_duckdb(offline=True)
    try:
        for name in ("avro", "iceberg"):  # iceberg needs avro (its manifests) loaded first
            path = extension_path(name, f"duckdb_extension_{name}").replace("'", "''")
            con.execute(f"LOAD '{path}'")
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


@dataclass(frozen=True)
class Read:
    """What :func:`consistent_read` chose: the batch, and per table the snapshot."""

    batch: Snapshot | None
    tables: dict[tuple[str, str], tuple[Any, int | None]]
    """(schema, name) -> (pyiceberg table, snapshot id or None for an empty table)."""


def consistent_read(cat: Any, view: str, at_lsn: int | None = None) -> Read:
    """Per table, the snapshot that holds one batch's source position: the newest batch
    (or the newest at or before ``at_lsn``), and of each table its newest snapshot at or
    before that batch. ``at_lsn`` outside the retained batches is one QueryError."""
    from syncline.views.ducklake.query import pick_snapshot

    got = batches(cat, view)
    if at_lsn is not None:
        batch: Snapshot | None = pick_snapshot(view, got, at_lsn)
    else:
        batch = got[-1] if got else None
    tables: dict[tuple[str, str], tuple[Any, int | None]] = {}
    for t in view_tables(cat, view):
        ident = source_name(t)
        snaps = table_snapshots(t, view)
        if batch is None:
            cur = t.current_snapshot()
            tables[ident] = (t, None if cur is None else int(cur.snapshot_id))
            continue
        seq, log = batch.checkpoint.seq, batch.checkpoint.log
        fit = [s for s in snaps if s.checkpoint.seq <= seq and s.checkpoint.log == log]
        if fit:
            tables[ident] = (t, fit[-1].id)
        elif snaps and all(s.checkpoint.seq > seq for s in snaps if s.checkpoint.log == log):
            continue  # created after that batch
        else:
            cur = t.current_snapshot()
            tables[ident] = (t, None if cur is None else int(cur.snapshot_id))
    return Read(batch, tables)


def reading_connection(cat: Any, view: str, at_lsn: int | None = None) -> tuple[Any, Read]:
    """An in-memory DuckDB connection where every table of ``view`` is a view over
    ``iceberg_scan`` at the snapshot :func:`consistent_read` chose, and
    ``_syncline.relations`` holds the source relations (the DuckDB view's reader runs on it)."""
    import duckdb

    from syncline.views.duckdb.values import quote_ident

    read = consistent_read(cat, view, at_lsn)
    con = extension_connection()
    try:
        con.execute(f"CREATE SCHEMA {META}")
        con.execute(f"CREATE TABLE {META}.relations (view VARCHAR, oid BIGINT, relation JSON)")
        for (schema, name), (t, snap) in sorted(read.tables.items()):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            target = f"{quote_ident(schema)}.{quote_ident(name)}"
            loc = str(t.metadata_location).replace("'", "''")
            if snap is None:
                cols = ", ".join(
                    f"NULL::{_duck_type(f.field_type)} AS {quote_ident(f.name)}" for f in t.schema().fields
                )
                con.execute(f"CREATE VIEW {target} AS SELECT {cols} WHERE false")
            else:
                try:
                    scan = f"iceberg_scan('{loc}', snapshot_from_id => {snap})"
                    con.execute(f"CREATE VIEW {target} AS SELECT * FROM {scan}")  # noqa: S608
                except duckdb.IOException:
                    if name in {tuple(i)[-1] for i in cat.list_tables((schema,))}:
                        raise  # still in the catalogue: its files are missing
                    continue  # dropped (its files deleted) since the tables were listed
            rel = t.properties.get(RELATION)
            if rel:
                con.execute(
                    f"INSERT INTO {META}.relations VALUES (?, ?, ?)",  # noqa: S608
                    [view, int(t.properties.get(OID, 0)), rel],
                )
    except BaseException:
        con.close()
        raise
    return con, read


def _duck_type(t: Any) -> str:
    from pyiceberg.types import ListType

    if isinstance(t, ListType):
        return _duck_type(t.element_type) + "[]"
    simple = {
        "boolean": "BOOLEAN",
        "int": "INTEGER",
        "long": "BIGINT",
        "float": "FLOAT",
        "double": "DOUBLE",
        "date": "DATE",
        "time": "TIME",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "string": "VARCHAR",
        "binary": "BLOB",
        "uuid": "UUID",
    }
    text = str(t)
    if text in simple:
        return simple[text]
    if text.startswith("decimal"):
        return text.upper()
    return "VARCHAR"
