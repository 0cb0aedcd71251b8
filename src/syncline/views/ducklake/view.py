"""The DuckLake view: the DuckDB view's tables and types, kept in a DuckLake (Parquet data
files plus a catalog in SQLite or PostgreSQL) that other processes read while it is written.

It is the DuckDB view (:mod:`syncline.views.duckdb.view`) on another store:

* one batch is one DuckLake transaction holding the batch's data and its checkpoint, so it
  becomes one lake snapshot; readers see whole batches, so whole source transactions;
* the snapshot's ``author`` is ``syncline`` and its extra info the view's checkpoint
  (:func:`~syncline.views.ducklake.lake.position_info`), which is how ``syncline sql --at``
  finds the snapshot that held a source position;
* DuckLake has no PRIMARY KEY: the view's row of ``_syncline.positions`` is deleted and
  inserted again;
* a column's type changes by a copy of the table that takes its place (DuckLake itself
  only widens types);
* intervals are stored as PostgreSQL's text (VARCHAR): Parquet's INTERVAL holds neither
  negative parts nor microseconds;
* between batches, at most once per ``maintenance_interval``, snapshots older than
  ``retention`` expire, small files merge and files no snapshot needs are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from dataclasses import replace
from typing import Any

import duckdb

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import Checkpoint, Column, Relation
from syncline.views.base import Batch
from syncline.views.duckdb.values import TEXT, Mapping, map_column
from syncline.views.duckdb.view import DuckdbView, table_sql
from syncline.views.ducklake import lake
from syncline.views.options import secret_text

log = logging.getLogger(__name__)


class DucklakeView(DuckdbView):
    kind = "ducklake"

    def __init__(self, cfg: ViewConfig) -> None:
        catalog = secret_text(cfg.options.get("catalog"))
        if not catalog:
            raise ConfigError(f"view {cfg.name!r} (ducklake): option 'catalog' is required")
        self.catalog = catalog
        self.data_path = str(cfg.options.get("data_path") or default_data_path(catalog))
        self.retention = float(cfg.options.get("retention", 86400.0))  # type: ignore[arg-type]
        self.maintenance_interval = float(cfg.options.get("maintenance_interval", 300.0))  # type: ignore[arg-type]
        self._maintained = time.monotonic()
        super().__init__(replace(cfg, options={**cfg.options, "path": self.data_path}))

    # ------------------------------------------------------------------ the store

    def open(self) -> Checkpoint:
        cp = super().open()
        others = self._run(
            "SELECT DISTINCT view FROM _syncline.positions WHERE view <> ? ORDER BY 1", [self.name]
        ).fetchall()
        if others:
            self.close()
            raise ViewError(
                f"view {self.name!r}: the lake ({lake.describe(self.catalog)}) holds the tables of view "
                f"{others[0][0]!r} (another pipeline's, or this view under another name): one view "
                "per lake. Give this view a catalog of its own",
                action="give the view a catalog (and data_path) of its own",
            )
        return cp

    @property
    def store_text(self) -> str:
        return f"DuckLake ({lake.describe(self.catalog)}, data {self.data_path})"

    def _connect(self) -> Any:
        return lake.connect(self.catalog, self.data_path, read_only=False)

    def _read_only(self) -> Any:
        if not lake.exists(self.catalog):
            return None
        return lake.connect(self.catalog, self.data_path, read_only=True)

    positions_columns = "view VARCHAR, seq BIGINT, commit_lsn BIGINT, log_id VARCHAR DEFAULT ''"

    def _write_position(self, cp: Checkpoint) -> None:
        self._run("DELETE FROM _syncline.positions WHERE view = ?", [self.name])
        self._run(
            "INSERT INTO _syncline.positions (view, seq, commit_lsn, log_id) VALUES (?, ?, ?, ?)",
            [self.name, cp.seq, cp.commit_lsn, cp.log],
        )
        self._run(
            f"CALL {lake.LAKE}.set_commit_message(?, ?, extra_info => ?)",
            [lake.AUTHOR, f"view {self.name}", lake.position_info(self.name, cp)],
        )

    def _map(self, col: Column) -> Mapping:
        m = map_column(col)
        if m.kind == "interval" or (m.element is not None and m.element.kind == "interval"):
            return TEXT  # Parquet's INTERVAL holds neither negative parts nor microseconds
        return m

    def _fresh(self, schema: str, name: str) -> None:
        """Nothing: a DuckLake transaction may alter a table after deleting its rows
        (``test_rows_deleted_then_the_table_altered_in_one_batch`` runs on both kinds)."""

    def _set_type(self, rel: Relation, column: str, sql_type: str, using: str) -> None:
        # a copy of the table, not DuckLake's ALTER: it only widens types, and with DuckLake
        # 1.5.5 a BIGINT inserted after a widening in the same transaction was stored wrong;
        # an added, filled, dropped and renamed column broke its catalog
        self._rewrite(rel.schema, rel.name, {column: f"CAST(({using}) AS {sql_type})"})

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        """A catalog that is busy (another process holds its lock, a concurrent commit
        conflicted) is retried: the next attempt applies the batch again from the log."""
        err = super()._error(e, batch)
        if not isinstance(err, TransientViewError) and isinstance(e, duckdb.Error) and _busy(e):
            return TransientViewError(str(err))
        return err

    # ------------------------------------------------------------------ syncline rebuild

    def begin_rebuild(self) -> None:
        """``syncline rebuild``: one lake transaction that empties the view's tables and
        forgets its position; the batches that follow (``commit = False``) refill it and
        :meth:`finish_rebuild` commits, so readers see the old rows until one snapshot
        holds the new ones."""
        with self._lock:
            self._ensure_open()
            self._changed.clear()
            self._run("BEGIN TRANSACTION")
            self._in_txn = True
            try:
                for rel in list(self._rels.values()):
                    self._run(f"DELETE FROM {table_sql(rel.schema, rel.name)}")  # noqa: S608
                self._run("DELETE FROM _syncline.positions WHERE view = ?", [self.name])
            except duckdb.Error:
                self._in_txn = False
                self._abort()
                raise
            self._stored = Checkpoint()

    def finish_rebuild(self, checkpoint: Checkpoint) -> None:
        """Commit the rebuild's transaction with ``checkpoint``."""
        self.apply(Batch([], {}, checkpoint, 0, commit=True))

    # ------------------------------------------------------------------ maintenance

    def _commit(self, batch: Batch) -> None:
        super()._commit(batch)
        if time.monotonic() - self._maintained >= self.maintenance_interval:
            self.maintain()

    def maintain(self) -> None:
        """Expire snapshots older than ``retention``, merge small files, delete files no
        snapshot needs (each its own transaction; a failure is logged and retried later)."""
        self._maintained = time.monotonic()
        try:
            expire = self._expired()
        except duckdb.Error as e:
            log.warning("view %s: lake maintenance failed (retried later): %s", self.name, e)
            return
        steps = (
            f"SELECT count(*) FROM ducklake_flush_inlined_data('{lake.LAKE}')",  # noqa: S608
            f"SELECT count(*) FROM ducklake_expire_snapshots('{lake.LAKE}', versions => {expire})"  # noqa: S608
            if expire
            else "SELECT 0",
            f"SELECT count(*) FROM ducklake_merge_adjacent_files('{lake.LAKE}')",  # noqa: S608
            f"SELECT count(*) FROM ducklake_cleanup_old_files('{lake.LAKE}', cleanup_all => true)",  # noqa: S608
        )
        counts = []
        for sql in steps:
            try:
                row = self._run(sql).fetchone()
            except duckdb.Error as e:
                log.warning("view %s: lake maintenance step failed (retried later): %s", self.name, e)
                with contextlib.suppress(duckdb.Error):
                    self._run("ROLLBACK")
                return
            counts.append(int(row[0]) if row else 0)
        log.info(
            "view %s: lake maintenance done in %.1fs: inlined rows of %d tables flushed to Parquet, "
            "%d snapshots expired, %d merges, %d files deleted",
            self.name,
            time.monotonic() - self._maintained,
            *counts,
        )

    def _expired(self) -> list[int]:
        """The snapshots older than ``retention``, except the lake's current one and the
        view's newest batch (its position: what ``--at`` and ``status`` show after an idle
        spell). Chosen here by id: DuckLake 1.5.5's ``older_than`` on a SQLite catalog
        expired every snapshot of the same day."""
        rows = self._run(
            f"SELECT snapshot_id, snapshot_time, author = ? FROM {lake.LAKE}.snapshots() "  # noqa: S608
            "ORDER BY snapshot_id",
            [lake.AUTHOR],
        ).fetchall()
        if not rows:
            return []
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention)
        keep = {rows[-1][0]} | {max((r[0] for r in rows if r[2]), default=rows[-1][0])}
        return [int(sid) for sid, at, _ in rows if sid not in keep and at.astimezone(dt.UTC) < cutoff]


def _busy(e: BaseException) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("database is locked", "busy", "conflict", "could not serialize"))


def default_data_path(catalog: str) -> str:
    """Where data files go when ``data_path`` is not given: beside a SQLite catalog
    (``CATALOG.files``); a PostgreSQL catalog needs ``data_path``."""
    if lake.is_postgres_catalog(catalog):
        raise ConfigError("option 'data_path' is required with a PostgreSQL catalog")
    return os.path.abspath(catalog) + ".files"
