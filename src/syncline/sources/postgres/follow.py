"""Tables that appear, change key or go away while the capture streams (issue 10).

The publication lists tables (a ``FOR ALL TABLES`` publication would make PostgreSQL refuse
updates of every table without a replica identity, breaking the application). So the
capture polls the catalogue: a new table matching ``source.tables`` with a usable key is
added to the publication (from then on its changes are streamed), and the rows it held
before are copied by a *watermark snapshot* (DBLog):

1. a low watermark is written into the WAL (``pg_logical_emit_message``, not
   transactional, so it reaches the stream at its WAL position);
2. a chunk of rows is read, in key order after the last chunk;
3. a high watermark is written.

The stream between the two watermarks holds every change committed while the chunk was
read. At the high watermark the chunk's rows, minus those whose key such a change touched,
are logged as one transaction: each row is either the chunk's value (unchanged since) or
left to the stream's newer event, so the views end exact, without locks or pauses. A table
without a key (``REPLICA IDENTITY FULL``) is copied whole in one chunk, logged as a truncate
then its rows, and read again when the stream touched it inside the window.

Pending copies are kept in the log's metadata with the last key copied: after a crash a copy
resumes at its last finished chunk. A followed table that is dropped, or renamed out of
``source.tables``, is emptied in every view (a truncate in stream order) and leaves the
publication.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from syncline.core import failpoints
from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.config_models import SourceConfig
from syncline.core.errors import LogError, TransientSourceError
from syncline.core.events import UNCHANGED, Relation, Row, RowChange
from syncline.core.patterns import table_selected
from syncline.core.position import Position
from syncline.log.base import LogAppender
from syncline.sources.postgres import catalog as cat
from syncline.sources.postgres.lsn import parse_lsn
from syncline.sources.postgres.pgoutput import decode_change, encode_truncate
from syncline.sources.postgres.visibility import Snapshot

log = logging.getLogger("syncline.capture")

PREFIX = "syncline.watermark"
POLL_INTERVAL = 1.0
"""Seconds between two looks at the catalogue for new or dropped tables."""
CHUNK_ROWS = 20_000
LAG_LIMIT = 5_000
"""Log records a view may be behind before copies pause."""
META_KEY = "follow_copies"
FOLLOWED_KEY = "follow_tables"
SEEN_KEY = "follow_seen"
"""The followed tables' columns and leaf partitions the last poll acted on: a DDL that
rewrote rows, or a partition attached or detached, while ``run`` was stopped is found at
the next start's first poll."""

Shape = tuple[int, int, bool, str | None, str, bool | None]
"""A column as the poll compares it: type, typmod, has a default, enum labels, name, part of
the table's key (None: not known, saved by an earlier version)."""


def _shape(saved: list[Any]) -> Shape:
    """A :data:`Shape` as :data:`SEEN_KEY` saved it (five values before the key was)."""
    t, m, d, e, n = saved[:5]
    key = saved[5] if len(saved) > 5 else None
    return (
        int(t),
        int(m),
        bool(d),
        None if e is None else str(e),
        str(n),
        None if key is None else bool(key),
    )


def _key_columns(cols: dict[int, Shape]) -> set[int]:
    """The numbers of a table's key columns (none: no primary key or identity index)."""
    return {a for a, v in cols.items() if v[5]}


def _key_rewritten(before: dict[int, Shape], cols: dict[int, Shape]) -> bool:
    """Whether a column of the table's key (every column without one) changed its type or
    enum labels: its stored values, so the rows' keys, may differ now."""
    changed = {a for a, v in cols.items() if a in before and (before[a][:2] != v[:2] or before[a][3] != v[3])}
    return bool(changed & (_key_columns(cols) or set(cols)))


CATALOGUE_KEY = "follow_catalogue"
"""The :func:`~syncline.sources.postgres.catalog.catalogue_mark` the last poll acted on in
full (``wait`` waits for the catalogue's mark of now)."""
FIRST_ROWS_KEY = "first_copy_rows"
"""Rows the first start's copy has logged (the initial snapshot's progress)."""
BARRIER_INTERVAL = 0.2
"""Seconds between two looks at whether a new table's barrier transactions have ended."""
SEQUENCES_KEY = "sequences"
SEQUENCE_POLLS = 5
"""Polls between two readings of the sequences."""
VISIBLE_WAIT = 10.0
"""Seconds a window waits for committed transactions its snapshot cannot see yet (a commit
waiting for a synchronous standby) before it is given up and tried again later."""


@dataclass
class Copy:
    """A table being copied by watermark chunks."""

    oid: int
    qualified: str
    after: list[str | None] | None = None
    """Key of the last row copied (None: from the start)."""
    done_rows: int = 0
    estimate: int = 0
    """Rows the table held when its copy began (``reltuples``), for progress."""
    reset: bool = False
    """Empty the table in the views with the first chunk (rows vanished without events)."""
    first: bool = False
    """Part of the first start's copy (the initial snapshot)."""
    barrier: set[int] = field(default_factory=set)
    """Transactions running when the table joined the publication: their changes written
    before that are not streamed, so no chunk is read before they end."""
    wall_started: float = field(default_factory=time.time)


@dataclass
class Part:
    """One key range of one table, read inside a window on a connection of its own."""

    copy: Copy
    lower: list[str | None] | None
    """Key the range starts after (None: the table's start)."""
    upper: list[str | None] | None = None
    """Last key of the range (None: ``CHUNK_ROWS`` rows from ``lower``)."""
    rows: list[Row] = field(default_factory=list)
    snap: Snapshot | None = None
    """The snapshot the rows were read in."""
    locked: str = ""
    """The table's name when its lock was taken ("" : gone)."""


@dataclass
class Window:
    """Chunks read between one low and one high watermark."""

    token: str
    parts: list[Part]
    open: bool = False
    """The low watermark has come back through the stream."""
    snaps: list[Snapshot] = field(default_factory=list)
    """The chunks' snapshots: changes of a transaction one of them saw as running count as
    touching the chunks even when their commit came back before the low watermark."""
    relations: dict[int, tuple[bytes, Relation]] = field(default_factory=dict)
    """Per table, its Relation message and Relation as its chunks were read."""
    targets: dict[int, sql.Composed] = field(default_factory=dict)
    """Per table, what its chunks read (``ONLY schema.name`` or ``schema.name``)."""
    key_idx: dict[int, tuple[int, ...]] = field(default_factory=dict)
    touched: dict[int, set[tuple[object, ...]]] = field(default_factory=dict)
    effects: dict[int, dict[tuple[object, ...], list[tuple[int, str, Row | None]]]] = field(
        default_factory=dict
    )
    """Per table and key touched inside the window, what each change did to the row, in
    stream order: (xid, "row" | "gone" | "partial", row). A partial row (an update that left
    out an unchanged TOASTed value) cannot replace the chunk's row: it is merged into it."""
    whole: set[int] = field(default_factory=set)
    """Tables changed as a whole inside the window (truncated, keyless, a streamed
    transaction): their chunks are read again."""

    def watching(self, xid: int) -> bool:
        return self.open or any(s.invisible32(xid) for s in self.snaps)


def queued_copies(tables: list[cat.TableInfo], reset: bool, first: bool = False) -> dict[str, str]:
    """The log metadata that makes the next capture follow ``tables`` and copy each of them
    by watermark chunks (``reset``: emptied in the views with its first chunk; ``first``:
    the first start's copy, counted as the initial snapshot in status and metrics)."""
    now = time.time()
    copies = {
        str(t.oid): {
            "table": t.qualified,
            "after": None,
            "rows": 0,
            "reset": reset,
            "started": now,
            "first": first,
        }
        for t in tables
    }
    followed = {str(t.oid): t.qualified for t in tables}
    return {META_KEY: json.dumps(copies), FOLLOWED_KEY: json.dumps(followed)}


def usable(t: cat.TableInfo) -> bool:
    """Whether the table's updates and deletes can be captured (a key or FULL)."""
    return t.replident == "f" or t.replident == "i" or (t.replident == "d" and t.has_pk)


class TableFollower:
    """Keeps the publication in step with ``source.tables`` and copies new tables."""

    def __init__(
        self,
        cfg: SourceConfig,
        writer: LogAppender,
        conn: psycopg.Connection[Any],
        relation_of: Callable[[cat.TableInfo], tuple[bytes, Relation]],
    ) -> None:
        self.cfg = cfg
        self.writer = writer
        self.conn = conn
        self.relation_of = relation_of
        """The table's Relation message (generated columns included) and Relation."""
        self.shapes: dict[int, dict[int, Shape]] = {}
        """Per followed table and column number: its :data:`Shape`."""
        self._polls = 0
        self._lag_checked = 0.0
        self._barrier_checked = 0.0
        self._lagging = False
        self._seq_doc = self.writer.meta(SEQUENCES_KEY)
        self.leaves: dict[int, set[int]] = {}
        """Per followed partitioned table, its leaf partitions."""
        self.stream_rels: dict[int, set[int]] = {}
        """Per streamed (in-progress) transaction, the tables being copied it changed."""
        self.followed: dict[int, str] = {}
        self.copies: dict[int, Copy] = {}
        self.current: Window | None = None
        self.parallel = max(1, cfg.copy_parallel)
        self._part_conns: list[psycopg.Connection[Any]] = []
        self._last_poll = 0.0
        self._mark = ""
        """The catalogue mark last published (see :data:`CATALOGUE_KEY`)."""
        self._renamed: set[int] = set()
        """Followed tables renamed whose new shape is not logged yet."""
        self._seen_saved: tuple[dict[int, dict[int, Shape]], dict[int, set[int]]] = ({}, {})
        """:attr:`shapes` and :attr:`leaves` as last saved (see :data:`SEEN_KEY`; a poll
        replaces their entries, never changes one in place)."""
        self._acted = True
        self._lost_keys: set[int] = set()
        """Followed tables whose Relation arrived in the stream without a key (between two
        polls): left at the next tick, then followed and copied again once keyed."""
        self._warned: set[tuple[int, str]] = set()
        self._announced_empty = False
        self.recent: set[int] = set()
        """Transactions whose commit this capture has taken from the stream and that a new
        snapshot may still see as running (pruned against a fresh snapshot each poll)."""

    # -- state ------------------------------------------------------------------------------

    def load(self) -> None:
        """The publication's tables, and the copies a previous run left unfinished."""
        rows = self.conn.execute(
            "SELECT r.prrelid, n.nspname, c.relname FROM pg_catalog.pg_publication_rel r"
            " JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid"
            " JOIN pg_catalog.pg_class c ON c.oid = r.prrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s",
            (self.cfg.publication,),
        ).fetchall()
        self.followed = {int(o): f"{s}.{t}" for o, s, t in rows}
        # tables followed before and gone from the publication while `run` was stopped
        # (a dropped table leaves it by itself): emptied at the first poll
        known = self.writer.meta(FOLLOWED_KEY)
        published = dict(self.followed)
        for oid, name in (json.loads(known) if known else {}).items():
            # under the name the views know: one renamed while `run` was stopped is moved
            # at the first poll (the publication has the new name already)
            self.followed[int(oid)] = str(name)
        saved = self.writer.meta(META_KEY)
        for oid, st in (json.loads(saved) if saved else {}).items():
            self.copies[int(oid)] = Copy(
                int(oid),
                str(st["table"]),
                after=st.get("after"),
                done_rows=int(st.get("rows", 0)),
                reset=bool(st.get("reset")),
                estimate=int(st.get("estimate", 0)),
                wall_started=float(st.get("started", time.time())),
                barrier={int(x) for x in st.get("barrier", ())},
                first=bool(st.get("first")),
            )
        if known is not None:
            # in the publication, unknown to the log: a run joined it and was killed before
            # it saved the copy. Its rows from before the join reach no view by the stream.
            for oid in sorted(set(published) - {int(o) for o in json.loads(known)} - set(self.copies)):
                log.info("copying %s: it joined the publication as a run stopped", published[oid])
                self.copies[oid] = Copy(oid, published[oid], barrier=self._running())
        seen = self.writer.meta(SEEN_KEY)
        doc = json.loads(seen) if seen else {}
        for oid, cols in doc.get("columns", {}).items():
            if int(oid) in self.followed:
                self.shapes[int(oid)] = {int(a): _shape(v) for a, v in cols.items()}
        for oid, leaves in doc.get("leaves", {}).items():
            if int(oid) in self.followed:
                self.leaves[int(oid)] = {int(x) for x in leaves}
        self._seen_saved = (dict(self.shapes), dict(self.leaves))
        for c in self.copies.values():
            if c.after is not None:
                log.info("resuming the copy of %s after %d rows", c.qualified, c.done_rows)
        if json.loads(known or "{}") != {str(o): q for o, q in self.followed.items()}:
            self._save()

    def _save(self, first_rows: int = 0) -> None:
        """The copies and followed tables into the log's metadata (``first_rows``: rows the
        first start's copy has just logged, added to ``first_copy_rows``)."""
        doc = {
            str(c.oid): {
                "table": c.qualified,
                "after": c.after,
                "rows": c.done_rows,
                "reset": c.reset,
                "estimate": c.estimate,
                "started": c.wall_started,
                "barrier": sorted(c.barrier),
                "first": c.first,
            }
            for c in self.copies.values()
        }
        followed = {str(o): q for o, q in self.followed.items()}
        extra: dict[str, str | int] = {}
        if first_rows:
            extra[FIRST_ROWS_KEY] = int(self.writer.meta(FIRST_ROWS_KEY, "0")) + first_rows
        self.writer.set_meta_now(**{META_KEY: json.dumps(doc), FOLLOWED_KEY: json.dumps(followed)}, **extra)

    # -- polling ----------------------------------------------------------------------------

    def key_lost(self, oid: int) -> None:
        """The stream brought a Relation of followed table ``oid`` without a key: its rows
        from here on reach the keyed views (Redis, tantivy, Iceberg...) without one, and
        they leave them out. The poll may never have seen the table keyless (a key dropped
        and added back between two polls, or while the capture was down), so the table is
        left at the next tick (emptied in every view, in stream order) and, keyed again,
        followed and copied again like a new table."""
        if oid in self.followed:
            self._lost_keys.add(oid)

    def tick(self, now: float) -> None:
        """Poll the catalogue now and then; start the next chunk when none is in flight
        (call between transactions)."""
        for oid in sorted(self._lost_keys):
            if oid in self.followed:
                log.warning(
                    "table %s came in the stream without a primary key: it is emptied in every "
                    "view and, with a key again, copied again",
                    self.followed[oid],
                )
                self._leave(oid)
        self._lost_keys.clear()
        if now - self._last_poll >= POLL_INTERVAL:
            self._last_poll = now
            self.poll()
        if self.current is None and self.copies and not self._views_far_behind(now):
            ready = [c for c in self.copies.values() if not c.barrier]
            if not ready and now - self._barrier_checked >= BARRIER_INTERVAL:
                self._barrier_checked = now
                first = self._past_barrier()
                ready = [first] if first is not None else []
            if ready:
                self._start_window(ready)

    def _past_barrier(self) -> Copy | None:
        """The first copy whose barrier transactions have all ended and are visible to new
        snapshots (a commit waiting for a synchronous standby is in the WAL, not yet visible)."""
        snap = self._snapshot()
        for c in self.copies.values():
            c.barrier = {x for x in c.barrier if snap.invisible(x)}
            if not c.barrier:
                return c
            if time.time() - c.wall_started > 10:
                self._warn_once(
                    c.oid,
                    "barrier",
                    f"the copy of {c.qualified} waits for transactions that were writing when it joined "
                    f"the publication (xids {', '.join(str(x) for x in sorted(c.barrier))}): see "
                    "pg_stat_activity.backend_xid",
                )
        return None

    def _views_far_behind(self, now: float) -> bool:
        """Throttle: no new chunk while the slowest running view is more than ``LAG_LIMIT``
        log records behind (copies must not bury the live stream); checked once a second."""
        if now - self._lag_checked < 1.0:
            return self._lagging
        self._lag_checked = now
        try:
            behind = self.writer.running_views_lag()
        except (LogError, sqlite3.Error):
            return False
        lagging = behind is not None and behind > LAG_LIMIT
        if lagging and not self._lagging:
            log.info("copies wait: a view is more than %d log records behind", LAG_LIMIT)
        self._lagging = lagging
        return lagging

    def _snapshot(self) -> Snapshot:
        row = self.conn.execute("SELECT pg_catalog.pg_current_snapshot()::text").fetchone()
        assert row is not None
        return Snapshot.parse(str(row[0]))

    def poll(self) -> None:
        """Act on the catalogue as it is now (tables that appeared, were dropped, renamed,
        lost their key, or had their rows rewritten or their shape changed by DDL), then
        publish its mark: read first, so anything that changed after the read makes the
        next poll's mark differ."""
        self._acted = True  # False when something is left for the next poll
        try:
            tables = cat.discover_tables(self.conn, self.cfg.tables)
            mark = cat.catalogue_mark(self.conn, tables)
            if self.recent:
                snap = self._snapshot()
                self.recent = {x for x in self.recent if snap.invisible32(x)}
        except psycopg.OperationalError as e:
            raise TransientSourceError(f"catalogue lookup failed: {e}") from e
        if not tables and not self.followed and not self._announced_empty:
            self._announced_empty = True
            log.info(
                "no table matches source.tables %s yet; following tables as they appear",
                list(self.cfg.tables),
            )
        by_oid = {t.oid: t for t in tables}
        for oid in [o for o in self.followed if o in by_oid and not usable(by_oid[o])]:
            # its key was dropped: PostgreSQL refuses its updates while it is published
            log.warning(
                "table %s lost its primary key: it is no longer followed (add a key, or REPLICA "
                "IDENTITY FULL, and it is followed and copied again)",
                by_oid[oid].qualified,
            )
            del by_oid[oid]
        for oid in [o for o in self.followed if o not in by_oid]:
            self._leave(oid)
        for oid, q in list(self.followed.items()):
            if by_oid[oid].qualified != q:
                # renamed (table or schema): the views move it in stream order, before a
                # new table may take the old name
                self.followed[oid] = by_oid[oid].qualified
                if oid in self.copies:
                    self.copies[oid].qualified = by_oid[oid].qualified
                self._renamed.add(oid)
                self._save()
                log.info("table %s is now %s", q, by_oid[oid].qualified)
        for oid in sorted(self._renamed):  # the table busy (a DDL holds it): the next poll again
            if oid not in self.followed or self._emit_shape(oid):
                self._renamed.discard(oid)
            else:
                self._acted = False
        for t in tables:
            if t.oid in self.followed:
                continue
            if not usable(t):
                self._warn_once(
                    t.oid,
                    "key",
                    f"table {t.qualified} is not followed: it has no primary key. Add one, or "
                    f"ALTER TABLE {t.qualified} REPLICA IDENTITY FULL (it is then followed and copied)",
                )
                continue
            if not t.can_select:
                self._warn_once(
                    t.oid, "select", f"table {t.qualified} is not followed: no SELECT privilege on it"
                )
                continue
            self._join(t)
        self._check_rewrites()
        self._take_requests()
        state = (dict(self.shapes), dict(self.leaves))
        meta: dict[str, str | int] = {}
        if state != self._seen_saved:  # serialized only when it changed
            meta[SEEN_KEY] = json.dumps(
                {
                    "columns": {str(o): {str(a): list(v) for a, v in c.items()} for o, c in state[0].items()},
                    "leaves": {str(o): sorted(leaves) for o, leaves in state[1].items()},
                }
            )
        if self._acted and mark != self._mark:
            meta[CATALOGUE_KEY] = mark
        if meta:  # after the copies the poll queued are saved: a crash before finds them again
            try:
                self.writer.set_meta_now(**meta)
                self._mark = mark if CATALOGUE_KEY in meta else self._mark
                self._seen_saved = state
            except (LogError, sqlite3.Error):
                pass  # busy: the next poll writes them
        self._polls += 1
        if self._polls % SEQUENCE_POLLS == 1:
            self._sequences()

    def _sequences(self) -> None:
        """The sequences ``source.tables`` matches, with their last values, into the log's
        metadata: the replica view sets its own from there (so it can be promoted)."""
        rows = self.conn.execute(
            "SELECT schemaname, sequencename, data_type::text, last_value::text"
            " FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL"
        ).fetchall()
        seqs = {
            f"{s}.{n}": [str(t), str(v)] for s, n, t, v in rows if table_selected(self.cfg.tables, f"{s}.{n}")
        }
        doc = json.dumps(seqs, sort_keys=True)
        if doc != self._seq_doc:
            self._seq_doc = doc
            self.writer.set_meta_now(**{SEQUENCES_KEY: doc})

    def _take_requests(self) -> None:
        """``syncline snapshot --table T``: copy followed tables again."""
        try:
            rows = self.writer.copy_requests()
            if not rows:
                return
            by_name = {q: o for o, q in self.followed.items()}
            for _id, tables in rows:
                for q in tables:
                    oid = by_name.get(str(q))
                    if oid is None:
                        log.warning("snapshot of %s requested, but it is not followed", q)
                        continue
                    log.info("copying %s again (syncline snapshot)", q)
                    self.copies[oid] = Copy(oid, str(q))
            self._save()  # before the requests go: `snapshot` sees the copy under way
            self.writer.drop_copy_requests(max(r[0] for r in rows))
        except (LogError, sqlite3.Error):
            return  # busy: next time

    def _check_rewrites(self) -> None:
        """DDL that changes stored values without row events (ADD COLUMN with a default,
        ALTER COLUMN TYPE, an enum label renamed): copy the table again."""
        if not self.followed:
            return
        self._check_partitions()
        rows = self.conn.execute(
            # the key the views use: the primary key, else the replica identity index
            "WITH k AS (SELECT DISTINCT ON (i.indrelid) i.indrelid, i.indkey::int2[] AS cols"
            " FROM pg_catalog.pg_index i WHERE i.indrelid = ANY(%s) AND (i.indisprimary OR i.indisreplident)"
            " ORDER BY i.indrelid, i.indisprimary DESC)"
            " SELECT a.attrelid, a.attnum, a.atttypid, a.atttypmod, a.atthasdef OR a.atthasmissing,"
            " (SELECT string_agg(e.enumlabel, E'\\x01' ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e"
            "  WHERE e.enumtypid = a.atttypid), a.attname, COALESCE(a.attnum = ANY(k.cols), false)"
            " FROM pg_catalog.pg_attribute a LEFT JOIN k ON k.indrelid = a.attrelid"
            " WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (list(self.followed), list(self.followed)),
        ).fetchall()
        now: dict[int, dict[int, Shape]] = {}
        for relid, attnum, typ, typmod, has_default, labels, name, key in rows:
            now.setdefault(int(relid), {})[int(attnum)] = (
                int(typ),
                int(typmod),
                bool(has_default),
                labels,
                str(name),
                bool(key),
            )
        for oid, cols in now.items():
            before = self.shapes.get(oid)
            self.shapes[oid] = cols
            if before is None:
                continue
            why = ""
            dropped = {v[4] for a, v in before.items() if a not in cols}
            if any(v[4] in dropped for a, v in cols.items() if a not in before):
                why = "a column dropped and added again under its name"
            # the views' keys are other columns now: rows stored under the old keys (Redis
            # keys, search documents) must go, and a table that had no key (REPLICA
            # IDENTITY FULL) has no rows yet in a view that needs one
            known = all(v[5] is not None for v in before.values())  # else saved before keys were
            key_changed = known and _key_columns(before) != _key_columns(cols)
            if key_changed:
                why = "its key changed"
            for attnum, (typ, typmod, has_default, labels, _name, _key) in cols.items():
                if why:
                    break
                old = before.get(attnum)
                if old is None:
                    if has_default:
                        why = "a column added with a default"
                elif old[:2] != (typ, typmod):
                    why = "a column's type changed"
                elif old[3] and labels and set(old[3].split("\x01")) - set(labels.split("\x01")):
                    why = "an enum label renamed"
                if why:
                    break
            if why:
                name = self.followed[oid]
                log.info("%s: %s changed its stored rows without row events: copying it again", name, why)
                # a key column's values may have changed: the rows under the old keys go
                self._copy_again(oid, reset=key_changed or _key_rewritten(before, cols))
            elif oid in self.copies:
                continue  # its chunks carry the new shape
            elif (
                before.keys() != cols.keys() or any(before[a][4] != v[4] for a, v in cols.items())
            ) and not self._emit_shape(oid):
                # a column renamed, dropped, or added without a default: pgoutput sends the
                # new shape only with the table's next change, which may never come; it was
                # logged now, in stream order (the views rename, drop or add the column),
                # unless the table was busy: the next poll tries again
                self.shapes[oid] = before
                self._acted = False

    def _check_partitions(self) -> None:
        """ATTACH, DETACH or DROP of a partition adds or removes rows of the root without
        row events: copy the root again (emptied first when rows went away)."""
        # pg_inherits, not pg_partition_tree(): that one locks every partition, and would
        # hold the whole stream up behind a DDL that holds the table
        rows = self.conn.execute(
            "WITH RECURSIVE tree (root, relid) AS ("
            " SELECT r.oid, r.oid FROM pg_catalog.pg_class r WHERE r.oid = ANY(%s) AND r.relkind = 'p'"
            " UNION ALL SELECT t.root, i.inhrelid FROM tree t"
            " JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid)"
            " SELECT t.root, t.relid, c.relkind::text FROM tree t"
            " JOIN pg_catalog.pg_class c ON c.oid = t.relid",
            (list(self.followed),),
        ).fetchall()
        trees: dict[int, set[int]] = {}
        for root, relid, relkind in rows:
            leaves = trees.setdefault(int(root), set())
            if relkind != "p":
                leaves.add(int(relid))
        for oid, now in trees.items():
            before = self.leaves.get(oid)
            self.leaves[oid] = now
            if before is None or before == now:
                continue
            gone = before - now
            added = [leaf for leaf in now - before if self._has_rows(leaf)]
            if gone or added:
                name = self.followed[oid]
                why = "partitions detached or dropped" if gone else "partitions attached with rows"
                log.info("%s: %s: copying it again", name, why)
                self._copy_again(oid, reset=bool(gone))

    def _copy_again(self, oid: int, reset: bool) -> None:
        """Queue table ``oid`` for a copy (``reset``: emptied in the views first). One under
        way starts over: the chunks it logged hold the rows from before."""
        running = self.copies.get(oid)
        first, barrier = False, set[int]()
        if running is not None:
            if self.current is not None and any(p.copy.oid == oid for p in self.current.parts):
                self.current = None  # its high watermark is ignored: the chunks are read again
            first, barrier, reset = running.first, running.barrier, reset or running.reset
        self.copies[oid] = Copy(oid, self.followed[oid], reset=reset, first=first, barrier=barrier)
        self._save()

    def _has_rows(self, oid: int) -> bool:
        row = self.conn.execute("SELECT %s::oid::regclass::text", (oid,)).fetchone()
        if row is None:
            return False
        try:
            got = self.conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM ONLY {})").format(sql.SQL(str(row[0])))
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return False
        return bool(got and got[0])

    def _warn_once(self, oid: int, what: str, message: str) -> None:
        if (oid, what) not in self._warned:
            self._warned.add((oid, what))
            log.warning("%s", message)

    def _join(self, t: cat.TableInfo) -> None:
        try:
            # ONLY: an inheritance parent would bring its children, which are tables of
            # their own (and "already a member" would fail the whole statement)
            only = sql.SQL("") if t.relkind == "p" else sql.SQL("ONLY ")
            self.conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}{}").format(
                    sql.Identifier(self.cfg.publication), only, sql.Identifier(t.schema, t.name)
                )
            )
        except psycopg.errors.DuplicateObject:
            pass  # added by hand or by a previous run that stopped right after
        except psycopg.errors.UndefinedTable:
            return  # dropped meanwhile
        except psycopg.Error as e:
            self._warn_once(
                t.oid,
                "publication",
                f"table {t.qualified} is not followed: cannot add it to publication "
                f"{self.cfg.publication!r}: {str(e).strip().splitlines()[0]}",
            )
            return
        failpoints.hit("follow.joined_not_saved")
        self.followed[t.oid] = t.qualified
        self.copies[t.oid] = Copy(t.oid, t.qualified, barrier=self._running())
        self._save()
        log.info(
            "following new table %s: its changes stream from now on, its rows are being copied", t.qualified
        )

    def _running(self) -> set[int]:
        """The transactions running now: one may have changed a table before it joined the
        publication (those changes are decoded as unpublished), so a copy waits for them and
        its first chunk holds their effects. Running: listed in a snapshot's xip, or given
        its id after the latest one that finished (at or above xmax, below the next id)."""
        snap = self._snapshot()
        row = self.conn.execute("SELECT pg_catalog.pg_current_xact_id()::text").fetchone()
        following = int(row[0]) if row else snap.xmax
        return set(snap.xip) | set(range(snap.xmax, following))

    def _leave(self, oid: int) -> None:
        """A followed table dropped or no longer matching: empty it in the views."""
        name = self.followed.pop(oid)
        self.copies.pop(oid, None)
        self.shapes.pop(oid, None)
        self.leaves.pop(oid, None)
        if self.current is not None and any(p.copy.oid == oid for p in self.current.parts):
            self.current = None  # its high watermark is ignored: the other chunks are read again
        row = self.conn.execute(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = %s", (oid,)
        ).fetchone()
        if row is not None:  # renamed out of source.tables: stop publishing it
            try:
                self.conn.execute(
                    sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                        sql.Identifier(self.cfg.publication), sql.SQL(str(row[0]))
                    )
                )
            except psycopg.Error as e:
                log.warning("cannot remove %s from publication %s: %s", row[0], self.cfg.publication, e)
        # emptied in stream order: when the marker comes back, every change before it is in
        self._emit(f"gone:{oid}")
        self._save()  # after the marker: a crash in between empties it twice, harmlessly
        log.info(
            "table %s (oid %d) was dropped or left source.tables: it is emptied in every view", name, oid
        )

    # -- watermark chunks -------------------------------------------------------------------

    def _emit_shape(self, oid: int) -> bool:
        """Log table ``oid``'s shape at this point of the stream (a rename, a column renamed,
        dropped or added, which pgoutput tells only with the table's next change).

        The shape travels in the message, read while the table is locked: no DDL on it
        commits between the read and the message, so the shape is exactly the one in force
        at the message's place in the WAL. (Read when the message is decoded, it was the
        catalogue's shape of *then*: a column renamed in the meantime reached the views
        before the transactions that still wrote its old name, and they dropped it and
        added it back empty.) False when the table is busy (a DDL holds it) or gone."""
        try:
            with self.conn.transaction():
                self.conn.execute("SET LOCAL lock_timeout = '200ms'")
                row = self.conn.execute("SELECT %s::oid::regclass::text", (oid,)).fetchone()
                if row is None or row[0] == str(oid):
                    return False  # gone
                self.conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE").format(sql.SQL(row[0])))
                again = self.conn.execute("SELECT %s::oid::regclass::text", (oid,)).fetchone()
                if again is None or again[0] != row[0]:
                    return False  # renamed while we waited for the lock: next time
                _msg, rel = self.relation_of(self.table(oid))
                self._emit(f"shape:{oid}:{relation_to_json(rel).decode()}")
        except (psycopg.errors.LockNotAvailable, psycopg.errors.UndefinedTable):
            return False
        failpoints.hit("follow.shape_logged")
        return True

    def _emit(self, content: str) -> int:
        row = self.conn.execute(
            "SELECT pg_catalog.pg_logical_emit_message(false, %s, %s)::text", (PREFIX, content)
        ).fetchone()
        assert row is not None
        return parse_lsn(str(row[0]))

    def close(self) -> None:
        for conn in self._part_conns:
            conn.close()
        self._part_conns = []

    def _start_window(self, ready: list[Copy]) -> None:
        """Plan up to ``parallel`` chunks over the ready copies, then read them between a
        low and a high watermark."""
        parts: list[Part] = []
        for c in ready:
            if len(parts) >= self.parallel:
                break
            if not c.estimate:
                row = self.conn.execute(
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_catalog.pg_class WHERE oid = %s", (c.oid,)
                ).fetchone()
                c.estimate = int(row[0]) if row else 0
            try:
                parts.extend(self._ranges(c, self.parallel - len(parts)))
            except psycopg.errors.UndefinedTable:
                parts.append(Part(c, c.after))  # dropped: its read finds it gone
        w = Window(uuid.uuid4().hex[:12], parts)
        self.current = w
        self._emit(f"low:{w.token}")
        if not self._read_window(w):
            self.current = None  # its low watermark is ignored; the next tick tries again
            return
        self._emit(f"high:{w.token}")

    def _ranges(self, c: Copy, n: int) -> list[Part]:
        """Up to ``n`` consecutive key ranges of ``c`` after its last copied key, the last one
        open-ended (``CHUNK_ROWS`` rows): the bounds are every ``CHUNK_ROWS``-th key."""
        if n <= 1:
            return [Part(c, c.after)]
        t = self.table(c.oid)
        _msg, rel = self.relation_of(t)
        if not rel.key:
            return [Part(c, c.after)]
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in rel.key)
        # the inner query's output is renamed by position (s(k0, ..., rn)) and ordered by
        # position: a key column may be called anything, "n" or "rn" included
        outer = [f"k{i}" for i in range(len(rel.key))]
        query = sql.SQL(
            "COPY (SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) FROM {}{}"
            " ORDER BY {} LIMIT {}) AS s({}, rn) WHERE rn % {} = 0 ORDER BY rn) TO STDOUT"
        ).format(
            sql.SQL(", ").join(map(sql.Identifier, outer)),
            keys,
            keys,
            self._target(t),
            self._after(c.after, rel),
            sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(rel.key))),
            sql.Literal((n - 1) * CHUNK_ROWS),
            sql.SQL(", ").join(map(sql.Identifier, outer)),
            sql.Literal(CHUNK_ROWS),
        )
        bounds: list[list[str | None]] = []
        with self.conn.cursor() as cur, cur.copy(query) as cp:
            for r in cp.rows():
                bounds.append(list(r))
        parts, lower = [], c.after
        for b in bounds:
            parts.append(Part(c, lower, b))
            lower = b
        parts.append(Part(c, lower))
        return parts

    def _conns(self, n: int) -> list[psycopg.Connection[Any]]:
        while len(self._part_conns) < n:
            self._part_conns.append(cat.connect(self.cfg.dsn.value))
        return self._part_conns[:n]

    def _read_window(self, w: Window) -> bool:
        """Each chunk on its own connection: ACCESS SHARE lock on its table first (a DDL
        then either committed before or waits for the window), then its REPEATABLE READ
        snapshot; the tables' shapes are read once every lock is held; then the chunks'
        rows, in parallel. False: given up, a committed transaction stayed invisible."""
        conns = self._conns(len(w.parts))
        began: list[psycopg.Connection[Any]] = []
        try:
            deadline = time.monotonic() + VISIBLE_WAIT
            while hidden := self._open_parts(w, conns, began):
                # a commit already in the WAL (perhaps already streamed and logged, before
                # the low watermark) that the snapshots cannot see: a chunk read now would
                # log its rows as they were before it. Wait until it is visible.
                for conn in began:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                began.clear()
                if not self._wait_visible(hidden, deadline):
                    log.warning(
                        "a copy waits: transactions %s have committed but are not visible yet (a "
                        "synchronous standby not answering?)",
                        ", ".join(str(x) for x in sorted(hidden)),
                    )
                    return False
            self.recent.clear()  # every one of them is visible to the snapshots, and after
            for part in w.parts:
                oid = part.copy.oid
                if not part.locked or oid in w.relations:
                    continue
                try:
                    t = self.table(oid)
                except psycopg.errors.UndefinedTable:
                    continue
                if t.qualified != part.locked:  # renamed between the look and the lock
                    w.whole.add(oid)
                msg_bytes, rel = self.relation_of(t)
                w.relations[oid] = (msg_bytes, rel)
                w.targets[oid] = self._target(t)
                w.key_idx[oid] = rel.key_indexes()
                w.touched[oid] = set()
            jobs = [
                (part, conn)
                for part, conn in zip(w.parts, conns, strict=True)
                if part.locked and part.copy.oid in w.relations and part.copy.oid not in w.whole
            ]
            if len(jobs) > 1:
                with ThreadPoolExecutor(len(jobs), thread_name_prefix="copy") as pool:
                    list(pool.map(lambda j: self._read_part(w, *j), jobs))
            elif jobs:
                self._read_part(w, *jobs[0])
            return True
        finally:
            for conn in began:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")

    def _open_parts(
        self, w: Window, conns: list[psycopg.Connection[Any]], began: list[psycopg.Connection[Any]]
    ) -> set[int]:
        """Lock and snapshot every chunk's table (``began``: the connections in a transaction).
        Returns the committed transactions the snapshots cannot see yet (32-bit ids): those
        the stream has already delivered, and those its snapshots list as running although
        their commit is recorded."""
        looked: dict[int, cat.TableInfo] = {}
        w.snaps = []
        hidden: set[int] = set()
        for part, conn in zip(w.parts, conns, strict=True):
            part.locked = ""
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            began.append(conn)
            try:
                oid = part.copy.oid
                before = looked[oid] = looked.get(oid) or self.table(oid)
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(self._target(before)))
                part.locked = before.qualified
            except psycopg.errors.UndefinedTable:
                conn.execute("ROLLBACK")
                began.remove(conn)
                continue
            # the first statement after LOCK takes the transaction's snapshot
            row = conn.execute(
                "SELECT pg_catalog.pg_current_snapshot()::text, ARRAY(SELECT x::text"
                " FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) x"
                " WHERE pg_catalog.pg_xact_status(x) = 'committed')"
            ).fetchone()
            assert row is not None
            snap = Snapshot.parse(str(row[0]))
            w.snaps.append(snap)
            part.snap = snap
            hidden |= {int(x) & 0xFFFF_FFFF for x in row[1]}
            hidden |= {x for x in self.recent if snap.invisible32(x)}
        return hidden

    def _wait_visible(self, xids: set[int], deadline: float) -> bool:
        """Until a new snapshot sees every one of ``xids`` (32-bit), or ``deadline``."""
        while True:
            snap = self._snapshot()
            if not any(snap.invisible32(x) for x in xids):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _read_part(self, w: Window, part: Part, conn: psycopg.Connection[Any]) -> None:
        """One chunk's rows (in a thread of the window's pool: only ``conn`` is used)."""
        rel = w.relations[part.copy.oid][1]
        cols = sql.SQL(", ").join(sql.Identifier(col.name) for col in rel.columns)
        target = w.targets[part.copy.oid]
        if not rel.key:
            query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, target)
        else:
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in rel.key)
            where = self._after(part.lower, rel)
            if part.upper is not None:
                upper = self._key_literal(part.upper, rel)
                glue = sql.SQL(" AND ") if part.lower is not None else sql.SQL(" WHERE ")
                where = sql.SQL("{}{}({}) <= ({})").format(where, glue, keys, upper)
                limit: sql.Composable = sql.SQL("")
            else:
                limit = sql.SQL(" LIMIT {}").format(sql.Literal(CHUNK_ROWS))
            query = sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {}{}) TO STDOUT").format(
                cols, target, where, keys, limit
            )
        rows: list[Row] = []
        with conn.cursor() as cur, cur.copy(query) as cp:
            for r in cp.rows():
                rows.append(tuple(r))
        part.rows = rows

    @staticmethod
    def _target(t: cat.TableInfo) -> sql.Composed:
        # ONLY: an inheritance parent's children are tables of their own (a partitioned
        # table's partitions are not)
        only = sql.SQL("") if t.relkind == "p" else sql.SQL("ONLY ")
        return only + sql.Identifier(t.schema, t.name)

    @staticmethod
    def _key_literal(key: list[str | None], rel: Relation) -> sql.Composed:
        return sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(rel.columns[i].type_name))
            for v, i in zip(key, rel.key_indexes(), strict=True)
        )

    @classmethod
    def _after(cls, after: list[str | None] | None, rel: Relation) -> sql.Composable:
        if after is None:
            return sql.SQL("")
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in rel.key)
        return sql.SQL(" WHERE ({}) > ({})").format(keys, cls._key_literal(after, rel))

    def table(self, oid: int) -> cat.TableInfo:
        """The table ``oid`` as the catalogue has it now (UndefinedTable: gone)."""
        t = cat.table_info(self.conn, oid)
        if t is None:
            raise psycopg.errors.UndefinedTable(f"table {oid} is gone")
        return t

    # -- the stream -------------------------------------------------------------------------

    def committed(self, xid: int) -> None:
        """The stream delivered the commit of ``xid`` (32-bit)."""
        self.recent.add(xid)

    def on_change(self, payload: bytes, xid: int = 0) -> None:
        """A change of the stream (protocol-1 form) of transaction ``xid``: note keys touched
        inside a window, or by a transaction the chunks' snapshots saw as running."""
        w = self.current
        if w is None or not w.watching(xid):
            return
        if payload[0] == 0x54:  # T
            ch = decode_change(payload, 0)
            w.whole.update(set(getattr(ch, "relids", ())) & set(w.key_idx))
            return
        relid = int.from_bytes(payload[1:5], "big")
        idx = w.key_idx.get(relid)
        if idx is None:
            return
        if not idx:
            w.whole.add(relid)
            return
        ch = decode_change(payload, 0)
        assert isinstance(ch, RowChange)
        touched = w.touched[relid]
        effects = w.effects.setdefault(relid, {})
        new_key = tuple(ch.new[i] for i in idx) if ch.new is not None else None
        old_key = tuple(ch.old[i] for i in idx) if ch.old is not None else None
        if old_key is not None and old_key != new_key:
            touched.add(old_key)
            effects.setdefault(old_key, []).append((xid, "gone", None))
        if new_key is not None and ch.new is not None:
            touched.add(new_key)
            partial = any(v is UNCHANGED for v in ch.new)
            if partial and old_key is not None and old_key != new_key:
                w.whole.add(relid)  # the moved row's unchanged values are the old key's
            effects.setdefault(new_key, []).append((xid, "partial" if partial else "row", ch.new))

    def stream_change(self, xid: int, payload: bytes) -> None:
        """A change of a streamed transaction: remember which copied tables it touches."""
        if self.copies and payload[0] != 0x54:
            relid = int.from_bytes(payload[1:5], "big")
            if relid in self.copies:
                self.stream_rels.setdefault(xid, set()).add(relid)

    def stream_end(self, xid: int, committed: bool) -> None:
        """A streamed transaction committed (its changes land here, in stream order) or
        aborted. Committed inside a window over a table it changed: read the chunk again."""
        rels = self.stream_rels.pop(xid, set())
        if committed:
            self.committed(xid)
        w = self.current
        if committed and w is not None and w.watching(xid):
            w.whole.update(rels & set(w.key_idx))

    def on_message(self, payload: bytes) -> bool:
        """A logical decoding message ('M'): our watermarks. True when it logged something."""
        """A logical decoding message ('M'); watermarks of the chunk in flight."""
        pos = 1
        flags = payload[pos]
        pos += 1
        lsn = int.from_bytes(payload[pos : pos + 8], "big")
        pos += 8
        end = payload.index(b"\0", pos)
        prefix = payload[pos:end].decode()
        pos = end + 1
        n = int.from_bytes(payload[pos : pos + 4], "big")
        content = payload[pos + 4 : pos + 4 + n].decode()
        if prefix != PREFIX or flags & 1:
            return False
        kind, _, token = content.partition(":")
        # What a marker logs commits just *before* its LSN (pgoutput gives a message the end
        # of its record): a source transaction whose commit record follows right after has
        # that LSN as its commit LSN, and must not pass for one the log already holds.
        at = lsn - 1
        if kind in ("rename", "shape"):
            if kind == "shape":
                rel = relation_from_json(token.partition(":")[2])
            else:  # written by an older syncline: the catalogue's shape, read now
                try:
                    _msg, rel = self.relation_of(self.table(int(token)))
                except psycopg.errors.UndefinedTable:
                    return False  # dropped since: the poll empties it
            now = int(time.time() * 1_000_000)
            self.writer.begin(0, Position(at), now)
            self.writer.add_relation(rel)
            self.writer.commit(Position(at), Position(lsn), now)
            return True
        if kind == "gone":
            now = int(time.time() * 1_000_000)
            self.writer.begin(0, Position(at), now)
            self.writer.add(encode_truncate((int(token),), False, False, dropped=True))
            self.writer.drop_relation(int(token))
            self.writer.commit(Position(at), Position(lsn), now)
            return True
        w = self.current
        if w is None or token != w.token:
            return False
        if kind == "low":
            w.open = True
            # a copy that starts over empties the table here, before the window's changes:
            # at the high watermark it would also wipe what they did to keys the chunk leaves out
            resets = sorted(
                {
                    p.copy.oid
                    for p in w.parts
                    if p.copy.reset and p.copy.after is None and w.key_idx.get(p.copy.oid)
                }
            )
            if resets:
                now = int(time.time() * 1_000_000)
                self.writer.begin(0, Position(at), now)
                self.writer.add(encode_truncate(tuple(resets), False, False))
                self.writer.commit(Position(at), Position(lsn), now)
                return True
        elif kind == "high" and w.open:
            return self._finish_window(w, lsn)
        return False

    @staticmethod
    def _merged(w: Window, oid: int, parts: list[Part]) -> dict[tuple[object, ...], Row] | None:
        """Rows to log for keys that a partial update (an unchanged TOASTed value left out)
        touched inside the window: the chunk's row (or the latest whole row the stream gave)
        with the later changes applied on top. None: a row's unchanged values cannot be known
        (the chunk is read again)."""
        effects = w.effects.get(oid, {})
        if not any(kind == "partial" for evs in effects.values() for _x, kind, _r in evs):
            return {}
        idx = w.key_idx[oid]
        width = len(w.relations[oid][1].columns)
        base: dict[tuple[object, ...], tuple[Row, Snapshot | None]] = {}
        for part in parts:
            for r in part.rows:
                base[tuple(r[i] for i in idx)] = (r, part.snap)
        out: dict[tuple[object, ...], Row] = {}
        for key, evs in effects.items():
            if not any(kind == "partial" for _x, kind, _r in evs):
                continue  # whole rows: the stream's last one stands, the chunk's is left out
            found = base.get(key)
            row: Row | None = None
            if found is not None:
                # in the chunk: its row, then the changes its snapshot did not see
                row, snap = found
                todo = [(kind, change) for xid, kind, change in evs if snap is None or snap.invisible32(xid)]
            else:
                # not in the chunk: from the stream's last whole row (none: the key lies beyond
                # this chunk, whose own window will bring it)
                last = max((i for i, (_x, kind, _c) in enumerate(evs) if kind != "partial"), default=-1)
                if last < 0:
                    continue
                todo = [(kind, change) for _x, kind, change in evs[last:]]
            for kind, change in todo:
                if kind == "row":
                    row = change
                elif kind == "gone":
                    row = None
                elif row is None or change is None or len(change) != width or len(row) != width:
                    return None  # a changed shape, or a row the chunk did not see
                else:
                    row = tuple(p if v is UNCHANGED else v for p, v in zip(row, change, strict=True))
            if row is not None:
                out[key] = row
        return out

    def _finish_window(self, w: Window, lsn: int) -> bool:
        """At the high watermark: each table's chunks minus the keys touched inside the
        window, as one transaction; the copies' progress after it is durable."""
        self.current = None
        by_copy: dict[int, list[Part]] = {}
        for part in w.parts:
            by_copy.setdefault(part.copy.oid, []).append(part)
        wr = self.writer
        now = int(time.time() * 1_000_000)
        logged = False
        first_rows = 0
        finished: list[tuple[Copy, int, bool]] = []
        for oid, parts in by_copy.items():
            c = parts[0].copy
            if self.copies.get(oid) is not c:
                continue  # left meanwhile
            if oid not in w.relations:
                del self.copies[oid]  # dropped: the next poll empties it
                continue
            if oid in w.whole:
                log.info("table %s changed as a whole while a chunk was read: reading it again", c.qualified)
                continue
            if not logged:
                wr.begin(0, Position(lsn - 1), now)  # before the marker's LSN: see on_message
                logged = True
            wr.add_relation(w.relations[oid][1])
            idx = w.key_idx[oid]
            if not idx:
                wr.add(encode_truncate((oid,), False, False))
            c.reset = False
            touched = w.touched[oid]
            merged = self._merged(w, oid, parts) if idx else {}
            if merged is None:
                log.info(
                    "table %s: a changed row's unchanged values are not known: reading it again", c.qualified
                )
                continue
            n = 0
            add = wr.add_insert
            for part in parts:
                n += len(part.rows)
                if not (idx and touched):
                    for r in part.rows:
                        add(oid, r)
                    continue
                for r in part.rows:
                    if tuple([r[i] for i in idx]) not in touched:
                        add(oid, r)
            for whole_row in merged.values():
                add(oid, whole_row)
            c.done_rows += n
            if not c.estimate and n:
                # never analysed: the table's size over the chunk's bytes per row
                sample = [r for part in parts for r in part.rows[:1000]]
                width = 24 + sum(len(v) for r in sample for v in r if isinstance(v, str)) / len(sample)
                row = self.conn.execute("SELECT pg_catalog.pg_table_size(%s)", (oid,)).fetchone()
                c.estimate = max(c.done_rows, int(int(row[0]) / width)) if row and row[0] else c.done_rows
            last = parts[-1].rows
            more = bool(idx) and len(last) >= CHUNK_ROWS
            if more:
                c.after = [last[-1][i] for i in idx]  # type: ignore[misc]
            else:
                del self.copies[oid]
            first_rows += n if c.first else 0
            finished.append((c, n, more))
        if not logged:
            return False
        wr.commit(Position(lsn - 1), Position(lsn), now)
        wr.sync()
        # the chunks are durable, then the progress: a crash repeats at most one window
        failpoints.hit("copy.chunk_logged")
        self._save(first_rows=first_rows)
        for c, _n, more in finished:
            if more:
                took = max(time.time() - c.wall_started, 1e-3)
                rate = c.done_rows / took
                todo = c.estimate - c.done_rows
                left = f", about {todo / rate:.0f}s left" if todo > 0 else ""
                pct = f" of ~{c.estimate} ({100 * c.done_rows // c.estimate} %)" if c.estimate else ""
                log.info(
                    "copy of %s: %d rows so far%s, %.0f rows/s%s", c.qualified, c.done_rows, pct, rate, left
                )
            else:
                elapsed = time.time() - c.wall_started
                log.info("copy of %s done: %d rows in %.1fs", c.qualified, c.done_rows, elapsed)
        return True
