"""The ``postgres`` view: a SQL replica with the source's schema.table names, columns, types
and primary keys.

Each batch is one target transaction: the net effect of its source transactions (see
:mod:`syncline.views.netting`) is applied set-wise through temporary staging tables filled
with ``COPY`` (values are PostgreSQL text output, so the target parses them exactly), then
the checkpoint is stored in ``_syncline.positions`` in the same transaction.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import (
    ConfigError,
    SynclineError,
    TransientViewError,
    ViewError,
    first_line,
    redact,
    target_fix,
)
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    UserType,
)
from syncline.sources.registry import format_position
from syncline.views.base import Batch, selected_oids, warn_missed
from syncline.views.netting import (
    Key,
    KeylessOp,
    TableDelta,
    TruncateStep,
)
from syncline.views.postgres import ddl
from syncline.views.postgres.codec import relation_from_json, relation_to_json
from syncline.views.skeleton import NOWHERE, AppliedView

log = logging.getLogger("syncline.views.postgres")

Conn = psycopg.Connection[tuple[Any, ...]]
Cur = psycopg.Cursor[tuple[Any, ...]]

SMALL = 16
"""Up to this many rows are written with one parameterised statement instead of staging."""

DIRECT_MAX_SKIP = 64
"""Most batches a table is staged for after a direct COPY met an existing key."""

_BOOKKEEPING = (
    "CREATE SCHEMA IF NOT EXISTS _syncline",
    "CREATE TABLE IF NOT EXISTS _syncline.positions (view text PRIMARY KEY,"
    " seq bigint NOT NULL, commit_lsn bigint NOT NULL, updated_at timestamptz,"
    " log_id text NOT NULL DEFAULT '')",
    # a replica written before logs had ids (ALTER only then: it locks the table)
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '_syncline.positions'::regclass"
    " AND attname = 'log_id' AND NOT attisdropped) THEN"
    " ALTER TABLE _syncline.positions ADD COLUMN log_id text NOT NULL DEFAULT ''; END IF; END $$",
    "CREATE TABLE IF NOT EXISTS _syncline.relations (view text, oid bigint,"
    " relation jsonb, PRIMARY KEY (view, oid))",
)

_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
)


def _ids(names: Iterable[str], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _key_match(key: Sequence[str], left: str, right: Sequence[str] | None = None) -> sql.Composed:
    """``left.k1 = s.r1 AND ...`` (right names default to the key names, alias ``s``)."""
    rights = right if right is not None else key
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier("s", r))
        for k, r in zip(key, rights, strict=True)
    )


def _conflict(rel: Relation) -> sql.Composable:
    if not rel.key:
        return sql.SQL("")
    non_key = [c for c in rel.column_names if c not in rel.key]
    if not non_key:
        return sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(_ids(rel.key))
    return sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
        _ids(rel.key),
        sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in non_key
        ),
    )


def _unknown_enum_labels(batch: Batch, keep: Callable[[int], bool]) -> dict[tuple[str, str], set[str]]:
    """Per enum type, the values of the batch's rows that its last known labels lack."""
    rels = dict(batch.relations)
    out: dict[tuple[str, str], set[str]] = {}
    plans: dict[int, list[tuple[int, UserType]]] = {}
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, SchemaChange):
                rels[it.relation.oid] = it.relation
                plans.pop(it.relation.oid, None)
            elif isinstance(it, RowChange) and it.new is not None and keep(it.relid):
                rel = rels.get(it.relid)
                if rel is None:
                    continue
                plan = plans.get(it.relid)
                if plan is None:
                    plan = plans[it.relid] = _enum_columns(rel)
                for i, ut in plan:
                    v = it.new[i]
                    if isinstance(v, str) and v not in ut.labels:
                        out.setdefault((ut.schema, ut.name), set()).add(v)
    return out


def _enum_columns(rel: Relation) -> list[tuple[int, UserType]]:
    """(column index, enum type) of the relation's enum-typed columns (not arrays)."""
    enums = {f"{u.schema}.{u.name}": u for u in rel.user_types if u.kind == "e"}
    if not enums:
        return []
    out = []
    for i, c in enumerate(rel.columns):
        if c.category == "E":
            bare = c.base.replace('"', "")
            ut = enums.get(bare) or enums.get(f"public.{bare}")
            if ut is not None:
                out.append((i, ut))
    return out


class PostgresView(AppliedView):
    kind = "postgres"

    def __init__(self, cfg: ViewConfig) -> None:
        super().__init__(cfg.name)
        self.patterns = tuple(cfg.tables)
        self.keep_dropped = bool(cfg.options.get("keep_dropped_tables", False))
        dsn = cfg.options.get("dsn")
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError(f"view {cfg.name}: option 'dsn' (the replica's DSN) is required")
        self._dsn = dsn.value if isinstance(dsn, Secret) else str(dsn)
        self._secrets = [self._dsn]
        try:
            params = conninfo_to_dict(self._dsn)
        except psycopg.Error as e:
            raise ConfigError(f"view {cfg.name}: option 'dsn' is not a valid DSN") from e
        pw = params.get("password")
        if pw:
            self._secrets.append(str(pw))
        self._connect_kwargs: dict[str, Any] = {"application_name": f"syncline-{cfg.name}"}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = 10
        self._conn: Conn | None = None
        self._checkpoint = Checkpoint()
        self._relations: dict[int, Relation] = {}
        self._stage = itertools.count()
        self._keep: set[int] | None = None
        """The tables of the batch being applied that the view keeps (None: every one)."""
        self._txn_stored: dict[int, Relation] = {}
        """The replica's table shapes inside the open target transaction."""
        self._direct: dict[int, tuple[int, int]] = {}
        """oid -> (batches to skip direct COPY, next penalty)."""
        self._sequences: dict[str, object] = {}
        """The source's sequences as last set in the replica (``schema.name`` -> [type, value])."""

    # -- connection -----------------------------------------------------------------------

    def _transient(self, e: BaseException, what: str) -> TransientViewError:
        msg = redact(first_line(e), self._secrets)
        return TransientViewError(f"view {self.name}: {what}: {msg}")

    def _connect(self) -> Conn:
        try:
            conn: Conn = psycopg.connect(self._dsn, autocommit=False, **self._connect_kwargs)
        except psycopg.Error as e:
            raise self._transient(e, "cannot connect to the replica database") from None
        try:
            with conn.cursor() as cur:
                for stmt in _SESSION:
                    cur.execute(stmt)
            conn.commit()
        except psycopg.Error as e:
            conn.close()
            raise self._transient(e, "cannot set up the replica session") from None
        return conn

    def _ensure(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _short(self) -> Conn:
        try:
            conn: Conn = psycopg.connect(self._dsn, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as e:
            raise self._transient(e, "cannot connect to the replica database") from None
        return conn

    def _reset_after_error(self) -> None:
        self._in_txn = False
        self._txn_stored = {}
        conn = self._conn
        if conn is None:
            return
        if conn.closed or conn.broken:
            conn.close()
            self._conn = None
            return
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()
            self._conn = None

    # -- View protocol --------------------------------------------------------------------

    def open(self) -> Checkpoint:
        conn = self._ensure()
        try:
            with conn.cursor() as cur:
                # Serialise bookkeeping creation between views sharing the database.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('_syncline.bookkeeping'))")
                for stmt in _BOOKKEEPING:
                    cur.execute(stmt)
                cur.execute(
                    "SELECT seq, commit_lsn, log_id FROM _syncline.positions WHERE view = %s",
                    (self.name,),
                )
                row = cur.fetchone()
                cur.execute(
                    "SELECT oid, relation FROM _syncline.relations WHERE view = %s",
                    (self.name,),
                )
                rels = {int(oid): relation_from_json(doc) for oid, doc in cur.fetchall()}
            conn.commit()
        except psycopg.Error as e:
            self._reset_after_error()
            if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                raise self._transient(e, "cannot open the replica") from None
            raise ViewError(
                f"view {self.name}: cannot create bookkeeping tables in schema _syncline: "
                f"{redact(str(e), self._secrets)}"
            ) from None
        self._relations = rels
        self._checkpoint = Checkpoint.stored(*row) if row else Checkpoint()
        return self._checkpoint

    def relations(self) -> dict[int, Relation]:
        """The shapes the replica's tables currently have (oid -> Relation)."""
        return dict(self._relations)

    @property
    def connection(self) -> Conn:
        """The replica connection (inside the open transaction, if any)."""
        return self._ensure()

    def begin_rebuild(self) -> None:
        """``syncline rebuild``: open one target transaction that deletes every row of the
        view's tables and forgets its position; the batches that follow (with ``commit =
        False``) refill it and :meth:`finish_rebuild` commits. Readers see the old rows
        until then (DELETE, not TRUNCATE: no lock that would block them)."""
        conn = self._ensure()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT seq FROM _syncline.positions WHERE view = %s FOR UPDATE", (self.name,))
                for rel in self._relations.values():
                    name = sql.Identifier(rel.schema, rel.name)
                    cur.execute("SELECT to_regclass(%s)", (name.as_string(conn),))
                    row = cur.fetchone()
                    if row is not None and row[0] is not None:
                        cur.execute(sql.SQL("DELETE FROM {}").format(name))
                cur.execute("DELETE FROM _syncline.positions WHERE view = %s", (self.name,))
        except psycopg.Error as e:
            self._reset_after_error()
            raise self._transient(e, "cannot start the rebuild") from None
        self._txn_stored = dict(self._relations)
        self._in_txn = True
        self._checkpoint = Checkpoint()

    def finish_rebuild(self, checkpoint: Checkpoint) -> None:
        """Commit the rebuild's transaction with ``checkpoint``."""
        self.apply(Batch([], {}, checkpoint, 0, commit=True))

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # The skeleton is AppliedView.apply: one target transaction per source transaction
    # (batches with ``commit=False`` continue it), committed with the checkpoint.

    def _ensure_open(self) -> None:
        if self._in_txn and (self._conn is None or self._conn.closed or self._conn.broken):
            self._reset_after_error()
            raise TransientViewError(
                f"view {self.name}: lost the replica connection inside an open transaction"
            )
        self._ensure()

    def _applied(self) -> Checkpoint:
        return self._checkpoint

    def _prepare(self, batch: Batch) -> None:
        """User types first. Outside an open transaction they get their own (a new enum
        label cannot be used in the transaction that added it); harmless if the batch
        later fails."""
        conn = self._ensure()
        selected = self._keep = selected_oids(self.patterns, batch, {**self._relations, **batch.relations})

        def keep(oid: int) -> bool:
            return selected is None or oid in selected

        types: list[UserType] = []
        for rel in batch.relations.values():
            if keep(rel.oid):
                types.extend(rel.user_types)
        for txn in batch.transactions:
            for it in txn.items:
                if isinstance(it, SchemaChange) and keep(it.relation.oid):
                    types.extend(it.relation.user_types)
        if types:
            with conn.cursor() as cur:
                ddl.ensure_user_types(cur, types)
            if not self._in_txn:
                conn.commit()
        wanted = _unknown_enum_labels(batch, keep)
        if wanted:
            # labels added on the source later: pgoutput does not resend the relation. Added
            # on a connection of their own, so that this batch's transaction can use them.
            with self._short() as short, short.cursor() as cur:
                added = ddl.add_enum_labels(cur, wanted)
            if added:
                log.info("view %s: added enum labels %s", self.name, ", ".join(added))

    def _begin(self, batch: Batch) -> bool:
        """Lock the view's position row; a batch applied meanwhile (by another process of
        the same view) is skipped."""
        conn = self._ensure()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT seq, commit_lsn, log_id FROM _syncline.positions WHERE view = %s FOR UPDATE",
                (self.name,),
            )
            row = cur.fetchone()
        if row is not None and int(row[0]) >= batch.checkpoint.seq:
            conn.rollback()
            self._checkpoint = Checkpoint.stored(*row)
            return False
        self._txn_stored = dict(self._relations)
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return {**self._txn_stored, **batch.relations}

    def _selected(self, batch: Batch, rels: dict[int, Relation]) -> set[int] | None:
        return self._keep

    def _before_steps(self, batch: Batch, selected: set[int] | None) -> None:
        """The replica must have the batch's starting shapes."""
        stored = self._txn_stored
        with self._ensure().cursor() as cur:
            for oid, rel in batch.relations.items():
                if (selected is None or oid in selected) and (
                    oid not in stored or not stored[oid].same_shape(rel)
                ):
                    self._schema(cur, stored.get(oid), rel, stored)

    def _on_delta(self, td: TableDelta) -> None:
        with self._ensure().cursor() as cur:
            self._delta(cur, td)

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        with self._ensure().cursor() as cur:
            self._schema(cur, old, new, self._txn_stored)

    def _on_truncate(self, step: TruncateStep) -> None:
        with self._ensure().cursor() as cur:
            if not step.dropped:
                self._truncate(cur, step)
            elif not self.keep_dropped:
                for rel in step.relations:
                    had = self._txn_stored.pop(rel.oid, rel)
                    ddl.drop_table(cur, had.schema, had.name)

    def _after_steps(self, batch: Batch) -> None:
        seqs = batch.meta.get("sequences")
        if isinstance(seqs, dict) and seqs != self._sequences:
            with self._ensure().cursor() as cur:
                ddl.set_sequences(cur, seqs)
            self._sequences = dict(seqs)

    def _commit(self, batch: Batch) -> None:
        conn = self._ensure()
        stored = self._txn_stored
        with conn.cursor() as cur:
            for oid, rel in stored.items():
                if self._relations.get(oid) != rel:
                    cur.execute(
                        "INSERT INTO _syncline.relations (view, oid, relation)"
                        " VALUES (%s, %s, %s::jsonb) ON CONFLICT (view, oid)"
                        " DO UPDATE SET relation = EXCLUDED.relation",
                        (self.name, oid, relation_to_json(rel)),
                    )
            gone = [oid for oid in self._relations if oid not in stored]
            if gone:
                cur.execute(
                    "DELETE FROM _syncline.relations WHERE view = %s AND oid = ANY(%s)",
                    (self.name, gone),
                )
            cur.execute(
                "INSERT INTO _syncline.positions (view, seq, commit_lsn, updated_at, log_id)"
                " VALUES (%s, %s, %s, now(), %s) ON CONFLICT (view) DO UPDATE SET"
                " seq = EXCLUDED.seq, commit_lsn = EXCLUDED.commit_lsn,"
                " updated_at = EXCLUDED.updated_at, log_id = EXCLUDED.log_id",
                (self.name, batch.checkpoint.seq, batch.checkpoint.commit_lsn, batch.checkpoint.log),
            )
        conn.commit()
        self._txn_stored = {}
        self._relations = stored
        self._checkpoint = batch.checkpoint

    def _abort(self) -> None:
        self._reset_after_error()

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        cp = batch.checkpoint
        where = f"batch up to seq {cp.seq} (commit LSN {format_position(cp.commit_lsn)})"
        table = f", table {self._where}" if self._where != NOWHERE else ""
        if isinstance(e, psycopg.Error):
            if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                return self._transient(e, f"replica unavailable while applying {where}{table}")
            detail = redact(str(e).strip(), self._secrets)
            fixable, action = target_fix(e.sqlstate, self.name)
            return ViewError(
                f"view {self.name}: cannot apply {where}{table}: {detail}", fixable=fixable, action=action
            )
        if isinstance(e, SynclineError):
            return e
        return ViewError(
            f"view {self.name}: cannot apply batch up to seq {batch.checkpoint.seq}{table}: "
            f"{type(e).__name__}: {e}"
        )

    def _hide_cause(self, e: Exception) -> bool:
        return isinstance(e, psycopg.Error)

    # -- status helpers -------------------------------------------------------------------

    def read_checkpoint(self) -> Checkpoint:
        with self._short() as conn:
            try:
                row = conn.execute("SELECT to_regclass('_syncline.positions') IS NOT NULL").fetchone()
                if not row or not row[0]:
                    return Checkpoint()
                cur = conn.execute("SELECT * FROM _syncline.positions WHERE view = %s", (self.name,))
                row = cur.fetchone()
                names = [d.name for d in cur.description or ()]
            except psycopg.Error as e:
                raise self._transient(e, "cannot read the checkpoint") from None
        if row is None:
            return Checkpoint()
        got = dict(zip(names, row, strict=True))  # a replica written before logs had ids: no log_id
        return Checkpoint.stored(got["seq"], got["commit_lsn"], got.get("log_id"))

    def count_rows(self, qualified: str) -> int:
        ident: sql.Identifier | None = None
        for rel in self._relations.values():
            if rel.qualified == qualified:
                ident = sql.Identifier(rel.schema, rel.name)
        if ident is None:
            schema, _, name = qualified.partition(".")
            ident = sql.Identifier(schema, name)
        with self._short() as conn:
            try:
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            except psycopg.OperationalError as e:
                raise self._transient(e, f"cannot count rows of {qualified}") from None
            except psycopg.Error as e:
                raise ViewError(
                    f"view {self.name}: cannot count rows of {qualified}: "
                    f"{redact(str(e).strip(), self._secrets)}"
                ) from None
        return int(row[0]) if row else 0

    # -- schema ---------------------------------------------------------------------------

    def _schema(self, cur: Cur, old: Relation | None, new: Relation, stored: dict[int, Relation]) -> None:
        self._at(new.qualified)
        here = (new.schema, new.name)
        owners = [o for o, r in stored.items() if o != new.oid and (r.schema, r.name) == here]
        if old is not None and (old.schema, old.name) != here:
            taken = any(
                o != new.oid and (r.schema, r.name) == (old.schema, old.name) for o, r in stored.items()
            )
            if not taken and ddl.table_exists(cur, old.schema, old.name):
                for o in owners:
                    ddl.drop_table(cur, new.schema, new.name)
                    del stored[o]
                owners = []
                if ddl.table_exists(cur, new.schema, new.name):
                    ddl.drop_table(cur, new.schema, new.name)
                ddl.rename_table(cur, old, new)
            else:
                old = None
        # Another source table had this name: it was dropped (and this one created).
        for o in owners:
            ddl.drop_table(cur, new.schema, new.name)
            del stored[o]
        if ddl.table_exists(cur, new.schema, new.name):
            ddl.alter_table(cur, old, new)
        else:
            ddl.create_table(cur, new)
        stored[new.oid] = new

    def _truncate(self, cur: Cur, step: TruncateStep) -> None:
        names = []
        for rel in step.relations:
            if ddl.table_exists(cur, rel.schema, rel.name):
                names.append(sql.Identifier(rel.schema, rel.name))
        if not names:
            return
        cur.execute(
            sql.SQL("TRUNCATE {}{}").format(
                sql.SQL(", ").join(names),
                sql.SQL(" RESTART IDENTITY") if step.restart_identity else sql.SQL(""),
            )
        )

    # -- rows -----------------------------------------------------------------------------

    def _new_stage(self) -> sql.Identifier:
        return sql.Identifier(f"_syncline_stage_{next(self._stage)}")

    def _delta(self, cur: Cur, d: TableDelta) -> None:
        rel = d.relation
        if d.ops:
            self._keyless(cur, rel, d.ops)
            return
        if rel.key:
            partials = d.partials()
            if partials:
                self._partials(cur, rel, partials)
            deletes = d.deletes()
            if deletes:
                self._delete(cur, rel, deletes)
        elif d.deleted or d.partials():
            log.warning(
                "view %s: table %s has no key: deletes and partial updates skipped",
                self.name,
                rel.qualified,
            )
        upserts = d.upserts()
        if upserts:
            self._upsert(cur, rel, upserts)

    def _keyless(self, cur: Cur, rel: Relation, ops: list[KeylessOp]) -> None:
        """A table without a key, in order: runs of inserts in one statement; an update or
        delete acts on one row equal to the old row (compared in text form, so that types
        without an equality operator, json for one, match too)."""
        target = sql.Identifier(rel.schema, rel.name)
        conds: list[sql.Composable] = [
            sql.SQL("{}::text IS NOT DISTINCT FROM ({}::{})::text").format(
                sql.Identifier(c.name), sql.Placeholder(), ddl.type_sql(c.type_name)
            )
            for c in rel.columns
        ]
        match = sql.SQL(" AND ").join(conds or [sql.SQL("true")])
        one = sql.SQL("SELECT ctid FROM {} WHERE {} LIMIT 1").format(target, match)
        delete = sql.SQL("DELETE FROM {} WHERE ctid = ({})").format(target, one)
        update = sql.SQL("UPDATE {} SET {} WHERE ctid = ({})").format(
            target,
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in rel.column_names
            ),
            one,
        )
        inserts: list[Row] = []
        missed = 0
        for op in ops:
            if op.op == "insert":
                assert op.new is not None
                inserts.append(op.new)
                continue
            if inserts:
                self._upsert(cur, rel, inserts)
                inserts = []
            assert op.old is not None
            if op.op == "delete" or not rel.columns:
                cur.execute(delete if op.op == "delete" else one, list(op.old))
            else:
                assert op.new is not None
                cur.execute(update, [*op.new, *op.old])
            missed += cur.rowcount == 0
        if inserts:
            self._upsert(cur, rel, inserts)
        warn_missed(self.name, missed, rel)

    def _stage_like(
        self, cur: Cur, rel: Relation, cols: Sequence[str], extra: sql.Composable | None = None
    ) -> sql.Identifier:
        """An empty temp table with ``cols`` typed as in the replica table (plus ``extra``)."""
        stage = self._new_stage()
        select = _ids(cols) if extra is None else sql.SQL("{}, {}").format(_ids(cols), extra)
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                stage, select, sql.Identifier(rel.schema, rel.name)
            )
        )
        return stage

    def _copy(
        self, cur: Cur, stage: sql.Identifier, cols: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, _ids(cols))) as cp:
            for r in rows:
                cp.write_row(r)

    def _upsert(self, cur: Cur, rel: Relation, rows: list[Row]) -> None:
        cols = rel.column_names
        target = sql.Identifier(rel.schema, rel.name)
        if len(rows) <= SMALL:
            one = sql.SQL("({})").format(sql.SQL(", ").join([sql.Placeholder()] * len(cols)))
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES {}{}").format(
                    target, _ids(cols), sql.SQL(", ").join([one] * len(rows)), _conflict(rel)
                ),
                [v for r in rows for v in r],
            )
            return
        if not rel.key:
            self._copy(cur, target, cols, rows)
            return
        if self._try_direct(cur, rel, rows):
            return
        stage = self._stage_like(cur, rel, cols)
        self._copy(cur, stage, cols, rows)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{}").format(
                target, _ids(cols), _ids(cols), stage, _conflict(rel)
            )
        )

    def _try_direct(self, cur: Cur, rel: Relation, rows: list[Row]) -> bool:
        """COPY straight into the table when no row exists yet (inserts, snapshots): about
        twice as fast as staging + ``INSERT ... ON CONFLICT``. Tried under a savepoint; after
        a key conflict the table is staged for a growing number of batches before retrying."""
        skip, penalty = self._direct.get(rel.oid, (0, 1))
        if skip > 0:
            self._direct[rel.oid] = (skip - 1, penalty)
            return False
        cur.execute("SAVEPOINT _syncline_direct")
        try:
            self._copy(cur, sql.Identifier(rel.schema, rel.name), rel.column_names, rows)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT _syncline_direct")
            cur.execute("RELEASE SAVEPOINT _syncline_direct")
            self._direct[rel.oid] = (penalty, min(penalty * 2, DIRECT_MAX_SKIP))
            return False
        cur.execute("RELEASE SAVEPOINT _syncline_direct")
        self._direct[rel.oid] = (0, 1)
        return True

    def _delete(self, cur: Cur, rel: Relation, keys: list[Key]) -> None:
        target = sql.Identifier(rel.schema, rel.name)
        if len(keys) <= SMALL:
            one = sql.SQL("({})").format(
                sql.SQL(" AND ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in rel.key
                )
            )
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {}").format(target, sql.SQL(" OR ").join([one] * len(keys))),
                [v for k in keys for v in k],
            )
            return
        stage = self._stage_like(cur, rel, rel.key)
        self._copy(cur, stage, rel.key, keys)
        cur.execute(
            sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
                target, stage, _key_match(rel.key, "t")
            )
        )

    def _partials(self, cur: Cur, rel: Relation, partials: list[tuple[Row, Key]]) -> None:
        """Rows some of whose values are UNCHANGED: those come from the stored row under the
        origin key, read in the same statement that writes (so key swaps stay correct)."""
        cols = rel.column_names
        taken = set(cols)

        def fresh(base: str) -> str:
            name = base
            while name in taken:
                name += "_"
            taken.add(name)
            return name

        origin = [fresh(f"_syncline_o{i}") for i in range(len(rel.key))]
        mask = fresh("_syncline_mask")
        masked = [i for i in range(len(cols)) if any(r[i] is UNCHANGED for r, _ in partials)]
        extra = sql.SQL(", ").join(
            [
                *(
                    sql.SQL("{} AS {}").format(sql.Identifier(k), sql.Identifier(o))
                    for k, o in zip(rel.key, origin, strict=True)
                ),
                sql.SQL("NULL::text AS {}").format(sql.Identifier(mask)),
            ]
        )
        stage = self._stage_like(cur, rel, cols, extra)
        self._copy(
            cur,
            stage,
            [*cols, *origin, mask],
            (
                [
                    *(None if v is UNCHANGED else v for v in r),
                    *okey,
                    "".join("u" if r[i] is UNCHANGED else "s" for i in masked),
                ]
                for r, okey in partials
            ),
        )
        exprs: list[sql.Composable] = []
        for i, c in enumerate(cols):
            if i in masked:
                exprs.append(
                    sql.SQL("CASE WHEN substr(s.{}, {}, 1) = 'u' THEN t.{} ELSE s.{} END").format(
                        sql.Identifier(mask),
                        sql.Literal(masked.index(i) + 1),
                        sql.Identifier(c),
                        sql.Identifier(c),
                    )
                )
            else:
                exprs.append(sql.Identifier("s", c))
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} AS s JOIN {} AS t ON {}{}").format(
                sql.Identifier(rel.schema, rel.name),
                _ids(cols),
                sql.SQL(", ").join(exprs),
                stage,
                sql.Identifier(rel.schema, rel.name),
                _key_match(rel.key, "t", origin),
                _conflict(rel),
            )
        )
        if cur.rowcount < len(partials):
            log.warning(
                "view %s: %d of %d partially updated rows of %s had no stored row to take "
                "unchanged values from; they were not written",
                self.name,
                len(partials) - cur.rowcount,
                len(partials),
                rel.qualified,
            )
