"""The embedded durable log: SQLite in WAL mode under ``[log] path``.

Why SQLite: one file, crash-safe transactions with fsync on commit (``synchronous=FULL``),
concurrent readers in other processes while one writer appends (WAL mode), indexes for
compaction and retention, and nothing to operate. Records are *parts* of transactions:
framed record items (:mod:`syncline.core.records`). A transaction larger than a part spans
consecutive records; only the last has ``last = 1``. The high-water mark ``hw`` (in
``meta``) is the seq of the newest record that ends a committed transaction: readers never
see beyond it, and on open every record above it (the tail of a transaction cut by a crash)
is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.errors import LogError
from syncline.core.events import (
    Checkpoint,
    Item,
    Relation,
    Row,
    RowChange,
    Transaction,
    Truncate,
)
from syncline.core.position import Position
from syncline.core.records import (
    RelationResolver,
    decode_change,
    decode_items,
    encode_relation_item,
    frame,
    iter_changes,
    iter_framed,
    legacy_relations,
    pack_record,
)
from syncline.log import base

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    commit_lsn INTEGER NOT NULL,
    end_lsn INTEGER NOT NULL,
    xid INTEGER NOT NULL,
    commit_time INTEGER NOT NULL,
    last INTEGER NOT NULL,
    snapshot INTEGER NOT NULL DEFAULT 0,
    first_ord INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_commit_lsn ON records (commit_lsn);
CREATE TABLE IF NOT EXISTS relations (
    oid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    msg BLOB NOT NULL,
    detail BLOB NOT NULL,
    PRIMARY KEY (oid, seq)
);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    xid INTEGER NOT NULL,
    subxid INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_xid ON pending (xid, subxid);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0,
    commit_lsn INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'new',
    error TEXT NOT NULL DEFAULT '',
    applied_events INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS docs (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS copy_requests (
    id INTEGER PRIMARY KEY,
    tables TEXT NOT NULL,
    requested_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS view_control (
    name TEXT PRIMARY KEY,
    fixable INTEGER NOT NULL DEFAULT 0,
    action TEXT NOT NULL DEFAULT '',
    retry_requested INTEGER NOT NULL DEFAULT 0,
    next_retry REAL NOT NULL DEFAULT 0
);
"""

PART_BYTES = 4 << 20
"""A transaction is cut into records of about this size (bounded memory for huge ones)."""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    try:
        return _connect(path, readonly)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):
            raise
        raise LogError(
            f"the log at {path / 'log.db'} is not a syncline log ({e}): it is damaged or another "
            "file; move it away to start a new log (every view then needs an empty store), or "
            "restore it from a backup"
        ) from None


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    db = path / "log.db"
    if readonly:
        if not db.exists():
            raise LogError(f"no log at {db}")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        path.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def init_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def get_meta(conn: sqlite3.Connection, key: str, default: str = "") -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: str | int) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


LogLocked = base.LogLocked

W = TypeVar("W", bound="EmbeddedLogWriter")
P = ParamSpec("P")
R = TypeVar("R")


def poisons(fn: Callable[Concatenate[W, P], R]) -> Callable[Concatenate[W, P], R]:
    """A writer whose write or sync failed is *broken*: what it had buffered may not be in
    the log, so it must never again move ``hw`` (a later sync would cover records that were
    never written). Only a new writer, which starts again from the durable ``hw``, may."""

    @functools.wraps(fn)
    def wrapper(self: W, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.broken:
            raise LogError(f"the log writer at {self.where} failed earlier; a new one must be opened")
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            self.broken = True
            raise

    return wrapper


class EmbeddedLogWriter:
    """The single appender. Holds an exclusive lock on the data directory."""

    part_bytes = PART_BYTES
    broken = False

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._lockf = open(path / "writer.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockf.close()
            raise LogLocked(
                f"the log at {path} is in use by another `syncline run` (lock {path}/writer.lock)"
            ) from None
        self.conn = connect(path)
        init_schema(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        hw = int(get_meta(self.conn, "hw", "0"))
        self.conn.execute("DELETE FROM records WHERE seq > ?", (hw,))
        self.conn.execute("DELETE FROM relations WHERE seq > ?", (hw,))
        self.conn.execute("DELETE FROM pending")
        if not get_meta(self.conn, base.LOG_ID):
            set_meta(self.conn, base.LOG_ID, base.new_log_id())
        self.conn.execute("COMMIT")
        row = self.conn.execute("SELECT max(seq) FROM records").fetchone()
        self.hw = hw
        self.next_seq = max(hw, int(row[0] or 0)) + 1
        self._last_commit_lsn = int(get_meta(self.conn, "last_commit_lsn", "0"))
        self._durable_end = int(get_meta(self.conn, "durable_end_lsn", "0"))
        self._received_lsn = int(get_meta(self.conn, "received_lsn", "0"))
        self._rows: list[tuple[object, ...]] = []
        self._rows_bytes = 0
        self._in_tx = False
        # current transaction
        self._msgs: list[bytes | RowChange] = []
        self._msgs_bytes = 0
        self._tx: tuple[int, int, int] = (0, 0, 0)  # xid, commit_lsn, commit_time
        self._tx_ord = 0
        self._tx_snapshot = False
        self._pending_hw = hw
        self._pending_end = self._durable_end
        self._pending_commit_lsn = self._last_commit_lsn
        self._relations_latest: dict[int, bytes] = {}
        for oid, msg in self.conn.execute(
            "SELECT oid, msg FROM relations r WHERE seq = "
            "(SELECT max(seq) FROM relations r2 WHERE r2.oid = r.oid)"
        ):
            self._relations_latest[int(oid)] = bytes(msg)
        # streamed transactions: xid -> list of (subxid, messages)
        self._streams: dict[int, list[tuple[int, list[bytes]]]] = {}
        self._stream_bytes: dict[int, int] = {}
        self._stream_rels: dict[int, list[tuple[int, bytes, bytes]]] = {}
        self._rows_relations: list[tuple[int, bytes, bytes]] = []
        self._rels_to_write: list[tuple[int, int, bytes, bytes]] = []

    # -- metadata -------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return str(self.path)

    def start_count(self) -> int:
        return start_count(self.path)

    def running_views_lag(self) -> int | None:
        row = self.conn.execute(
            "SELECT min(seq) FROM consumers WHERE state = 'running' AND name <> '_compactor'"
        ).fetchone()
        return None if row is None or row[0] is None else self.hw - int(row[0])

    def copy_requests(self) -> list[tuple[int, list[str]]]:
        rows = self.conn.execute("SELECT id, tables FROM copy_requests ORDER BY id").fetchall()
        return [(int(i), [str(q) for q in json.loads(t)]) for i, t in rows]

    def drop_copy_requests(self, upto: int) -> None:
        self.conn.execute("DELETE FROM copy_requests WHERE id <= ?", (upto,))

    def meta(self, key: str, default: str = "") -> str:
        return get_meta(self.conn, key, default)

    def set_meta_now(self, **values: str | int) -> None:
        """Write metadata durably right away (outside the data path; a broken writer still
        records its state, without syncing the data)."""
        if not self.broken:
            self.sync()
        self.conn.execute("BEGIN IMMEDIATE")
        for k, v in values.items():
            set_meta(self.conn, k, v)
        self.conn.execute("COMMIT")

    def last_commit_lsn(self) -> Position:
        return Position(self._pending_commit_lsn)

    def durable_end_lsn(self) -> Position:
        return Position(self._durable_end)

    def is_empty(self) -> bool:
        return self.hw == 0 and not self._rows

    # -- appending --------------------------------------------------------------------------

    def begin(self, xid: int, commit_lsn: Position, commit_time: int, snapshot: bool = False) -> None:
        self._tx = (xid, commit_lsn, commit_time)
        self._tx_ord = 0
        self._tx_snapshot = snapshot
        self._msgs = []
        self._msgs_bytes = 0

    def add(self, message: bytes) -> None:
        self._msgs.append(message)
        self._msgs_bytes += len(message) + 4
        if self._msgs_bytes >= self.part_bytes:
            self._cut(last=False, end_lsn=0)

    def add_insert(self, relid: int, row: Row) -> None:
        """A whole row inserted (a copy's rows): kept as it is, where :meth:`add` would have
        it encoded into an item only for the record's packing to decode it again."""
        self._msgs.append(RowChange("insert", relid, row))
        # the item's size: head, per value its kind and length, the text (characters)
        self._msgs_bytes += 12 + 5 * len(row) + sum(map(len, filter(None, row)))  # type: ignore[arg-type]
        if self._msgs_bytes >= self.part_bytes:
            self._cut(last=False, end_lsn=0)

    def add_relation(self, relation: Relation) -> None:
        """Record a table's shape (with its catalogue details) from here on, and add it
        inline as a relation item."""
        item = encode_relation_item(relation)
        self._note_relation(item, relation, self._rows_relations)
        self.add(item)

    def drop_relation(self, oid: int) -> None:
        """The table ``oid`` left the source with the transaction being added: from its seq
        on, the log's relations no longer list it (an empty entry marks that)."""
        self._relations_latest.pop(oid, None)
        self._rows_relations.append((oid, b"", b""))

    def _note_relation(
        self, message: bytes, relation: Relation, into: list[tuple[int, bytes, bytes]]
    ) -> None:
        if self._relations_latest.get(relation.oid) != message:
            self._relations_latest[relation.oid] = message
            into.append((relation.oid, message, relation_to_json(relation)))

    def _cut(self, last: bool, end_lsn: int) -> None:
        xid, commit_lsn, commit_time = self._tx
        n = len(self._msgs)
        data = pack_record(self._msgs)
        seq = self._take_seq(len(data))
        self._rows.append(
            (
                seq,
                commit_lsn,
                end_lsn,
                xid,
                commit_time,
                1 if last else 0,
                1 if self._tx_snapshot else 0,
                self._tx_ord,
                n,
                data,
            )
        )
        self._flush_rels_for(seq)
        self._rows_bytes += self._msgs_bytes
        self._tx_ord += n
        self._msgs = []
        self._msgs_bytes = 0
        if not last and self._rows_bytes >= self.part_bytes * 4:
            self._write_rows()
            self._commit_partial()

    def _take_seq(self, size: int) -> int:
        """The seq of the next record (``size`` bytes of data)."""
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def commit(self, commit_lsn: Position, end_lsn: Position, commit_time: int) -> None:
        xid, _c, _t = self._tx
        self._tx = (xid, commit_lsn, commit_time)
        if self._tx_ord == 0 and not self._msgs and not self._tx_snapshot:
            # An empty transaction (only unpublished tables): nothing to keep, but its end
            # LSN is received and may be confirmed once durable.
            self._pending_end = max(self._pending_end, end_lsn)
            self._pending_commit_lsn = max(self._pending_commit_lsn, commit_lsn)
            return
        self._cut(last=True, end_lsn=end_lsn)
        self._pending_hw = self.next_seq - 1
        self._pending_end = max(self._pending_end, end_lsn)
        self._pending_commit_lsn = max(self._pending_commit_lsn, commit_lsn)

    def abort(self) -> None:
        """Forget the transaction being built (e.g. the source connection dropped)."""
        self._msgs = []
        self._msgs_bytes = 0

    def pending_bytes(self) -> int:
        return self._rows_bytes

    @poisons
    def _write_rows(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        try:
            if self._rows:
                self.conn.executemany(
                    "INSERT INTO records (seq, commit_lsn, end_lsn, xid, commit_time, last,"
                    " snapshot, first_ord, count, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    self._rows,
                )
            if self._rels_to_write:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO relations (oid, seq, msg, detail) VALUES (?,?,?,?)",
                    self._rels_to_write,
                )
                self._rels_to_write = []
        except sqlite3.Error as e:
            raise LogError(f"cannot write the log at {self.path}: {e}") from e
        self._rows = []
        self._rows_bytes = 0

    @poisons
    def _commit_partial(self) -> None:
        """Commit rows of a transaction still being received, without moving ``hw``: the
        write lock is released (readers and the views' bookkeeping are never blocked for
        long), and after a crash these rows are above ``hw`` and deleted at open."""
        if self._in_tx:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise LogError(f"cannot write the log at {self.path}: {e}") from e
            self._in_tx = False

    @poisons
    def sync(self, received_lsn: Position | None = None) -> Position:
        """Write buffered records and commit durably; return the durable end LSN."""
        dirty = (
            bool(self._rows)
            or self._in_tx
            or self._pending_hw != self.hw
            or self._pending_end != self._durable_end
        )
        if received_lsn is not None and received_lsn > self._received_lsn:
            dirty = True
        if not dirty:
            return Position(self._durable_end)
        try:
            self._write_rows()
            set_meta(self.conn, "hw", self._pending_hw)
            set_meta(self.conn, "durable_end_lsn", self._pending_end)
            set_meta(self.conn, "last_commit_lsn", self._pending_commit_lsn)
            rec = max(self._pending_end, received_lsn or 0, self._received_lsn)
            set_meta(self.conn, "received_lsn", rec)
            self.conn.execute("COMMIT")
            self._in_tx = False
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self._in_tx = False
            raise LogError(f"cannot commit the log at {self.path}: {e}") from e
        self.hw = self._pending_hw
        self._durable_end = self._pending_end
        self._last_commit_lsn = self._pending_commit_lsn
        self._received_lsn = rec
        return Position(self._durable_end)

    # -- streamed (in-progress) transactions -------------------------------------------------

    def stream_add_relation(self, xid: int, relation: Relation) -> None:
        """A table's shape inside a stream: recorded when the transaction commits."""
        item = encode_relation_item(relation)
        self._note_relation(item, relation, self._stream_rels.setdefault(xid, []))
        self.stream_add(xid, xid, item)

    def stream_add(self, xid: int, subxid: int, message: bytes) -> None:
        runs = self._streams.setdefault(xid, [])
        if not runs or runs[-1][0] != subxid:
            runs.append((subxid, []))
        runs[-1][1].append(message)
        size = self._stream_bytes.get(xid, 0) + len(message) + 4
        self._stream_bytes[xid] = size
        if size >= self.part_bytes:
            self._spill(xid)

    def _spill(self, xid: int) -> None:
        runs = self._streams.pop(xid, [])
        self._stream_bytes.pop(xid, None)
        if not runs:
            return
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        self.conn.executemany(
            "INSERT INTO pending (xid, subxid, count, data) VALUES (?,?,?,?)",
            [(xid, sub, len(msgs), pack_record(msgs)) for sub, msgs in runs if msgs],
        )
        self._commit_partial()

    def stream_abort(self, xid: int, subxid: int) -> None:
        if subxid == xid or subxid == 0:
            self._streams.pop(xid, None)
            for oid, _m, _d in self._stream_rels.pop(xid, []):
                self._relations_latest.pop(oid, None)
            self._stream_bytes.pop(xid, None)
            if not self._in_tx:
                self.conn.execute("BEGIN IMMEDIATE")
                self._in_tx = True
            self.conn.execute("DELETE FROM pending WHERE xid = ?", (xid,))
            return
        runs = self._streams.get(xid)
        if runs:
            self._streams[xid] = [(s, m) for s, m in runs if s != subxid]
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        self.conn.execute("DELETE FROM pending WHERE xid = ? AND subxid = ?", (xid, subxid))

    def stream_discard(self, xid: int) -> None:
        self.stream_abort(xid, xid)

    def stream_commit(self, xid: int, commit_lsn: Position, end_lsn: Position, commit_time: int) -> None:
        """Move a streamed transaction's buffered changes into the log, in order."""
        self._spill(xid)
        self._write_rows()
        ids = [
            int(r[0])
            for r in self.conn.execute("SELECT id FROM pending WHERE xid = ? ORDER BY id", (xid,)).fetchall()
        ]
        self.begin(xid, commit_lsn, commit_time)
        self._rows_relations.extend(self._stream_rels.pop(xid, []))
        for pid in ids:
            count, data = self.conn.execute("SELECT count, data FROM pending WHERE id = ?", (pid,)).fetchone()
            seq = self._take_seq(len(data))
            self._rows.append((seq, commit_lsn, 0, xid, commit_time, 0, 0, self._tx_ord, count, data))
            self._flush_rels_for(seq)
            self._tx_ord += count
            self._rows_bytes += len(data)
            if self._rows_bytes >= self.part_bytes * 4:
                self._write_rows()
                self._commit_partial()
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        self.conn.execute("DELETE FROM pending WHERE xid = ?", (xid,))
        # an empty final part closes the transaction
        self.commit(commit_lsn, end_lsn, commit_time)

    def _flush_rels_for(self, seq: int) -> None:
        if self._rows_relations:
            self._rels_to_write.extend((o, seq, m, d) for o, m, d in self._rows_relations)
            self._rows_relations = []

    # -- repairs (``syncline verify --repair``) ------------------------------------------------

    def append_repair(self, messages: list[bytes], commit_time: int) -> int:
        """Append ``messages`` (Insert / Delete, protocol-1 form) as one synthetic transaction
        at the end of the log; return its seq (0 when there is nothing to append).

        Its commit LSN is the log's newest (not above it): the capture skips a transaction
        only when its commit LSN is not above the log's newest, so every source transaction
        not yet captured is still appended after the repair. xid 0 and the meta keys
        ``repairs`` / ``last_repair_seq`` mark it as a repair."""
        if not messages:
            return 0
        self.sync()
        lsn = self.last_commit_lsn()
        self.begin(0, lsn, commit_time)
        for m in messages:
            self.add(m)
        self.commit(lsn, self.durable_end_lsn(), commit_time)
        seq = self.next_seq - 1
        self.sync()
        self.set_meta_now(repairs=int(self.meta("repairs", "0")) + 1, last_repair_seq=seq)
        return seq

    def apply_repair_requests(self) -> int:
        """Append the repairs requested (:func:`request_repair`) by ``syncline verify
        --repair`` while ``run`` runs; return how many were appended.

        The capture calls this at a transaction boundary (no source transaction or stream
        part being received). A request read at snapshot position ``P`` waits until the log
        has received everything before ``P``; then, in ONE write transaction (nothing can
        interleave), every requested key that a logged transaction with commit LSN >= ``P``
        touched is dropped (the log already holds a newer value), and the rest is appended
        as a repair record with the next seq."""
        try:
            pending = self.conn.execute(
                "SELECT id, lsn, data FROM repair_requests WHERE state = 'pending' ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # no request was ever made
            return 0
        self.sync()
        received = max(self._durable_end, int(self.meta("received_lsn", "0")))
        due = [(int(i), int(lsn), bytes(d)) for i, lsn, d in pending if int(lsn) <= received]
        if not due:
            return 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            trimmed_lsn = int(self.meta("trimmed_commit_lsn", "0"))
            for rid, lsn, data in due:
                if trimmed_lsn >= lsn:
                    # records committed after the snapshot may be trimmed already: their keys
                    # cannot be known, so the rows may be older than what views hold
                    self.conn.execute("UPDATE repair_requests SET state = 'stale' WHERE id = ?", (rid,))
                    continue
                rels = {
                    int(o): relation_from_json(d)
                    for o, d in self.conn.execute(
                        "SELECT oid, detail FROM relations r WHERE seq = "
                        "(SELECT max(seq) FROM relations r2 WHERE r2.oid = r.oid) AND length(detail) > 0"
                    )
                }
                touched: set[tuple[int, tuple[object, ...]]] = set()
                # tables whose shape changed since P: their keys may have moved
                whole: set[int] = {
                    int(o)
                    for (o,) in self.conn.execute(
                        "SELECT oid FROM relations WHERE seq >= (SELECT min(seq) FROM records"
                        " WHERE commit_lsn >= ? AND xid <> 0)",
                        (lsn,),
                    )
                }
                for (blob,) in self.conn.execute(
                    "SELECT data FROM records WHERE commit_lsn >= ? AND xid <> 0 ORDER BY seq", (lsn,)
                ):
                    _touched_keys(bytes(blob), rels, touched, whole)
                keep: list[bytes] = []
                for m in iter_framed(data):
                    ch = decode_change(m, 0)
                    keys: set[tuple[int, tuple[object, ...]]] = set()
                    _touched_keys(frame([m]), rels, keys, set())
                    relid = ch.relid if isinstance(ch, RowChange) else -1
                    if relid in whole or keys & touched:
                        continue
                    keep.append(m)
                seq = 0
                if keep:
                    seq = self.next_seq
                    self.next_seq += 1
                    lsn_now = self._pending_commit_lsn
                    self.conn.execute(
                        "INSERT INTO records (seq, commit_lsn, end_lsn, xid, commit_time, last,"
                        " snapshot, first_ord, count, data) VALUES (?,?,?,0,?,1,0,0,?,?)",
                        (
                            seq,
                            lsn_now,
                            self._durable_end,
                            int(time.time() * 1_000_000),
                            len(keep),
                            frame(keep),
                        ),
                    )
                    set_meta(self.conn, "hw", seq)
                    set_meta(self.conn, "repairs", int(self.meta("repairs", "0")) + 1)
                    set_meta(self.conn, "last_repair_seq", seq)
                self.conn.execute(
                    "UPDATE repair_requests SET state = 'done', seq = ?, dropped = ? WHERE id = ?",
                    (seq, sum(1 for _ in iter_framed(data)) - len(keep), rid),
                )
                if seq:
                    self.hw = self._pending_hw = seq
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self.next_seq = (
                max(self.hw, int(self.conn.execute("SELECT max(seq) FROM records").fetchone()[0] or 0)) + 1
            )
            raise
        return len(due)

    # -- snapshot bookkeeping --------------------------------------------------------------

    def reset(self) -> None:
        """Discard everything (an unfinished first snapshot). A log that held records is
        another log from here on (a new id); one that never did keeps its id (views may have
        read it already)."""
        log_id = get_meta(self.conn, base.LOG_ID) if self.hw == 0 else ""
        self.conn.execute("BEGIN IMMEDIATE")
        for t in ("records", "relations", "pending", "meta"):
            self.conn.execute(f"DELETE FROM {t}")  # noqa: S608 - fixed table names
        set_meta(self.conn, base.LOG_ID, log_id or base.new_log_id())
        self.conn.execute("COMMIT")
        self.hw = 0
        self.next_seq = 1
        self._pending_hw = 0
        self._pending_end = self._durable_end = 0
        self._pending_commit_lsn = self._last_commit_lsn = 0
        self._received_lsn = 0
        self._relations_latest.clear()
        self._rows_relations = []
        self._rels_to_write = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._in_tx:
                self.conn.execute("ROLLBACK")
        self.conn.close()
        with contextlib.suppress(Exception):
            fcntl.flock(self._lockf, fcntl.LOCK_UN)
            self._lockf.close()


class EmbeddedLogReader:
    """Reads committed records for one consumer; any number of readers, any process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path, readonly=True)
        self.resolver = RelationResolver(reload=self._load_relations)
        self.state: dict[int, Relation] = {}
        self._load_relations()

    def _load_relations(self) -> None:
        for _oid, msg, detail in self.conn.execute(
            "SELECT oid, msg, detail FROM relations WHERE length(detail) > 0"
        ):
            rel = relation_from_json(detail)
            self.resolver.details[(rel.oid, bytes(msg))] = rel

    def hw(self) -> int:
        return int(get_meta(self.conn, "hw", "0"))

    def relations_at(self, seq: int) -> dict[int, Relation]:
        out: dict[int, Relation] = {}
        for _oid, detail in self.conn.execute(
            "SELECT oid, detail FROM relations r WHERE seq = (SELECT max(seq) FROM relations r2"
            " WHERE r2.oid = r.oid AND r2.seq <= ?) AND length(detail) > 0",
            (seq,),
        ):
            rel = relation_from_json(detail)
            out[rel.oid] = rel
        return out

    def start(self, after: Checkpoint) -> None:
        self.state = self.relations_at(after.seq)

    def read(
        self, after: Checkpoint, max_events: int, part: tuple[int, int] | None = None
    ) -> list[Transaction]:
        """Committed records after ``after.seq``: about ``max_events`` events. The batch may
        end inside a transaction (its last record has ``last`` False) when the transaction
        is larger than ``max_events``; otherwise it ends at a transaction boundary. ``part``:
        leave out row changes no key of which is in that partition (see ``decode_items``)."""
        hw = self.hw()
        if after.seq >= hw:
            return []
        cur = self.conn.execute(
            "SELECT seq, commit_lsn, end_lsn, xid, commit_time, last, snapshot, first_ord,"
            " count, data FROM records WHERE seq > ? AND seq <= ? ORDER BY seq",
            (after.seq, hw),
        )
        out: list[Transaction] = []
        events = 0
        try:
            for seq, clsn, end, xid, ctime, last, snap, ford, count, data in cur:
                items = list(self._decode(bytes(data), ford, part))
                out.append(
                    Transaction(
                        int(seq),
                        Position(int(clsn)),
                        Position(int(end)),
                        int(xid),
                        int(ctime),
                        items,
                        bool(last),
                        bool(snap),
                    )
                )
                events += int(count)
                if events >= max_events:
                    break
        finally:
            cur.close()
        return out

    def _decode(self, data: bytes, first_ord: int, part: tuple[int, int] | None = None) -> Iterator[Item]:
        try:
            yield from decode_items(data, self.state, legacy_relations(self.resolver), first_ord, part)
        except KeyError:  # pragma: no cover - relation details written after a reload
            self._load_relations()
            raise

    def meta(self, key: str, default: str = "") -> str:
        return get_meta(self.conn, key, default)

    def trimmed_seq(self) -> int:
        """Records up to this seq were removed by retention."""
        return int(get_meta(self.conn, "trimmed_seq", "0"))

    def first_seq(self) -> int:
        row = self.conn.execute("SELECT min(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self.conn.close()


# -- repair requests (``syncline verify --repair`` while ``run`` runs) -------------------------

REPAIR_SCHEMA = """
CREATE TABLE IF NOT EXISTS repair_requests (
    id INTEGER PRIMARY KEY,
    lsn INTEGER NOT NULL,
    data BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    seq INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0
);
"""


def request_repair(path: Path, lsn: int, messages: list[bytes]) -> int:
    """Ask the capture to append ``messages`` (read at snapshot position ``lsn``) as a repair
    (see :meth:`EmbeddedLogWriter.apply_repair_requests`); return the request id."""
    conn = connect(path)
    try:
        conn.executescript(REPAIR_SCHEMA)
        cur = conn.execute("INSERT INTO repair_requests (lsn, data) VALUES (?, ?)", (lsn, frame(messages)))
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def repair_request_state(path: Path, request: int) -> tuple[str, int, int]:
    """(state, appended seq, dropped messages) of a repair request."""
    conn = connect(path, readonly=True)
    try:
        row = conn.execute(
            "SELECT state, seq, dropped FROM repair_requests WHERE id = ?", (request,)
        ).fetchone()
    finally:
        conn.close()
    return (str(row[0]), int(row[1]), int(row[2])) if row else ("missing", 0, 0)


def _touched_keys(
    blob: bytes,
    rels: dict[int, Relation],
    into: set[tuple[int, tuple[object, ...]]],
    whole: set[int],
) -> None:
    """Add (relation oid, key values) of every row a framed blob changes; relations that a
    truncate touched (or whose shape is unknown) go to ``whole``."""
    for ch in iter_changes(blob):  # shapes are left out: changes to them are in `relations`
        if isinstance(ch, Truncate):
            whole.update(ch.relids)
            continue
        rel = rels.get(ch.relid)
        if rel is None:
            whole.add(ch.relid)
            continue
        idx = rel.key_indexes()
        if not idx:  # no key: any change may concern any row
            whole.add(ch.relid)
            continue
        for row in (ch.old, ch.new):
            if row is not None:
                into.add((ch.relid, tuple(row[i] for i in idx)))


STARTS_FILE = "starts"
"""How many times ``syncline run`` has started on this log directory (first-start rules)."""


def count_start(path: Path) -> int:
    """Count this start of ``syncline run`` (before any process is spawned)."""
    f = path / STARTS_FILE
    try:
        n = int(f.read_text().strip() or 0) + 1
    except (OSError, ValueError):
        n = 1
    tmp = f.with_suffix(".tmp")
    tmp.write_text(f"{n}\n")
    tmp.replace(f)
    return n


def start_count(path: Path) -> int:
    """:func:`count_start`'s count (1 when never counted: the capture run on its own)."""
    try:
        return max(1, int((path / STARTS_FILE).read_text().strip()))
    except (OSError, ValueError):
        return 1
