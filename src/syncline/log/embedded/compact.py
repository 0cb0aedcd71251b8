"""The compacted log: the latest row per key (deletes kept as tombstones until every view has
applied them), maintained by an internal consumer, so that a new view is filled without
touching the source and the log can be trimmed.

It lives in ``compact.db`` beside ``log.db`` (its own SQLite file: its writes never contend
with the capture's appends) and is itself a view: it applies net effects per batch and
stores its checkpoint in the same transaction.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    Transaction,
    column_mapping,
)
from syncline.core.records import decode_tuple, encode_tuple
from syncline.views.base import Batch
from syncline.views.netting import KeylessOp, TableDelta
from syncline.views.skeleton import AppliedView

log = logging.getLogger(__name__)

NAME = "_compactor"

ROWS_COLUMNS = """(
    relid INTEGER NOT NULL, key BLOB NOT NULL, relseq INTEGER NOT NULL,
    row BLOB, seq INTEGER NOT NULL, PRIMARY KEY (relid, key)
) WITHOUT ROWID"""
"""The ``rows`` table's columns (also for rewriting a file's older rowid table)."""
TOMBSTONES = "CREATE INDEX IF NOT EXISTS rows_tombstones ON rows (seq) WHERE row IS NULL"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rows {ROWS_COLUMNS};
{TOMBSTONES};
CREATE TABLE IF NOT EXISTS shapes (relid INTEGER NOT NULL, relseq INTEGER NOT NULL,
    detail BLOB NOT NULL, PRIMARY KEY (relid, relseq));
CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
    commit_lsn INTEGER NOT NULL, log_id TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS format (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
"""

PACKED_ROWS = 2
"""``format.version`` of a compact.db whose keys and rows are msgpack arrays (encoded in C,
about ten times faster than the item encoding); a file without it (written before) keeps
keys and rows in the record items' tuple encoding, version 1."""

_ROW = msgspec.msgpack.Decoder(tuple[str | None, ...])
_PACK = msgspec.msgpack.Encoder()


class RowCodec:
    """How one compact.db stores keys and rows: one form per file, since keys are compared
    (and keyless rows matched) by their stored bytes."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.packed = version >= PACKED_ROWS

    def key(self, k: tuple[object, ...]) -> bytes:
        return _PACK.encode(k) if self.packed else encode_tuple(k)  # type: ignore[arg-type]

    def row(self, r: Row) -> bytes:
        return _PACK.encode(r) if self.packed else encode_tuple(r)

    def decode(self, data: bytes) -> Row:
        return _ROW.decode(data) if self.packed else decode_tuple(data, 0)[0]


def row_codec(conn: sqlite3.Connection, writable: bool) -> RowCodec:
    """The file's form; a writable open of a new file chooses the packed one."""
    try:
        got = conn.execute("SELECT version FROM format WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # read-only, written before the format table
        return RowCodec(1)
    if got is not None:
        return RowCodec(int(got[0]))
    if not writable:
        return RowCodec(1)
    used = conn.execute("SELECT 1 FROM position UNION ALL SELECT 1 FROM shapes LIMIT 1").fetchone()
    version = 1 if used else PACKED_ROWS
    conn.execute("INSERT INTO format VALUES (1, ?)", (version,))
    return RowCodec(version)


def open_compact(path: Path, readonly: bool = False) -> sqlite3.Connection:
    db = path / "compact.db"
    if readonly:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(str(db), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    if not readonly:
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


CACHE_KIB = 16384
"""The compactor's page cache (SQLite's default is 2 MB): an update of a random key touches a
B-tree page that 2 MB rarely still holds once the table outgrows it (250,000 random-key
updates of a 250,000-row table, ``bench/micro.py``: 3.1 s of CPU with 2 MB, 1.9 s with
16 MB; 5.1 s for the rowid table this file had before, with 2 MB)."""


def _rows_without_rowid(conn: sqlite3.Connection) -> None:
    """Rewrite a ``rows`` table created before it was a ``WITHOUT ROWID`` table (one B-tree
    ordered by (relid, key) instead of a rowid table plus its key index: an upsert touches
    one tree, not two). Once, in one transaction: a crash leaves the old table."""
    got = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'rows'").fetchone()
    if got is None or "WITHOUT ROWID" in str(got[0]).upper():
        return
    (n,) = conn.execute("SELECT count(*) FROM rows").fetchone()
    log.info("compact.db: rewriting its %d rows without rowids (once)", n)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE rows_new {ROWS_COLUMNS}")
        conn.execute("INSERT INTO rows_new SELECT relid, key, relseq, row, seq FROM rows")
        conn.execute("DROP TABLE rows")
        conn.execute("ALTER TABLE rows_new RENAME TO rows")
        conn.execute(TOMBSTONES)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class CompactedView(AppliedView):
    """The compactor, run by the supervisor like a view."""

    kind = "compacted"

    def __init__(self, path: Path) -> None:
        super().__init__(NAME)
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._relseq: dict[int, int] = {}
        self._next_relseq = 1
        self._position = Checkpoint()
        self._seq = 0
        self._last_purge = 0.0
        self._keyless_n = itertools.count()
        self._codec = RowCodec(PACKED_ROWS)

    def open(self) -> Checkpoint:
        self.conn = open_compact(self.path)
        _rows_without_rowid(self.conn)
        self._codec = row_codec(self.conn, writable=True)
        for relid, relseq in self.conn.execute("SELECT relid, max(relseq) FROM shapes GROUP BY relid"):
            self._relseq[int(relid)] = int(relseq)
            self._next_relseq = max(self._next_relseq, int(relseq) + 1)
        if "log_id" not in {c[1] for c in self.conn.execute("PRAGMA table_info(position)")}:
            # written before logs had ids
            self.conn.execute("ALTER TABLE position ADD COLUMN log_id TEXT NOT NULL DEFAULT ''")
        row = self.conn.execute("SELECT seq, commit_lsn, log_id FROM position WHERE id = 1").fetchone()
        self._position = Checkpoint.stored(*row) if row else Checkpoint()
        return self._position

    # The skeleton is AppliedView.apply: every table, errors raised as they are.

    def _ensure_open(self) -> None:
        if self.conn is None:
            self.open()

    def _applied(self) -> Checkpoint:
        return self._position

    def _begin(self, batch: Batch) -> bool:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return batch.relations

    def _selected(self, batch: Batch, rels: dict[int, Relation]) -> set[int] | None:
        return None

    def _before_steps(self, batch: Batch, selected: set[int] | None) -> None:
        self._seq = batch.checkpoint.seq

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        assert self.conn is not None
        relseq = self._next_relseq
        self._next_relseq += 1
        old_seq = self._relseq.get(new.oid)
        self._relseq[new.oid] = relseq
        self.conn.execute("INSERT INTO shapes VALUES (?, ?, ?)", (new.oid, relseq, relation_to_json(new)))
        if old is not None and old_seq is not None:
            self._reshape_rows(old, new, old_seq, relseq)

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        assert self.conn is not None
        self.conn.execute("UPDATE rows SET row = NULL, seq = ? WHERE relid = ?", (self._seq, rel.oid))

    def _on_delta(self, d: TableDelta) -> None:
        conn = self.conn
        assert conn is not None
        seq = self._seq
        oid = d.relation.oid
        relseq = self._relseq.get(oid, 0)
        if d.ops:
            self._keyless(oid, relseq, seq, d.ops)
            return
        codec = self._codec
        key, enc = codec.key, codec.row
        resolved: list[Row] = []
        for row, origin in d.partials():
            got = conn.execute(
                "SELECT row FROM rows WHERE relid = ? AND key = ?", (oid, key(origin))
            ).fetchone()
            if got is None or got[0] is None:
                resolved.append(tuple(None if v is UNCHANGED else v for v in row))
                continue
            stored = codec.decode(bytes(got[0]))
            resolved.append(tuple(s if v is UNCHANGED else v for s, v in zip(stored, row, strict=False)))
        conn.executemany(
            "INSERT INTO rows (relid, key, relseq, row, seq) VALUES (?, ?, ?, NULL, ?)"
            " ON CONFLICT (relid, key) DO UPDATE SET row = NULL, seq = excluded.seq",
            [(oid, key(k), relseq, seq) for k in d.deleted],
        )
        kidx = d.relation.key_indexes()
        conn.executemany(
            "INSERT OR REPLACE INTO rows (relid, key, relseq, row, seq) VALUES (?,?,?,?,?)",
            [(oid, key(tuple([r[i] for i in kidx])), relseq, enc(r), seq) for r in [*d.upserts(), *resolved]],
        )

    def _commit(self, batch: Batch) -> None:
        assert self.conn is not None
        cp = batch.checkpoint
        self.conn.execute(
            "INSERT OR REPLACE INTO position (id, seq, commit_lsn, log_id) VALUES (1, ?, ?, ?)",
            (cp.seq, cp.commit_lsn, cp.log),
        )
        self.conn.execute("COMMIT")
        self._position = cp

    def _abort(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        self._relseq.clear()
        self._next_relseq = 1
        self.close()

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        return e

    def _keyless(self, oid: int, relseq: int, seq: int, ops: list[KeylessOp]) -> None:
        """A table without a key: every row stored under its own key (log record and
        number); an update or delete removes one stored row equal to the old row."""
        assert self.conn is not None
        for op in ops:
            if op.op != "insert":
                assert op.old is not None
                self.conn.execute(
                    "DELETE FROM rows WHERE relid = ? AND key = (SELECT key FROM rows WHERE relid = ?"
                    " AND row = ? LIMIT 1)",
                    (oid, oid, self._codec.row(op.old)),
                )
            if op.new is not None and op.op != "delete":
                self.conn.execute(
                    "INSERT INTO rows (relid, key, relseq, row, seq) VALUES (?, ?, ?, ?, ?)",
                    (
                        oid,
                        self._codec.key(("", str(seq), str(next(self._keyless_n)))),
                        relseq,
                        self._codec.row(op.new),
                        seq,
                    ),
                )

    def _reshape_rows(self, old: Relation, new: Relation, old_seq: int, new_seq: int) -> None:
        """Rewrite a table's stored rows into its new shape: columns matched by name, or by
        position and type for a renamed one; added columns are NULL."""
        assert self.conn is not None
        mapping = column_mapping(old, new)
        rows = self.conn.execute(
            "SELECT key, row FROM rows WHERE relid = ? AND relseq = ? AND row IS NOT NULL",
            (new.oid, old_seq),
        ).fetchall()
        out = []
        for key, data in rows:
            row = self._codec.decode(bytes(data))
            reshaped = tuple(None if i is None else row[i] for i in mapping)
            out.append((new_seq, self._codec.row(reshaped), new.oid, key))
        self.conn.executemany("UPDATE rows SET relseq = ?, row = ? WHERE relid = ? AND key = ?", out)
        self.conn.execute("UPDATE rows SET relseq = ? WHERE relid = ? AND row IS NULL", (new_seq, new.oid))

    def make_durable(self) -> bool:
        """Sync everything committed so far (False: not now, a transaction is open).
        Commits are not synced one by one (``synchronous=NORMAL``): after a power cut the
        compacted log may be back a few batches, which the log still holds as long as it
        is trimmed only after this."""
        assert self.conn is not None
        if self._in_txn:
            return False
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # syncs the WAL, then the file
        return True

    def purge_tombstones(self, upto_seq: int) -> int:
        """Drop tombstones every view has applied."""
        assert self.conn is not None
        if self._in_txn:
            return 0
        cur = self.conn.execute("DELETE FROM rows WHERE row IS NULL AND seq <= ?", (upto_seq,))
        return cur.rowcount

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if self._in_txn:
                    self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


def iter_compacted(path: Path, rows_per_part: int = 20_000) -> Iterator[Transaction]:
    """The compacted state as synthetic transactions (one consistent SQLite read): for each
    table and shape, a SchemaChange then its rows. The last one has ``last = True`` and the
    compactor's position as ``seq``/``commit_lsn``."""
    if not (path / "compact.db").exists():
        return
    conn = open_compact(path, readonly=True)
    try:
        conn.execute("BEGIN")
        pos = conn.execute("SELECT seq, commit_lsn FROM position WHERE id = 1").fetchone()
        if pos is None:
            return
        seq, clsn = int(pos[0]), int(pos[1])
        decode = row_codec(conn, writable=False).decode
        shapes: dict[tuple[int, int], Relation] = {
            (int(r), int(s)): relation_from_json(d)
            for r, s, d in conn.execute("SELECT relid, relseq, detail FROM shapes ORDER BY relid, relseq")
        }
        now = int(time.time() * 1_000_000)
        items: list[object] = []
        ordinal = 0
        for (relid, relseq), rel in shapes.items():
            items.append(SchemaChange(rel, ordinal))
            ordinal += 1
            for (data,) in conn.execute(
                "SELECT row FROM rows WHERE relid = ? AND relseq = ? AND row IS NOT NULL",
                (relid, relseq),
            ):
                items.append(RowChange("insert", relid, decode(bytes(data)), None, ordinal))
                ordinal += 1
                if len(items) >= rows_per_part:
                    yield Transaction(seq, clsn, clsn, 0, now, items, last=False, snapshot=True)  # type: ignore[arg-type]
                    items = []
        yield Transaction(seq, clsn, clsn, 0, now, items, last=True, snapshot=True)  # type: ignore[arg-type]
        conn.execute("COMMIT")
    finally:
        conn.close()
