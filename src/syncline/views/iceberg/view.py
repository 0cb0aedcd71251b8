"""The Iceberg view: the DuckDB view's tables and types, published as Apache Iceberg tables
(Parquet data files, pyiceberg's SQL catalog on SQLite or PostgreSQL) that DuckDB, pyiceberg,
Spark or Trino read while ``syncline run`` writes them.

How a batch reaches Iceberg:

* The view keeps a **working copy**: the DuckDB view itself, in a private file under the
  warehouse (``_syncline/VIEW.duckdb``). It applies the batch exactly as the DuckDB view does
  (types, TOAST, lossless fallbacks to text, schema changes, tables without a key) and
  remembers which tables changed and, for a table with a key, which keys.
* **Copy-on-write upserts.** Before the working copy commits, each changed table is
  published in one Iceberg commit: the data files holding a changed key are rewritten
  without it (pyiceberg's delete, filtered on the key's first column) and the current rows
  of those keys, read from the working copy, are appended. Equality deletes were the other
  choice: pyiceberg writes none, and every reader would pay for them on every scan until a
  compaction; copy-on-write costs the writer instead, once per batch, which suits a view
  that is read more than written. A table that changed shape, was truncated, has no key,
  or changed in more than half of its rows is written whole (one overwrite).
* **The position in every snapshot.** The commit's last snapshot records the view's
  checkpoint in its summary (``syncline.seq``/``lsn``/``log``), and the table's properties
  repeat it with the source relation. pyiceberg commits one table at a time, so a batch
  that changes several tables is several commits: the last one of every batch is
  ``_syncline.positions``. A reader that takes that position and, of every table, the newest
  snapshot at or before it (:func:`~syncline.views.iceberg.lake.consistent_read`, which
  ``verify`` and ``sql`` use) sees one source position across tables; a reader of each
  table's current snapshot sees every table at a whole-transaction boundary, but two tables
  may be one batch apart.
* **Crash safety.** Iceberg is published before the working copy commits its checkpoint.
  After a crash in between, the batch is applied again from the log; a table whose
  properties already hold a position at or past the batch is not published again, and one
  published again gets the same rows for the same keys: once in effect.
* **Maintenance** between batches, at most once per ``maintenance_interval``: snapshots older
  than ``retention`` expire, a table with ``compact_files`` or more data files is rewritten
  into one, and data and manifest files no retained snapshot needs are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import Checkpoint, Column, Relation
from syncline.views.base import Batch
from syncline.views.duckdb.values import TEXT, Mapping, map_column, quote_ident
from syncline.views.duckdb.view import DuckdbView, relation_to_json, table_sql
from syncline.views.iceberg import lake
from syncline.views.netting import TableDelta
from syncline.views.options import secret_text

log = logging.getLogger(__name__)

_KEYS = "__syncline_keys"
WHOLE = None
"""A table to publish whole (instead of a set of keys)."""
TABLE_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


class IcebergView(DuckdbView):
    kind = "iceberg"

    def __init__(self, cfg: ViewConfig) -> None:
        catalog = secret_text(cfg.options.get("catalog"))
        if not catalog:
            raise ConfigError(f"view {cfg.name!r} (iceberg): option 'catalog' is required")
        self.catalog_text = catalog
        from syncline.views.iceberg import warehouse_of

        self.warehouse = warehouse_of(cfg)[1]
        self.retention = float(cfg.options.get("retention", 86400.0))  # type: ignore[arg-type]
        self.maintenance_interval = float(cfg.options.get("maintenance_interval", 300.0))  # type: ignore[arg-type]
        self.compact_files = int(cfg.options.get("compact_files", 16))  # type: ignore[call-overload]
        self._maintained = time.monotonic()
        self._cat: Any = None
        self._touched: dict[int, set[Any] | None] = {}
        """Per table (oid) changed in the open transaction: the first key column's values
        (PostgreSQL text), or WHOLE."""
        self._drops: set[tuple[str, str]] = set()
        self._rebuilding = False
        self._republish = False
        self.healed = 0
        """Tables written again whole after a commit left a wrong row count (0 expected)."""
        state = os.path.join(self.warehouse, lake.META, f"{cfg.name}.duckdb")
        super().__init__(replace(cfg, options={**cfg.options, "path": state}))

    # ------------------------------------------------------------------ the store

    @property
    def store_text(self) -> str:
        return f"Iceberg warehouse ({lake.describe(self.catalog_text)}, data {self.warehouse})"

    def open(self) -> Checkpoint:
        # the catalog's owner first: a refused view leaves nothing in another's warehouse
        others = self._other_views()
        if others:
            self._cat = None
            raise ViewError(
                f"view {self.name!r}: the Iceberg catalog ({lake.describe(self.catalog_text)}) holds the "
                f"tables of view {others[0]!r} (another pipeline's, or this view under another name): "
                "one view per catalog. Give this view a catalog of its own",
                action="give the view a catalog (and warehouse) of its own",
            )
        cp = super().open()
        if cp.seq and not self._catalog().table_exists(lake.POSITIONS):
            # the catalog was emptied (or replaced) under a working copy that has applied
            # batches: the next batch publishes every table whole
            log.warning(
                "view %s: the Iceberg catalog holds none of this view's batches but its working copy "
                "is at log record %d: every table is published again with the next batch",
                self.name,
                cp.seq,
            )
            self._republish = True
        return cp

    def close(self) -> None:
        super().close()
        self._cat = None

    def _catalog(self) -> Any:
        if self._cat is None:
            try:
                self._cat = lake.open_catalog(self.catalog_text, self.warehouse)
                self._cat.create_namespace_if_not_exists((lake.META,))
            except Exception as e:
                raise self._classified(f"cannot open {self.store_text}", e) from None
        return self._cat

    def _classified(self, what: str, e: BaseException) -> ViewError:
        text = lake.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, self.catalog_text)
        cls = TransientViewError if _transient(e) else ViewError
        return cls(f"view {self.name!r}: {what}: {text}")

    def _other_views(self) -> list[str]:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            t = self._catalog().load_table(lake.POSITIONS)
        except NoSuchTableError:
            return []
        owner = t.properties.get(lake.VIEW)
        return [owner] if owner and owner != self.name else []

    def _map(self, col: Column) -> Mapping:
        m = map_column(col)
        if m.kind == "interval" or (m.element is not None and m.element.kind == "interval"):
            return TEXT  # Iceberg has no interval type
        return m

    def _adapt_columns(
        self, rel: Relation, maps: list[Mapping], values: list[list[Any]], target: str
    ) -> tuple[list[Mapping], dict[int, list[Any]]]:
        """The DuckDB view's lossless fallbacks, and one more: Iceberg's dates and timestamps
        hold no infinity, so a column that meets one becomes PostgreSQL's text."""
        infinite = [
            i
            for i, m in enumerate(maps)
            if m.kind in ("date", "timestamp", "timestamptz")
            and any(isinstance(v, str) and v.endswith("infinity") for v in values[i])
        ]
        if infinite:
            self._fresh(rel.schema, rel.name)
            for i in infinite:
                self._column_to_text(rel, i, maps[i], target, "Iceberg holds no infinite dates or timestamps")
            self._types[rel.oid] = self._load_types(rel)
            maps = self._mappings(rel)
        return super()._adapt_columns(rel, maps, values, target)

    # ------------------------------------------------------------------ what changed

    def _begin(self, batch: Batch) -> bool:
        self._touched.clear()
        self._drops.clear()
        if self._republish:
            self._touched.update(dict.fromkeys(self._rels, WHOLE))
        return super()._begin(batch)

    def _on_delta(self, td: TableDelta) -> None:
        super()._on_delta(td)
        oid = td.relation.oid
        if oid in self._touched and self._touched[oid] is WHOLE:
            return
        kidx = td.relation.key_indexes()
        if td.ops or not kidx:
            self._touched[oid] = WHOLE
            return
        keys = self._touched.setdefault(oid, set())
        assert keys is not None
        k0 = kidx[0]
        keys.update(k[0] for k in td.deletes())
        keys.update(r[k0] for r in td.upserts())
        for r, origin in td.partials():
            keys.add(r[k0])
            keys.add(origin[0])

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        cur = self._rels.get(rel.oid)
        super()._truncate_table(rel, dropped)
        if cur is None:
            return
        if dropped and not self.keep_dropped:
            self._drops.add((cur.schema, cur.name))
            self._touched.pop(rel.oid, None)
        else:
            self._touched[rel.oid] = WHOLE

    def _ensure_table(self, new: Relation) -> None:
        old = self._rels.get(new.oid)
        for oid, r in self._rels.items():
            if oid != new.oid and (r.schema, r.name) == (new.schema, new.name):
                self._touched.pop(oid, None)
        super()._ensure_table(new)
        if old is not None and (old.schema, old.name) != (new.schema, new.name):
            self._drops.add((old.schema, old.name))
        self._drops.discard((new.schema, new.name))
        self._touched[new.oid] = WHOLE

    def _set_type(self, rel: Relation, column: str, sql_type: str, using: str) -> None:
        super()._set_type(rel, column, sql_type, using)
        self._whole(rel.schema, rel.name)

    def _rewrite(self, schema: str, name: str, exprs: dict[str, str], join: str = "") -> None:
        super()._rewrite(schema, name, exprs, join)
        if exprs:
            self._whole(schema, name)

    def _whole(self, schema: str, name: str) -> None:
        for oid, r in self._rels.items():
            if (r.schema, r.name) == (schema, name):
                self._touched[oid] = WHOLE

    def _abort(self) -> None:
        self._touched.clear()
        self._drops.clear()
        super()._abort()

    # ------------------------------------------------------------------ publishing

    def _commit(self, batch: Batch) -> None:
        cp = batch.checkpoint
        self._at("-")
        try:
            with _quiet():
                for ident in sorted(self._drops):
                    self._drop(ident)
                for oid in sorted(
                    self._touched, key=lambda o: self._rels[o].qualified if o in self._rels else ""
                ):
                    rel = self._rels.get(oid)
                    if rel is not None:
                        self._at(rel.qualified)
                        self._publish(rel, self._touched[oid], cp)
                self._at("-")
                self._publish_position(cp)
        except (ViewError, TransientViewError):
            raise
        except Exception as e:
            text = lake.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, self.catalog_text)
            raise _PublishError(f"cannot publish to Iceberg: {text}", _transient(e)) from e
        self._touched.clear()
        self._drops.clear()
        self._rebuilding = self._republish = False
        super()._commit(batch)
        if time.monotonic() - self._maintained >= self.maintenance_interval:
            self.maintain()

    def _published(self, props: dict[str, str], cp: Checkpoint) -> bool:
        """Whether a table's properties show it published at or past ``cp`` (a crash
        between Iceberg's commits and the working copy's)."""
        got = lake.summary_checkpoint(props, self.name)
        return not self._rebuilding and got is not None and got.log == cp.log and got.seq >= cp.seq

    def _drop(self, ident: tuple[str, str]) -> None:
        import shutil

        from pyiceberg.exceptions import NoSuchTableError

        cat = self._catalog()
        try:
            t = cat.load_table(ident)
        except NoSuchTableError:
            return
        if t.properties.get(lake.VIEW) != self.name:
            return
        location = str(t.location())
        cat.drop_table(ident)
        if location.startswith("file://"):
            shutil.rmtree(location[len("file://") :], ignore_errors=True)

    def _arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        got = self._require().execute(sql, params).to_arrow_table()
        return got if isinstance(got, pa.Table) else got.read_all()

    def _table(self, rel: Relation, schema: pa.Schema) -> tuple[Any, Any]:
        """The Iceberg table of ``rel`` and a transaction on it; a missing table is created
        in that transaction (with its first rows: readers never see it empty), the table
        then None."""
        from pyiceberg.exceptions import NoSuchTableError

        cat = self._catalog()
        ident = (rel.schema, rel.name)
        try:
            t = cat.load_table(ident)
        except NoSuchTableError:
            t = None
        if t is not None and t.properties.get(lake.OID) != str(rel.oid):
            # another source table of that name (dropped and created again) or a stray one
            if t.properties.get(lake.VIEW) not in (None, self.name):
                raise ViewError(
                    f"view {self.name!r}: table {rel.qualified} in the Iceberg catalog belongs to view "
                    f"{t.properties.get(lake.VIEW)!r}: one view per catalog"
                )
            self._drop(ident)
            t = None
        if t is None:
            cat.create_namespace_if_not_exists((rel.schema,))
            txn = cat.create_table_transaction(
                ident,
                schema=schema,
                location=f"file://{os.path.join(self.warehouse, _dir(rel.schema), _dir(rel.name))}",
                properties={**TABLE_PROPERTIES, lake.VIEW: self.name, lake.OID: str(rel.oid)},
            )
            return None, txn
        return t, t.transaction()

    def _publish(self, rel: Relation, keys: set[Any] | None, cp: Checkpoint) -> None:
        target = table_sql(rel.schema, rel.name)
        schema = self._arrow(f"SELECT * FROM {target} LIMIT 0").schema  # noqa: S608
        t, txn = self._table(rel, schema)
        if t is not None and self._published(dict(t.properties), cp):
            return
        summary = lake.summary(self.name, cp)
        props = {**summary, lake.RELATION: relation_to_json(rel)}
        whole = t is None or _evolve(txn, t.schema(), schema)
        got = self._run(f"SELECT count(*) FROM {target}").fetchone()  # noqa: S608
        total = int(got[0]) if got else 0
        k0 = rel.key_indexes()[0] if rel.key_indexes() else -1
        if whole or keys is None or k0 < 0 or self._map(rel.columns[k0]).kind == "list":
            self._overwrite(txn, target, summary)
        else:
            self._upsert(txn, t, rel, k0, keys, summary, total)
        txn.set_properties(props)
        self._check_count(txn.commit_transaction(), rel, summary, total)

    def _overwrite(self, txn: Any, target: str, summary: dict[str, str]) -> None:
        """The whole table from the working copy, in ``txn``."""
        txn.overwrite(self._arrow(f"SELECT * FROM {target}"), snapshot_properties=summary)  # noqa: S608

    def _check_count(self, t: Any, rel: Relation, summary: dict[str, str], want: int) -> None:
        """After a table's commit, its row count must be the working copy's (``want``): a
        copy-on-write delete that missed rows would leave an old version beside the new one.
        Should that ever happen, the table is overwritten from the working copy at once
        (and logged)."""
        cur = t.current_snapshot()
        held = int(cur.summary.get("total-records", "-1") or -1) if cur is not None else 0
        if held == want:
            return
        self.healed += 1
        log.error(
            "view %s: table %s holds %d rows in Iceberg after its commit, its working copy %d: "
            "written again whole",
            self.name,
            rel.qualified,
            held,
            want,
        )
        txn = t.transaction()
        self._overwrite(txn, table_sql(rel.schema, rel.name), summary)
        txn.commit_transaction()

    def _upsert(
        self,
        txn: Any,
        t: Any,
        rel: Relation,
        k0: int,
        keys: set[Any],
        summary: dict[str, str],
        total: int,
    ) -> None:
        """Copy-on-write: delete the changed keys (the key's first column) and append their
        current rows; the whole table when they are more than half of it.

        Many keys of an ordered type are deleted as at most ``RANGES`` ranges instead, cut at
        the widest gaps between them (the rows of the working copy in those ranges appended
        again): pyiceberg turns every
        literal of an ``IN`` into an object, which costs more than the rows a range adds
        (the data files holding those keys are rewritten either way)."""
        from pyiceberg.expressions import And, GreaterThanOrEqual, In, LessThanOrEqual, Or, Reference

        target = table_sql(rel.schema, rel.name)
        q = quote_ident(rel.columns[k0].name)
        typed = self._typed_keys(rel, k0, keys)
        ranged = len(typed) > RANGE_FROM and _orderable(typed.type)
        self._require().register(_KEYS, pa.table({"k": typed}))
        try:
            if ranged:
                # cut the sorted keys at their RANGES - 1 widest gaps
                bounds = self._run(
                    "WITH s AS (SELECT k, k - lag(k) OVER (ORDER BY k) AS g "  # noqa: S608
                    f"FROM (SELECT DISTINCT k FROM {_KEYS})), "
                    f"c AS (SELECT k FROM s WHERE g IS NOT NULL ORDER BY g DESC LIMIT {RANGES - 1}), "
                    "r AS (SELECT k, sum(CASE WHEN k IN (SELECT k FROM c) THEN 1 ELSE 0 END) "
                    "OVER (ORDER BY k) AS grp FROM s) "
                    "SELECT min(k), max(k) FROM r GROUP BY grp ORDER BY 1"
                ).fetchall()
                ranges = pa.table(
                    {
                        "lo": pa.array([b[0] for b in bounds], typed.type),
                        "hi": pa.array([b[1] for b in bounds], typed.type),
                    }
                )
                self._require().unregister(_KEYS)
                self._require().register(_KEYS, ranges)
                sql = f"SELECT t.* FROM {target} t JOIN {_KEYS} r ON t.{q} BETWEEN r.lo AND r.hi"  # noqa: S608
            else:
                sql = f"SELECT * FROM {target} WHERE {q} IN (SELECT k FROM {_KEYS})"  # noqa: S608
            rows = self._arrow(sql)
        finally:
            self._require().unregister(_KEYS)
        if 2 * max(len(typed), len(rows)) > total:
            self._overwrite(txn, target, summary)
            return
        current = t.current_snapshot()
        stored = current is not None and int(current.summary.get("total-records", "1") or 1) > 0
        if stored and len(typed):
            ref = Reference(rel.columns[k0].name)
            if ranged:
                parts: list[Any] = [
                    And(GreaterThanOrEqual(ref, lo), LessThanOrEqual(ref, hi))  # type: ignore[call-arg]
                    for lo, hi in zip(
                        ranges.column("lo").to_pylist(), ranges.column("hi").to_pylist(), strict=True
                    )
                ]
                match: Any = parts[0] if len(parts) == 1 else Or(*parts)
            else:
                match = In(ref, typed.to_pylist())  # type: ignore[call-arg]  # pydantic's signature
            # the position on the delete's snapshot too: a snapshot without one is another
            # writer's (lake.table_snapshots), which readers must see
            txn.delete(match, snapshot_properties=summary)
        if len(rows) or not stored:
            txn.append(rows, snapshot_properties=summary)

    def _typed_keys(self, rel: Relation, k0: int, texts: set[Any]) -> pa.Array:
        """The key column's values as the working copy stores them (as Arrow)."""
        from syncline.views.duckdb.view import _arrow_type, _from_stage

        col = rel.columns[k0]
        m = self._mappings(rel)[k0]
        vals = self._convert([v for v in texts if v is not None], m, col)
        self._stage(_KEYS, {"k": (vals, _arrow_type(m))})
        try:
            got = self._arrow(f"SELECT DISTINCT {_from_stage('k', m)} AS k FROM {_KEYS}")  # noqa: S608
        finally:
            self._require().unregister(_KEYS)
        return got.column("k").combine_chunks()

    def _publish_position(self, cp: Checkpoint) -> None:
        from pyiceberg.exceptions import NoSuchTableError

        cat = self._catalog()
        row = pa.table(
            {
                "view": pa.array([self.name], pa.string()),
                "seq": pa.array([cp.seq], pa.int64()),
                "commit_lsn": pa.array([cp.commit_lsn], pa.int64()),
                "log_id": pa.array([cp.log], pa.string()),
            }
        )
        try:
            t = cat.load_table(lake.POSITIONS)
        except NoSuchTableError:
            t = cat.create_table(
                lake.POSITIONS, schema=row.schema, properties={**TABLE_PROPERTIES, lake.VIEW: self.name}
            )
        txn = t.transaction()
        txn.overwrite(row, snapshot_properties=lake.summary(self.name, cp))
        txn.set_properties(lake.summary(self.name, cp))
        txn.commit_transaction()

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        err = super()._error(e, batch)
        if not isinstance(err, TransientViewError) and (
            e.transient if isinstance(e, _PublishError) else _transient(e)
        ):
            return TransientViewError(lake.scrub(str(err), self.catalog_text))
        if isinstance(err, ViewError):
            err.args = (lake.scrub(str(err), self.catalog_text),)
        return err

    def _hide_cause(self, e: Exception) -> bool:
        return lake.is_postgres_catalog(self.catalog_text)

    # ------------------------------------------------------------------ syncline rebuild

    def begin_rebuild(self) -> None:
        """``syncline rebuild``: one working-copy transaction that empties the tables and
        forgets the position; the refill (``commit = False`` batches) ends in
        :meth:`finish_rebuild`, which publishes every table whole, each in one commit."""
        import duckdb

        with self._lock:
            self._ensure_open()
            self._changed.clear()
            self._touched.clear()
            self._drops.clear()
            self._run("BEGIN TRANSACTION")
            self._in_txn = True
            try:
                for oid, rel in list(self._rels.items()):
                    self._run(f"DELETE FROM {table_sql(rel.schema, rel.name)}")  # noqa: S608
                    self._touched[oid] = WHOLE
                self._run("DELETE FROM _syncline.positions WHERE view = ?", [self.name])
            except duckdb.Error:
                self._in_txn = False
                self._abort()
                raise
            self._stored = Checkpoint()
            self._rebuilding = True

    def finish_rebuild(self, checkpoint: Checkpoint) -> None:
        self.apply(Batch([], {}, checkpoint, 0, commit=True))

    # ------------------------------------------------------------------ maintenance

    def maintain(self) -> None:
        """Expire batches older than ``retention`` (and of each table the snapshots no
        retained batch needs), compact tables with ``compact_files`` or more data files,
        delete files no retained snapshot needs. A failure is logged and retried at the
        next run."""
        self._maintained = time.monotonic()
        expired = compacted = deleted = 0
        try:
            cat = self._catalog()
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention)
            # the batches first (snapshots of _syncline.positions, by age); then of every
            # table, the snapshots before its newest one at or before the oldest kept batch:
            # each retained batch keeps every table's state at its position
            oldest: Checkpoint | None = None
            if cat.table_exists(lake.POSITIONS):
                pos = cat.load_table(lake.POSITIONS)
                before = len(pos.snapshots())
                pos.maintenance.expire_snapshots().older_than(cutoff).commit()
                pos = cat.load_table(lake.POSITIONS)
                expired += before - len(pos.snapshots())
                deleted += _delete_unreferenced(pos)
                kept = lake.table_snapshots(pos, self.name)
                oldest = kept[0].checkpoint if kept else None
            for t in lake.view_tables(cat, self.name):
                with _quiet():
                    compacted += self._compact(t)
                t = cat.load_table(t.name())
                old = _before_batch(t, self.name, oldest)
                if old:
                    t.maintenance.expire_snapshots().by_ids(old).commit()
                    t = cat.load_table(t.name())
                    expired += len(old)
                deleted += _delete_unreferenced(t)
        except Exception as e:
            log.warning(
                "view %s: Iceberg maintenance failed (retried later): %s",
                self.name,
                lake.scrub(str(e), self.catalog_text),
            )
            return
        log.info(
            "view %s: Iceberg maintenance done in %.1fs: %d tables compacted, %d snapshots expired, "
            "%d files deleted",
            self.name,
            time.monotonic() - self._maintained,
            compacted,
            expired,
            deleted,
        )

    def _compact(self, t: Any) -> int:
        """Rewrite a table with ``compact_files`` or more data files into one (a snapshot
        that records the same position as the current one)."""
        cur = t.current_snapshot()
        if cur is None or int(cur.summary.get("total-data-files", "0") or 0) < self.compact_files:
            return 0
        props = {
            k: v for k, v in dict(t.properties).items() if k in (lake.VIEW, lake.SEQ, lake.LSN, lake.LOG)
        }
        t.overwrite(t.scan().to_arrow(), snapshot_properties=props)
        return 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pyiceberg warns when an overwrite or delete finds no row (an empty table): expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        yield


class _PublishError(Exception):
    """Publishing a batch to Iceberg failed (message scrubbed of catalog secrets)."""

    def __init__(self, text: str, transient: bool) -> None:
        super().__init__(text)
        self.transient = transient


def _evolve(txn: Any, current: Any, schema: pa.Schema) -> bool:
    """Make the table's schema (``current``) hold ``schema``'s columns, names and types, in
    the transaction ``txn``; True when a column was added, dropped or changed (the table is
    then written whole). A changed type is a dropped and added column (Iceberg promotes
    only a few types in place)."""
    from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow

    want: Any = visit_pyarrow(schema, _ConvertToIcebergWithoutIDs())
    have = {f.name: str(f.field_type) for f in current.fields}
    wanted = {f.name: str(f.field_type) for f in want.fields}
    if have == wanted:
        return False
    gone = [n for n in have if n not in wanted or have[n] != wanted[n]]
    if gone:
        with txn.update_schema(allow_incompatible_changes=True) as us:
            for n in gone:
                us.delete_column(n)
    with txn.update_schema() as us:
        for f in want.fields:
            if f.name not in have or f.name in gone:
                us.add_column(f.name, f.field_type)
    order = [f.name for f in want.fields]
    if [n for n in have if n in wanted and n not in gone] + [
        n for n in order if n not in have or n in gone
    ] != order:
        with txn.update_schema() as us:  # the source's column order (an added column went last)
            us.move_first(order[0])
            for prev, name in itertools.pairwise(order):
                us.move_after(name, prev)
    return True


def _before_batch(t: Any, view: str, oldest: Checkpoint | None) -> list[int]:
    """The ids of ``t``'s snapshots older than its newest one at or before the batch
    ``oldest`` (none when no snapshot of it is at or before that batch, or no batch)."""
    if oldest is None:
        return []
    snaps = sorted(t.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms))
    keep = -1
    for i, s in enumerate(snaps):
        cp = lake.summary_checkpoint(dict(s.summary.additional_properties) if s.summary else {}, view)
        if cp is not None and (cp.log != oldest.log or cp.seq <= oldest.seq):  # another log: older
            keep = i
    return [int(s.snapshot_id) for s in snaps[: max(keep, 0)]]


RANGE_FROM = 256
"""From this many changed keys, a copy-on-write deletes ranges of keys (``RANGES`` at most)."""
RANGES = 32


def _orderable(t: pa.DataType) -> bool:
    """Key types whose order is the same in DuckDB and in pyiceberg's filters."""
    return bool(
        pa.types.is_integer(t) or pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_decimal(t)
    )


def _delete_unreferenced(t: Any) -> int:
    """Delete the table's data and manifest files that no retained snapshot references."""
    location = str(t.location())
    if not location.startswith("file://"):
        return 0
    root = location[len("file://") :]
    keep: set[str] = set()
    for s in t.snapshots():
        keep.add(_path(s.manifest_list))
        for m in s.manifests(t.io):
            keep.add(_path(m.manifest_path))
            for entry in m.fetch_manifest_entry(t.io, discard_deleted=True):
                keep.add(_path(entry.data_file.file_path))
    deleted = 0
    for sub, pattern in (("data", ".parquet"), ("metadata", ".avro")):
        for dirpath, _dirs, files in os.walk(os.path.join(root, sub)):
            for f in files:
                p = os.path.join(dirpath, f)
                if f.endswith(pattern) and p not in keep:
                    with contextlib.suppress(OSError):
                        os.remove(p)
                        deleted += 1
    return deleted


def _dir(name: str) -> str:
    """A directory name for a schema or table name: letters, digits, ``_``, ``-`` and ``.``
    kept (not a leading ``.``: ``..`` would be the parent directory), anything else as ``~``
    and its code point (readers parse some characters in paths)."""
    return re.sub(r"^\.|[^A-Za-z0-9_.-]", lambda m: f"~{ord(m.group()):x}", name)


def _path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _transient(e: BaseException) -> bool:
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(e, (CommitFailedException, OSError, TransientViewError)):
        return True
    text = str(e).lower()
    return any(
        w in text for w in ("database is locked", "could not connect", "connection refused", "timeout")
    )
