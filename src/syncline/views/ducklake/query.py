"""``syncline sql`` on the warehouse views: one read-only query, on the lake as it is now or
as it was at a source position (DuckLake, Iceberg), or on a DuckDB file (borrowed from
``run``'s worker).

A query is refused unless every statement in it only reads (``SELECT``, ``EXPLAIN``,
``DESCRIBE``/``SHOW``, ``PRAGMA`` that lists): no statement may attach, detach, set options
or write files, and the lake is attached read-only besides, so a reader never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncline.core.config_models import Config, ViewConfig
from syncline.core.errors import SynclineError
from syncline.sources.postgres.lsn import format_lsn
from syncline.verify.readers import option
from syncline.views.duckdb.session import open_duckdb


class QueryError(SynclineError):
    """A query ``syncline sql`` will not run, or a position it cannot answer at."""


READ_ONLY = frozenset({"SELECT", "EXPLAIN"})


@dataclass(frozen=True)
class Answer:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    note: str
    """Which state answered (the snapshot and its source position), for stderr."""
    position: str | None = None
    """The source position (``X/Y``) of the state that answered: the lake snapshot's or the
    Iceberg batch's; None for a duckdb view (no history) or a lake with no batch yet."""


def check_read_only(query: str) -> None:
    """One clear error unless every statement of ``query`` reads only."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise QueryError(f"cannot parse the query: {str(e).splitlines()[0]}") from None
    if not statements:
        raise QueryError("the query is empty")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1].upper()
        if kind not in READ_ONLY:
            raise QueryError(
                f"syncline sql runs queries that only read (SELECT, EXPLAIN); got a {kind} "
                "statement. A view is written only by `syncline run`"
            )


def run_query(cfg: Config, vcfg: ViewConfig, query: str, at_lsn: int | None) -> Answer:
    check_read_only(query)
    if vcfg.kind == "ducklake":
        con, note, pos = _open_lake(vcfg, at_lsn)
    elif vcfg.kind == "iceberg":
        con, note, pos = _open_iceberg(vcfg, at_lsn)
    elif vcfg.kind == "duckdb":
        if at_lsn is not None:
            raise QueryError(
                f"view {vcfg.name} (duckdb) keeps no history: --at needs a ducklake view "
                "(every batch a snapshot that records its position)"
            )
        from syncline.runtime.borrow import borrowed

        with borrowed(cfg, vcfg.name) as lent:  # `run`'s worker lets go of the file meanwhile
            columns, rows = _execute(_open_duckdb(vcfg), query)
        note = f"view {vcfg.name}'s worker let go of the file for this query" if lent else ""
        return Answer(columns, rows, note)
    else:
        raise QueryError(
            f"view {vcfg.name} ({vcfg.kind}) is not a warehouse: syncline sql reads ducklake, iceberg "
            "and duckdb views"
        )
    columns, rows = _execute(con, query)
    return Answer(columns, rows, note, None if pos is None else format_lsn(pos))


def _execute(con: Any, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` and close ``con``."""
    import duckdb

    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchall() if cur.description else []
    except duckdb.Error as e:
        raise QueryError(f"the query failed: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    return columns, rows


def _open_duckdb(vcfg: ViewConfig) -> Any:
    import duckdb

    path = option(vcfg, "path")
    try:
        return open_duckdb(path, read_only=True)
    except duckdb.Error as e:
        raise QueryError(
            f"view {vcfg.name} (duckdb): cannot open {path} ({str(e).splitlines()[0]}). DuckDB "
            "allows one process per file; a ducklake view can be queried while run writes it"
        ) from None


def _open_lake(vcfg: ViewConfig, at_lsn: int | None) -> tuple[Any, str, int | None]:
    import duckdb

    from syncline.views.ducklake import lake
    from syncline.views.ducklake.view import default_data_path

    catalog = option(vcfg, "catalog")
    data = option(vcfg, "data_path") or default_data_path(catalog)
    if not lake.exists(catalog):
        raise QueryError(
            f"view {vcfg.name} (ducklake): the lake ({lake.describe(catalog)}) does not exist yet"
        )
    try:
        con = lake.connect(catalog, data, read_only=True)
    except duckdb.Error as e:
        raise QueryError(
            f"view {vcfg.name} (ducklake): cannot open the lake ({str(e).splitlines()[0]})"
        ) from None
    try:
        snaps = lake.snapshots(con, vcfg.name)
    except duckdb.Error:
        con.close()
        raise
    if at_lsn is None:
        if not snaps:
            return con, "the lake as it is now (the view has committed no batch yet)", None
        last = snaps[-1]
        return (
            con,
            f"the lake now: snapshot {last.id} (source position {format_lsn(last.checkpoint.commit_lsn)})",
            last.checkpoint.commit_lsn,
        )
    con.close()
    snap = pick_snapshot(vcfg.name, snaps, at_lsn)
    try:
        got = lake.connect(catalog, data, read_only=True, snapshot=snap.id)
    except duckdb.Error as e:
        raise QueryError(
            f"view {vcfg.name} (ducklake): cannot open snapshot {snap.id} ({str(e).splitlines()[0]})"
        ) from None
    return (
        got,
        f"snapshot {snap.id} of {snap.time} UTC: the view at source position "
        f"{format_lsn(snap.checkpoint.commit_lsn)}, the newest batch at or before {format_lsn(at_lsn)}",
        snap.checkpoint.commit_lsn,
    )


def _open_iceberg(vcfg: ViewConfig, at_lsn: int | None) -> tuple[Any, str, int | None]:
    """An in-memory DuckDB whose tables read the Iceberg tables at one batch's position."""
    from syncline.views.iceberg import lake, warehouse_of

    catalog, warehouse = warehouse_of(vcfg)
    if not lake.exists(catalog):
        raise QueryError(
            f"view {vcfg.name} (iceberg): the catalog ({lake.describe(catalog)}) does not exist yet"
        )
    try:
        con, read = lake.reading_connection(lake.open_catalog(catalog, warehouse), vcfg.name, at_lsn)
    except QueryError:
        raise
    except Exception as e:
        text = lake.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, catalog)
        raise QueryError(f"view {vcfg.name} (iceberg): cannot read the warehouse ({text})") from None
    b = read.batch
    if b is None:
        return con, "the warehouse as it is now (the view has committed no batch yet)", None
    when = "now: " if at_lsn is None else ""
    after = "" if at_lsn is None else f", the newest batch at or before {format_lsn(at_lsn)}"
    return (
        con,
        f"the warehouse {when}batch of {b.time} UTC: every table at source position "
        f"{format_lsn(b.checkpoint.commit_lsn)}{after}",
        b.checkpoint.commit_lsn,
    )


def pick_snapshot(view: str, snaps: list[Any], at_lsn: int) -> Any:
    """The newest retained snapshot whose position is at or before ``at_lsn``; one clear error
    when ``at_lsn`` is before the oldest retained one or after the newest."""
    if not snaps:
        raise QueryError(f"view {view}: the lake holds no snapshot of the view yet")
    first, last = snaps[0], snaps[-1]
    if at_lsn < first.checkpoint.commit_lsn:
        raise QueryError(
            f"view {view}: {format_lsn(at_lsn)} is before the retained snapshots (the oldest, "
            f"{first.id} of {first.time} UTC, is at {format_lsn(first.checkpoint.commit_lsn)}; "
            "the view's retention option sets how long snapshots are kept)"
        )
    if at_lsn > last.checkpoint.commit_lsn:
        raise QueryError(
            f"view {view}: {format_lsn(at_lsn)} is after the newest position the view has "
            f"applied ({format_lsn(last.checkpoint.commit_lsn)}): run `syncline wait --lsn "
            f"{format_lsn(at_lsn)} --view {view}` first"
        )
    best = first
    for s in snaps:
        if s.checkpoint.commit_lsn <= at_lsn:
            best = s
    return best
