"""The DuckDB warehouse view: typed tables ``schema.table``, one DuckDB transaction per batch.

Design (DuckDB speeds measured on the build machine: Arrow-staged bulk inserts 80-160k
rows/s; INSERT OR REPLACE / MERGE 17-22k rows/s; row-by-row executemany ~400 rows/s):

* data tables have no PRIMARY KEY constraint (the ART index makes delete + re-insert of a
  key in one transaction slow and fragile); key uniqueness is maintained by the view;
* per table and batch, the net effect (:mod:`syncline.views.netting`) is applied set-wise:
  partial rows (unchanged TOAST values) are resolved in SQL against the stored row of their
  origin key into a temporary table; then every key that is deleted or gets a new row is
  deleted with one join against an Arrow staging table; then all new rows are inserted from
  Arrow staging with vectorised ``CAST``s from the PostgreSQL text (Python converts only
  what DuckDB cannot parse: BC years, intervals, bytea hex, array text);
* a DECIMAL or LIST column that meets a value it cannot hold losslessly (NaN, arrays of
  another dimensionality) is converted once to VARCHAR holding PostgreSQL's text;
* the rows of a batch are read with the view's own relations (the schema state at its
  stored checkpoint) for the tables it holds, ``batch.relations`` for others; the latter is
  advanced in place past the batch's schema changes, which the runtime relies on;
* bookkeeping lives in schema ``_syncline``: ``positions(view, seq, commit_lsn, log_id)`` and
  ``relations(view, oid, relation JSON)``, written in the same transaction as the data.

The type mapping is documented in :mod:`syncline.views.duckdb.values`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb
import pyarrow as pa

from syncline.core import codec
from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Relation,
    Row,
)
from syncline.core.patterns import table_selected
from syncline.core.renames import column_renames
from syncline.core.textcast import is_bpchar
from syncline.views.base import Batch, warn_missed
from syncline.views.duckdb.compare import select_expr, to_pg_text
from syncline.views.duckdb.session import open_duckdb
from syncline.views.duckdb.values import (
    DUCKDB_MAX_TIMESTAMP,
    TEXT,
    Mapping,
    beyond_duckdb_timestamp,
    converter,
    decimal_text,
    is_identity,
    list_depth,
    map_column,
    quote_ident,
    value_depth,
)
from syncline.views.netting import Key, KeylessOp, TableDelta, key_function
from syncline.views.skeleton import AppliedView

log = logging.getLogger(__name__)

META = "_syncline"
_STAGE = "__syncline_stage"
_PSTAGE = "__syncline_pstage"
_PARTIAL = "__syncline_partial"
_FRESH = "__syncline_fresh"


# --------------------------------------------------------------------------- relation JSON


def relation_to_json(rel: Relation) -> str:
    return codec.relation_to_json(rel).decode()


def relation_from_json(doc: str | bytes) -> Relation:
    return codec.relation_from_json(doc)


# --------------------------------------------------------------------------- helpers


def table_sql(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def _arrow_type(m: Mapping) -> pa.DataType:
    if m.kind == "list":
        assert m.element is not None
        t = _arrow_type(m.element)
        for _ in range(m.depth):
            t = pa.list_(t)
        return t
    if m.kind == "blob":
        return pa.large_binary()
    return pa.large_string()


def _from_stage(expr: str, m: Mapping) -> str:
    return expr if m.kind == "text" else f"CAST({expr} AS {m.sql})"


def _list_text_reason(values: Sequence[Any], element: Mapping) -> str | None:
    """Why array texts cannot be stored as lists of ``element`` losslessly (None: they can)."""
    numeric = element.kind == "decimal"
    stamps = element.kind in ("timestamp", "timestamptz")
    for v in values:
        if not isinstance(v, str):
            continue
        if v.startswith("["):
            return "array lower bounds other than 1"
        if numeric and "NaN" in v:
            return "NaN cannot be stored in DECIMAL"
        if stamps and beyond_duckdb_timestamp(v):
            return f"a value after {DUCKDB_MAX_TIMESTAMP} (DuckDB's limit)"
    return None


def _is_lock_error(e: BaseException) -> bool:
    text = str(e).lower()
    return "lock" in text or "conflicting" in text


class _Rows:
    """A fully fetched result (DuckDB wants every result consumed before the next call)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


class _Failure(Exception):
    """An error of ours inside apply (message already specific)."""


P = ParamSpec("P")
T = TypeVar("T")


def _locked(fn: Callable[Concatenate[DuckdbView, P], T]) -> Callable[Concatenate[DuckdbView, P], T]:
    def wrapper(self: DuckdbView, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return fn(self, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class DuckdbView(AppliedView):
    kind = "duckdb"

    def __init__(self, cfg: ViewConfig) -> None:
        path = cfg.options.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"view {cfg.name!r} (duckdb): option 'path' (a file) is required")
        super().__init__(cfg.name)
        self.path = path
        self.patterns = tuple(cfg.tables)
        self.keep_dropped = bool(cfg.options.get("keep_dropped_tables", False))
        self._conn: Any = None
        self._rels: dict[int, Relation] = {}
        self._stored: Checkpoint | None = None
        """The checkpoint the file holds, as this process last committed or read it (one
        process writes a DuckDB file; every write of the position is :meth:`_commit`)."""
        self._types: dict[int, dict[str, str]] = {}
        self._changed: set[tuple[str, str]] = set()
        """Tables (schema, name) with rows deleted or updated in the open transaction."""

    # ------------------------------------------------------------------ lifecycle

    @_locked
    def open(self) -> Checkpoint:
        if self._conn is None:
            d = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(d, exist_ok=True)
                self._stored = None
                self._conn = self._connect()
            except duckdb.Error as e:
                cls = TransientViewError if _is_lock_error(e) else ViewError
                raise cls(f"view {self.name!r}: cannot open {self.store_text}: {e}") from e
            except OSError as e:
                raise TransientViewError(f"view {self.name!r}: cannot open {self.store_text}: {e}") from e
            with contextlib.suppress(duckdb.Error):
                self._run("SET TimeZone = 'UTC'")
            self._run(f"CREATE SCHEMA IF NOT EXISTS {META}")
            self._run(f"CREATE TABLE IF NOT EXISTS {META}.positions ({self.positions_columns})")
            # a file written before logs had ids
            self._run(f"ALTER TABLE {META}.positions ADD COLUMN IF NOT EXISTS log_id VARCHAR DEFAULT ''")
            self._run(
                f"CREATE TABLE IF NOT EXISTS {META}.relations (view VARCHAR, oid BIGINT, relation JSON)"
            )
            self._in_txn = False
            self._load_relations()
        return self._stored_checkpoint()

    @_locked
    def close(self) -> None:
        if self._conn is not None:
            try:
                if self._in_txn:
                    self._conn.execute("ROLLBACK")
            except duckdb.Error:
                pass
            finally:
                self._conn.close()
                self._conn = None
                self._in_txn = False
                self._stored = None

    def relations(self) -> dict[int, Relation]:
        return dict(self._rels)

    @_locked
    def read_checkpoint(self) -> Checkpoint | None:
        """The stored checkpoint; None when another process holds the file (DuckDB allows
        one writing process and no concurrent readers)."""
        if self._conn is not None:
            return self._stored_checkpoint()
        try:
            c = self._read_only()
        except duckdb.Error:
            return None
        if c is None:
            return Checkpoint()
        try:
            row = c.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? "
                "AND database_name = current_database()",
                [META, "positions"],
            ).fetchone()
            if not row or not row[0]:
                return Checkpoint()
            return _position(c, self.name)
        finally:
            c.close()

    @_locked
    def count_rows(self, qualified: str) -> int:
        for r in self._rels.values():
            if r.qualified == qualified:
                schema, name = r.schema, r.name
                break
        else:
            schema, _, name = qualified.partition(".")
        row = self._run(f"SELECT count(*) FROM {table_sql(schema, name)}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def table_types(self, oid: int) -> dict[str, str]:
        """Actual DuckDB column types of a tracked table, by column name."""
        return dict(self._types.get(oid, {}))

    @property
    def connection(self) -> Any:
        """The open DuckDB connection (for verification and tests)."""
        return self._require()

    # ------------------------------------------------------------------ apply

    # The skeleton is AppliedView.apply. The relations the batch's rows are read with are the
    # view's own (stored with its checkpoint, so they are the schema state at the view's
    # position) and, for tables the view does not hold, ``batch.relations``.

    transient_errors = (duckdb.IOException, OSError)

    def _ensure_open(self) -> None:
        if self._conn is None:
            self.open()

    def _applied(self) -> Checkpoint:
        return self._stored_checkpoint()

    def _begin(self, batch: Batch) -> bool:
        self._changed.clear()
        self._run("BEGIN TRANSACTION")
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return {**batch.relations, **self._rels}

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        self._ensure_table(new)

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        if rel.oid not in self._rels or (dropped and self.keep_dropped):
            return
        cur = self._rels[rel.oid]
        if dropped:
            self._run(f"DROP TABLE IF EXISTS {table_sql(cur.schema, cur.name)}")
            self._forget(rel.oid)
        else:
            self._run(f"DELETE FROM {table_sql(cur.schema, cur.name)}")  # noqa: S608
            self._changed.add((cur.schema, cur.name))

    def _commit(self, batch: Batch) -> None:
        cp = batch.checkpoint
        self._write_position(cp)
        self._stored = None
        self._run("COMMIT")
        self._stored = Checkpoint.stored(cp.seq, cp.commit_lsn, cp.log)

    # ------------------------------------------------------------------ what a subclass changes

    positions_columns = "view VARCHAR PRIMARY KEY, seq BIGINT, commit_lsn BIGINT, log_id VARCHAR DEFAULT ''"
    """The columns of ``_syncline.positions``."""

    @property
    def store_text(self) -> str:
        """The store in words, for errors."""
        return f"DuckDB file {self.path}"

    def _connect(self) -> Any:
        """A new connection to the store, for writing."""
        return open_duckdb(self.path)

    def _read_only(self) -> Any:
        """A new read-only connection to the store; None when the store does not exist yet."""
        if not os.path.exists(self.path):
            return None
        return open_duckdb(self.path, read_only=True)

    def _write_position(self, cp: Checkpoint) -> None:
        """Write the batch's checkpoint (inside its transaction)."""
        self._run(
            "INSERT INTO _syncline.positions (view, seq, commit_lsn, log_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (view) DO UPDATE SET seq = excluded.seq, commit_lsn = excluded.commit_lsn, "
            "log_id = excluded.log_id",
            [self.name, cp.seq, cp.commit_lsn, cp.log],
        )

    def _fresh(self, schema: str, name: str) -> None:
        """Before an ALTER of a table: DuckDB 1.x cannot commit a transaction that deleted or
        updated a table's rows and then altered it ("another transaction has altered this
        table"), so such a table is first copied into a new one that takes its place (a
        table created in the transaction may be altered). Row ids change."""
        if (schema, name) in self._changed:
            self._rewrite(schema, name, {})

    def _rewrite(self, schema: str, name: str, exprs: dict[str, str], join: str = "") -> None:
        """Replace a table by a copy of its rows (same column order), the columns named in
        ``exprs`` computed by their expression over ``t`` (the table) and ``join``."""
        target = table_sql(schema, name)
        fresh = table_sql(schema, _FRESH)
        cols = [str(r[0]) for r in self._run(f"DESCRIBE SELECT * FROM {target}").fetchall()]  # noqa: S608
        proj = ", ".join(
            f"{exprs[c]} AS {quote_ident(c)}" if c in exprs else f"t.{quote_ident(c)}" for c in cols
        )
        self._run(f"DROP TABLE IF EXISTS {fresh}")
        self._run(f"CREATE TABLE {fresh} AS SELECT {proj} FROM {target} t {join}")  # noqa: S608
        self._run(f"DROP TABLE {target}")
        self._run(f"ALTER TABLE {fresh} RENAME TO {quote_ident(name)}")
        self._changed.discard((schema, name))

    def _map(self, col: Column) -> Mapping:
        """How ``col`` is stored (before its values say otherwise)."""
        return map_column(col)

    def _set_type(self, rel: Relation, column: str, sql_type: str, using: str) -> None:
        """Change ``column``'s type to ``sql_type``, its values computed by ``using``."""
        target, q = table_sql(rel.schema, rel.name), quote_ident(column)
        self._run(f"ALTER TABLE {target} ALTER COLUMN {q} SET DATA TYPE {sql_type} USING {using}")

    def _stored_seq(self) -> str:
        try:
            return str(self._stored_checkpoint().seq)
        except Exception:
            return "?"

    # ------------------------------------------------------------------ internals

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> _Rows:
        cur = self._require().execute(sql, params)
        return _Rows(cur.fetchall())

    def _require(self) -> Any:
        if self._conn is None:
            raise ViewError(f"view {self.name!r}: not open")
        return self._conn

    def _stored_checkpoint(self) -> Checkpoint:
        if self._stored is None:
            self._stored = _position(self._require(), self.name)
        return self._stored

    def _abort(self) -> None:
        self._stored = None
        c = self._conn
        if c is None:
            return
        with contextlib.suppress(duckdb.Error):
            self._run("ROLLBACK")
        try:
            self._load_relations()
        except duckdb.Error:
            # the database is unusable (fatal error): reconnect on next use
            with contextlib.suppress(duckdb.Error):
                c.close()
            self._conn = None
            self._rels.clear()
            self._types.clear()

    def _load_relations(self) -> None:
        self._rels = {}
        self._types = {}
        for oid, doc in self._run(
            "SELECT oid, relation FROM _syncline.relations WHERE view = ?", [self.name]
        ).fetchall():
            rel = relation_from_json(doc)
            self._rels[int(oid)] = rel
            self._types[int(oid)] = self._load_types(rel)

    def _load_types(self, rel: Relation) -> dict[str, str]:
        rows = (
            self._require()
            .execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = ? AND table_name = ? AND database_name = current_database()",
                [rel.schema, rel.name],
            )
            .fetchall()
        )
        return {str(n): str(t) for n, t in rows}

    def _wanted(self, rel: Relation) -> bool:
        return table_selected(self.patterns, rel.qualified)

    def _store_relation(self, rel: Relation) -> None:
        self._run("DELETE FROM _syncline.relations WHERE view = ? AND oid = ?", [self.name, rel.oid])
        self._run(
            "INSERT INTO _syncline.relations VALUES (?, ?, ?)",
            [self.name, rel.oid, relation_to_json(rel)],
        )
        self._rels[rel.oid] = rel
        self._types[rel.oid] = self._load_types(rel)

    def _forget(self, oid: int) -> None:
        self._run("DELETE FROM _syncline.relations WHERE view = ? AND oid = ?", [self.name, oid])
        self._rels.pop(oid, None)
        self._types.pop(oid, None)

    # ------------------------------------------------------------------ DDL

    def _ensure_table(self, new: Relation) -> None:
        old = self._rels.get(new.oid)
        target = table_sql(new.schema, new.name)
        same_name = (new.schema, new.name)
        if old is None or (old.schema, old.name) != same_name:
            # another tracked oid with the target name: a dropped and re-created source table
            for oid, r in list(self._rels.items()):
                if oid != new.oid and (r.schema, r.name) == same_name:
                    self._forget(oid)
            self._run(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(new.schema)}")
        if old is None:
            self._run(f"DROP TABLE IF EXISTS {target}")
            cols = ", ".join(f"{quote_ident(col.name)} {self._map(col).sql}" for col in new.columns)
            self._run(f"CREATE TABLE {target} ({cols})")
            self._store_relation(new)
            return
        self._fresh(old.schema, old.name)
        if (old.schema, old.name) != same_name:
            self._run(f"DROP TABLE IF EXISTS {target}")
            src = table_sql(old.schema, old.name)
            if old.schema == new.schema:
                self._run(f"ALTER TABLE {src} RENAME TO {quote_ident(new.name)}")
            else:
                self._run(f"CREATE TABLE {target} AS SELECT * FROM {src}")  # noqa: S608
                self._run(f"DROP TABLE {src}")
        self._alter_columns(old, new, target)
        self._store_relation(new)

    def _alter_columns(self, old: Relation, new: Relation, target: str) -> None:
        old_by_name = {col.name: (i, col) for i, col in enumerate(old.columns)}
        new_names = {col.name for col in new.columns}
        renamed = column_renames(old.columns, new.columns)
        was = {n: o for o, n in renamed.items()}
        for col in old.columns:
            if col.name not in new_names and col.name not in renamed:
                self._run(f"ALTER TABLE {target} DROP COLUMN {quote_ident(col.name)}")
        for o, n in renamed.items():
            self._run(f"ALTER TABLE {target} RENAME COLUMN {quote_ident(o)} TO {quote_ident(n)}")
        types = self._types.get(old.oid, {})
        for col in new.columns:
            q = quote_ident(col.name)
            name = was.get(col.name, col.name)  # its name in ``old``
            if name in old_by_name:
                before = self._map(old_by_name[name][1])
                after = self._map(col)
                if before.sql != after.sql:  # renamed and retyped between two changes too
                    self._alter_type(new, col.name, before, after, types.get(name))
            else:
                self._run(f"ALTER TABLE {target} ADD COLUMN {q} {self._map(col).sql}")

    def _alter_type(
        self, rel: Relation, column: str, before: Mapping, after: Mapping, actual: str | None
    ) -> None:
        """Follow a source column type change; values that do not convert become NULL."""
        q = quote_ident(column)
        if actual == "VARCHAR" and before.kind in ("decimal", "list"):
            # converted to text (NaN, mixed array dimensionality): stays text
            if after.kind == "decimal":
                render = decimal_text(f"TRY_CAST({q} AS {after.sql})")
                self._set_type(rel, column, "VARCHAR", f"CASE WHEN {q} = 'NaN' THEN {q} ELSE {render} END")
                return
            if after.kind in ("list", "text"):
                return
        elif after.kind == "list" and actual is not None and list_depth(actual) > 1:
            after = after.with_depth(list_depth(actual))
        self._set_type(rel, column, after.sql, f"TRY_CAST({q} AS {after.sql})")

    # ------------------------------------------------------------------ DML

    def _mappings(self, rel: Relation) -> list[Mapping]:
        """Each column's mapping as actually stored: array depth from the column type, and
        VARCHAR (PostgreSQL text as is) for a column converted to text."""
        types = self._types.get(rel.oid, {})
        out = []
        for col in rel.columns:
            m = self._map(col)
            actual = types.get(col.name)
            if actual is not None and m.kind != "text":
                if m.kind == "list":
                    depth = list_depth(actual)
                    m = m.with_depth(depth) if depth else TEXT
                elif actual == "VARCHAR":
                    m = TEXT
            out.append(m)
        return out

    def _convert(self, values: Sequence[Any], m: Mapping, col: Column) -> list[Any]:
        if m.kind == "text" and is_bpchar(col):
            # store what ``col::text`` gives (trailing blanks cut), as the snapshot reads it,
            # so that ``WHERE c = 'English'`` finds the row as it does in PostgreSQL
            return [v.rstrip(" ") if isinstance(v, str) else v for v in values]
        if is_identity(m):
            return list(values)
        conv = converter(m)
        try:
            return [None if v is None else conv(v) for v in values]
        except ValueError as e:
            raise _Failure(f"column {col.name} ({col.type_name}): {e}") from e

    def _stage(self, name: str, columns: dict[str, tuple[list[Any], pa.DataType]]) -> None:
        table = pa.table({k: pa.array(v, type=t) for k, (v, t) in columns.items()})
        c = self._require()
        with contextlib.suppress(duckdb.Error):
            c.unregister(name)
        c.register(name, table)

    def _adapt_columns(
        self,
        rel: Relation,
        maps: list[Mapping],
        values: list[list[Any]],
        target: str,
    ) -> tuple[list[Mapping], dict[int, list[Any]]]:
        """Make every column able to hold the batch's values losslessly.

        ``values``: per column, the PostgreSQL text of every value the batch stages. An array
        column takes the dimensionality of its first non-empty values; a DECIMAL column or
        an array column that meets a value it cannot represent (NaN, arrays of another
        dimensionality or with lower bounds other than 1, NaN elements of numeric arrays)
        becomes VARCHAR holding PostgreSQL's text, its stored values re-rendered.

        Returns the mappings to stage with and, per array column that stays a list, its
        values already converted."""
        done: dict[int, list[Any]] = {}
        to_text: list[tuple[int, str]] = []
        redepth: list[tuple[int, int]] = []
        for i, m in enumerate(maps):
            vals = values[i]
            if m.kind == "decimal":
                if "NaN" in vals:
                    to_text.append((i, "NaN cannot be stored in DECIMAL"))
                continue
            if m.kind in ("timestamp", "timestamptz"):
                if any(isinstance(v, str) and beyond_duckdb_timestamp(v) for v in vals):
                    to_text.append((i, f"a value after {DUCKDB_MAX_TIMESTAMP} (DuckDB's limit)"))
                continue
            if m.kind != "list":
                continue
            assert m.element is not None
            reason = _list_text_reason(vals, m.element)
            if reason is not None:
                to_text.append((i, reason))
                continue
            conv = self._convert(vals, m, rel.columns[i])
            depths = {value_depth(v) for v in conv if v}
            depths.discard(0)
            done[i] = conv
            if not depths or depths == {m.depth}:
                continue
            if len(depths) > 1:
                to_text.append((i, f"arrays of different dimensionality {sorted(depths)}"))
                continue
            (d,) = depths
            q = quote_ident(rel.columns[i].name)
            row = self._run(f"SELECT count(*) FROM {target} WHERE len({q}) > 0").fetchone()  # noqa: S608
            if row and row[0]:
                to_text.append((i, f"{d}-dimensional arrays where {m.depth}-dimensional ones are stored"))
            else:
                redepth.append((i, d))
        if not to_text and not redepth:
            return maps, done
        self._fresh(rel.schema, rel.name)
        for i, d in redepth:
            new = maps[i].with_depth(d)
            q = quote_ident(rel.columns[i].name)
            self._set_type(
                rel,
                rel.columns[i].name,
                new.sql,
                f"CASE WHEN {q} IS NULL THEN NULL ELSE CAST([] AS {new.sql}) END",
            )
        for i, reason in to_text:
            done.pop(i, None)
            self._column_to_text(rel, i, maps[i], target, reason)
        self._types[rel.oid] = self._load_types(rel)
        return self._mappings(rel), done

    def _column_to_text(self, rel: Relation, i: int, m: Mapping, target: str, reason: str) -> None:
        """Convert a DECIMAL or LIST column to VARCHAR holding each stored value's PostgreSQL
        text (inside the batch's transaction)."""
        col = rel.columns[i]
        q = quote_ident(col.name)
        self._fresh(rel.schema, rel.name)
        if m.kind == "decimal":
            self._set_type(rel, col.name, "VARCHAR", decimal_text(q))
        else:
            # rendered in Python, exactly as verification reads them back
            actual = self._types.get(rel.oid, {}).get(col.name)
            got = self._run(
                f"SELECT rowid, {select_expr(col, q, actual)} FROM {target} WHERE {q} IS NOT NULL"  # noqa: S608
            ).fetchall()
            self._stage(
                _STAGE,
                {
                    "__syncline_r": ([r for r, _ in got], pa.int64()),
                    "__syncline_v": ([to_pg_text(v, col, cast=False) for _, v in got], pa.large_string()),
                },
            )
            # a copy of the table with the texts joined by row id (no ALTER after an UPDATE:
            # see _fresh)
            self._rewrite(
                rel.schema,
                rel.name,
                {col.name: "s.__syncline_v"},
                f"LEFT JOIN {_STAGE} s ON t.rowid = s.__syncline_r",
            )
            self._require().unregister(_STAGE)
        log.warning(
            "view %s: %s.%s (%s): %s; the column is now VARCHAR holding PostgreSQL's text "
            "(stored values converted)",
            self.name,
            rel.qualified,
            col.name,
            col.type_name,
            reason,
        )

    def _on_delta(self, td: TableDelta) -> None:
        rel = td.relation
        cur = self._rels.get(rel.oid)
        if cur is None or not cur.same_shape(rel):
            self._ensure_table(rel)
        c = self._require()
        target = table_sql(rel.schema, rel.name)
        if td.ops:
            self._apply_keyless(rel, td.ops, target)
            return
        kidx = rel.key_indexes()
        if not kidx:
            raise _Failure("table has no primary key or replica identity columns")
        ncols = len(rel.columns)
        full = td.upserts()
        partials = td.partials()
        deletes = td.deletes()

        # Convert text values column-wise (full rows first, then partial rows).
        prows: list[Row] = [r for r, _ in partials]
        all_rows: list[Row] = full + prows
        raw_cols: list[list[Any]] = (
            [list(col) for col in zip(*all_rows, strict=True)] if all_rows else [[] for _ in range(ncols)]
        )
        unchanged: list[list[bool]] = []
        if prows:
            for i in range(ncols):
                col_vals = raw_cols[i]
                flags = [v is UNCHANGED for v in col_vals[len(full) :]]
                unchanged.append(flags)
                if any(flags):
                    raw_cols[i] = [None if v is UNCHANGED else v for v in col_vals]
        # every value staged per column (key columns: also deleted keys and origin keys)
        staged = list(raw_cols)
        for j, ki in enumerate(kidx):
            extra = [k[j] for k in deletes] + [o[j] for _, o in partials]
            if extra:
                staged[ki] = staged[ki] + extra
        maps, done = self._adapt_columns(rel, self._mappings(rel), staged, target)
        converted = [
            done[i][: len(raw_cols[i])] if i in done else self._convert(raw_cols[i], maps[i], rel.columns[i])
            for i in range(ncols)
        ]
        names = [quote_ident(col.name) for col in rel.columns]
        nfull = len(full)

        # (1) partial rows: resolve UNCHANGED values from the stored row under the origin key
        if partials:
            cols: dict[str, tuple[list[Any], pa.DataType]] = {}
            for i in range(ncols):
                cols[f"c{i}"] = (converted[i][nfull:], _arrow_type(maps[i]))
                if any(unchanged[i]):
                    cols[f"u{i}"] = (unchanged[i], pa.bool_())
            kmaps = [maps[i] for i in kidx]
            origin_vals = [[o[j] for _, o in partials] for j in range(len(kidx))]
            for j, ki in enumerate(kidx):
                cols[f"o{j}"] = (
                    self._convert(origin_vals[j], kmaps[j], rel.columns[ki]),
                    _arrow_type(kmaps[j]),
                )
            self._stage(_PSTAGE, cols)
            sel = []
            for i in range(ncols):
                cast = _from_stage(f"s.c{i}", maps[i])
                if f"u{i}" in cols:
                    sel.append(f"CASE WHEN s.u{i} THEN t.{names[i]} ELSE {cast} END AS {names[i]}")
                else:
                    sel.append(f"{cast} AS {names[i]}")
            on = " AND ".join(
                f"t.{names[ki]} = {_from_stage(f's.o{j}', kmaps[j])}" for j, ki in enumerate(kidx)
            )
            found = f"(t.{names[kidx[0]]} IS NOT NULL) AS __syncline_found"
            self._run(
                f"CREATE OR REPLACE TEMP TABLE {_PARTIAL} AS SELECT {', '.join(sel)}, {found} "  # noqa: S608
                f"FROM {_PSTAGE} s LEFT JOIN {target} t ON {on}"
            )
            c.unregister(_PSTAGE)
            row = self._run(f"SELECT count(*) FROM {_PARTIAL} WHERE NOT __syncline_found").fetchone()  # noqa: S608
            if row and row[0]:
                log.warning(
                    "view %s: %s: %d updated rows with unchanged TOAST values have no stored "
                    "row; their unchanged columns are NULL",
                    self.name,
                    rel.qualified,
                    row[0],
                )

        # (2) delete every key that is deleted or gets a new (full or partial) row
        keys: list[Key] = list(deletes)
        if full or partials:
            keys += map(key_function(kidx), all_rows)
        if keys:
            row = self._run(f"SELECT EXISTS (SELECT 1 FROM {target})").fetchone()  # noqa: S608
            if row and row[0]:
                kcols: dict[str, tuple[list[Any], pa.DataType]] = {}
                for j, ki in enumerate(kidx):
                    vals = [k[j] for k in keys]
                    kcols[f"k{j}"] = (
                        self._convert(vals, maps[ki], rel.columns[ki]),
                        _arrow_type(maps[ki]),
                    )
                self._stage(_STAGE, kcols)
                proj = ", ".join(f"{_from_stage(f'k{j}', maps[ki])} AS k{j}" for j, ki in enumerate(kidx))
                on = " AND ".join(f"{target}.{names[ki]} = s.k{j}" for j, ki in enumerate(kidx))
                self._run(
                    f"DELETE FROM {target} USING (SELECT DISTINCT {proj} FROM {_STAGE}) s "  # noqa: S608
                    f"WHERE {on}"
                )
                self._changed.add((rel.schema, rel.name))
                c.unregister(_STAGE)

        # (3) insert full rows, then resolved partial rows
        if full:
            fcols = {f"c{i}": (converted[i][:nfull], _arrow_type(maps[i])) for i in range(ncols)}
            self._stage(_STAGE, fcols)
            proj = ", ".join(_from_stage(f"c{i}", maps[i]) for i in range(ncols))
            self._run(f"INSERT INTO {target} ({', '.join(names)}) SELECT {proj} FROM {_STAGE}")  # noqa: S608
            c.unregister(_STAGE)
        if partials:
            cl = ", ".join(names)
            self._run(f"INSERT INTO {target} ({cl}) SELECT {cl} FROM {_PARTIAL}")  # noqa: S608
            self._run(f"DROP TABLE {_PARTIAL}")

    def _apply_keyless(self, rel: Relation, ops: list[KeylessOp], target: str) -> None:
        """A table without a key, in order: every old and new row staged once (row ``n``),
        runs of inserts in one statement, an update or delete acting on one stored row
        equal to the old row (``rowid`` of the first match), as PostgreSQL's subscriber."""
        rows: list[Row] = []
        plan: list[tuple[str, int, int]] = []  # (op, index of old row, index of new row)
        for op in ops:
            o = n = -1
            if op.old is not None and op.op != "insert":
                o = len(rows)
                rows.append(op.old)
            if op.new is not None and op.op != "delete":
                n = len(rows)
                rows.append(op.new)
            plan.append((op.op, o, n))
        ncols = len(rel.columns)
        raw = [list(col) for col in zip(*rows, strict=True)]
        maps, done = self._adapt_columns(rel, self._mappings(rel), raw, target)
        cols: dict[str, tuple[list[Any], pa.DataType]] = {"n": (list(range(len(rows))), pa.int64())}
        for i in range(ncols):
            vals = done[i] if i in done else self._convert(raw[i], maps[i], rel.columns[i])
            cols[f"c{i}"] = (vals, _arrow_type(maps[i]))
        self._stage(_STAGE, cols)
        names = [quote_ident(col.name) for col in rel.columns]
        proj = ", ".join(_from_stage(f"s.c{i}", maps[i]) for i in range(ncols))
        same = " AND ".join(
            [f"t.{names[i]} IS NOT DISTINCT FROM {_from_stage(f's.c{i}', maps[i])}" for i in range(ncols)]
            or ["true"]
        )
        delete = (
            f"DELETE FROM {target} WHERE rowid = (SELECT t.rowid FROM {target} t "  # noqa: S608
            f"JOIN {_STAGE} s ON s.n = ? AND {same} LIMIT 1)"
        )
        insert = f"INSERT INTO {target} ({', '.join(names)}) SELECT {proj} FROM {_STAGE} s"  # noqa: S608
        pending: list[int] = []
        missed = 0

        def flush() -> None:
            if pending:
                self._run(f"{insert} WHERE s.n BETWEEN ? AND ? ORDER BY s.n", [pending[0], pending[-1]])
                pending.clear()

        for kind, o, n in plan:
            if kind != "insert":
                self._changed.add((rel.schema, rel.name))
                flush()
                got = self._run(delete, [o]).fetchone()
                if not got or not got[0]:
                    missed += 1
                    continue  # as PostgreSQL's subscriber: an update of a missing row is skipped
            if n >= 0:
                if pending and pending[-1] != n - 1:
                    flush()
                pending.append(n)
        flush()
        self._require().unregister(_STAGE)
        warn_missed(self.name, missed, rel)


__all__ = ["DuckdbView", "relation_from_json", "relation_to_json"]


def _position(conn: Any, view: str) -> Checkpoint:
    """The checkpoint stored for ``view`` (a file written before logs had ids has no
    ``log_id`` column)."""
    cur = conn.execute("SELECT * FROM _syncline.positions WHERE view = ?", [view])
    row = cur.fetchone()
    if row is None:
        return Checkpoint()
    got = dict(zip([d[0] for d in cur.description], row, strict=True))
    return Checkpoint.stored(got["seq"], got["commit_lsn"], got.get("log_id"))
