"""The durable log interface.

A log holds whole source transactions in commit order. The capture appends through a
:class:`LogWriter` and acknowledges to the source only what :meth:`LogWriter.sync` made
durable. Each view reads from its own cursor (``seq``) with a :class:`LogReader`. Backends:
``embedded`` (SQLite, this package); NATS JetStream and Kafka must fit the same shape: a
record is a part of one transaction, ``seq`` is the stream offset, consumer positions are
stored by the views themselves and reported to the log for retention.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from syncline.core.config_models import split_consumer
from syncline.core.errors import LogError
from syncline.core.events import Checkpoint, Relation, Row, Transaction
from syncline.core.position import NO_POSITION, Position

LOG_ID = "log_id"
"""Metadata key of the log's id: random, made when the log is created and again whenever
it is emptied. Views store it with their checkpoint; a view never resumes by record
number in a log with another id."""


def new_log_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class LogStats:
    first_seq: int
    last_seq: int
    last_commit_lsn: Position
    received_lsn: Position
    records: int
    bytes: int


class LogLocked(LogError):
    """Another process appends to this log (one capture per log)."""


class LogAppender(Protocol):
    """What a source's capture writes: whole transactions in commit order, made durable by
    :meth:`sync` before the source is told they may be forgotten. Changes are record items
    of :mod:`syncline.core.records` (any source encodes them with its functions); tables'
    shapes are given as :class:`Relation`."""

    @property
    def where(self) -> str:
        """Where the log is (a path, a URL), for messages."""
        ...

    def meta(self, key: str, default: str = "") -> str:
        """A value the capture recorded (``state``, ``slot``, ``received_lsn``, ...)."""
        ...

    def set_meta_now(self, **values: str | int) -> None:
        """Record values durably now (outside the data path)."""
        ...

    def start_count(self) -> int:
        """How many times ``syncline run`` has started on this log (first-start rules)."""
        ...

    def last_commit_lsn(self) -> Position:
        """Commit position of the newest transaction in the log (0 when empty)."""
        ...

    def durable_end_lsn(self) -> Position:
        """The log durably holds every transaction committed before this position."""
        ...

    def begin(self, xid: int, commit_lsn: Position, commit_time: int, snapshot: bool = False) -> None: ...

    def add(self, message: bytes) -> None:
        """One change of the open transaction: a change item of :mod:`syncline.core.records`
        (insert, update, delete or truncate)."""
        ...

    def add_insert(self, relid: int, row: Row) -> None:
        """An insert of a whole row into ``relid`` (a copy's rows), given decoded: the same
        in the log as :meth:`add` of its insert item."""
        ...

    def add_relation(self, relation: Relation) -> None:
        """A table's shape from here on, with its catalogue details."""
        ...

    def drop_relation(self, oid: int) -> None:
        """The table ``oid`` leaves the source with the open transaction."""
        ...

    def commit(self, commit_lsn: Position, end_lsn: Position, commit_time: int) -> None: ...

    def stream_add(self, xid: int, subxid: int, message: bytes) -> None:
        """A change of a transaction still in progress (kept until it commits or aborts)."""
        ...

    def stream_add_relation(self, xid: int, relation: Relation) -> None: ...

    def stream_commit(self, xid: int, commit_lsn: Position, end_lsn: Position, commit_time: int) -> None: ...

    def stream_abort(self, xid: int, subxid: int) -> None: ...

    def stream_discard(self, xid: int) -> None:
        """Forget a streamed transaction the log already holds (a replay)."""
        ...

    def pending_bytes(self) -> int:
        """Bytes appended since the last :meth:`sync`."""
        ...

    def sync(self, received_lsn: Position | None = None) -> Position:
        """Make everything appended durable (and, with ``received_lsn``, that the source sent
        everything before it); return the position up to which the log holds every
        committed transaction."""
        ...

    def reset(self) -> None:
        """Empty the log (a first start that begins again)."""
        ...

    def append_repair(self, messages: list[bytes], commit_time: int) -> int:
        """``verify --repair``: a synthetic transaction at the end of the log; its record."""
        ...

    def apply_repair_requests(self) -> int:
        """Repairs asked for while ``run`` runs, appended now."""
        ...

    def running_views_lag(self) -> int | None:
        """Records the slowest running view is behind (None: no view running)."""
        ...

    def copy_requests(self) -> list[tuple[int, list[str]]]:
        """``syncline snapshot`` requests not taken yet: (id, tables)."""
        ...

    def drop_copy_requests(self, upto: int) -> None:
        """The requests up to ``upto`` are taken."""
        ...

    def close(self) -> None: ...


class LogCursor(Protocol):
    """What a view reads: committed records after a position, in order. Each view keeps its
    own position (stored with its data) and opens its own cursor."""

    def read(
        self, after: Checkpoint, max_events: int, part: tuple[int, int] | None = None
    ) -> list[Transaction]:
        """Committed records with seq > ``after.seq``, whole parts, about ``max_events``
        events (a transaction larger than that comes in parts; its last has ``last``).
        ``part`` = (index, count): row changes whose keys all hash to other partitions may be
        left out undecoded (a partition's applier; it routes the rest itself)."""
        ...

    def relations_at(self, seq: int) -> dict[int, Relation]:
        """The tables' shapes in force after record ``seq`` (dropped tables left out)."""
        ...

    def hw(self) -> int:
        """The newest complete transaction's last record."""
        ...

    def trimmed_seq(self) -> int:
        """Records up to this one were removed by retention; a view behind it is filled
        from the compacted log."""
        ...

    def meta(self, key: str, default: str = "") -> str:
        """A value the capture recorded (e.g. the source's sequences)."""
        ...

    def close(self) -> None: ...


class LogControl(Protocol):
    """The log's control plane: what each consumer (view) has applied and in which state it
    is, why a failed one failed and whether a retry is asked for, and error counts. Status,
    ``wait``, retention and the supervisor read it; workers write it. Advisory: a view's
    authoritative position is the one stored with its data."""

    def update(self, name: str, kind: str, **fields: object) -> None:
        """Set fields of consumer ``name`` (``state``, ``error``, ``seq``, ``commit_lsn``)."""
        ...

    def add_applied(self, name: str, kind: str, events: int, seq: int, commit_lsn: Position) -> bool:
        """Count ``events`` applied up to ``seq``; best effort (False: kept for next time)."""
        ...

    def count_error(self, name: str, error: BaseException, transient: bool) -> None:
        """Count an error of view ``name`` by its class."""
        ...

    def count_capture_error(self, error: BaseException, transient: bool) -> None: ...

    def set_failure(self, name: str, fixable: bool, action: str) -> None:
        """View ``name`` failed: whether a change in its store can fix it, and what to do."""
        ...

    def set_next_retry(self, name: str, at: float) -> None: ...

    def failure(self, name: str) -> tuple[bool, str, bool]:
        """(fixable, action, retry requested) of a failed view."""
        ...

    def request_retry(self, name: str) -> None: ...

    def clear_retry_request(self, name: str) -> None: ...

    def clear_failure(self, name: str) -> None: ...

    def put_doc(self, key: str, doc: dict[str, Any]) -> None:
        """Keep a small JSON document under ``key`` (``stats.VIEW``: a worker's stage times
        and rows per table; ``verify.VIEW``: the last ``syncline verify``), for the console.
        Best effort: a busy log loses it, never the caller."""
        ...

    def get_doc(self, key: str) -> dict[str, Any]:
        """The document under ``key`` (empty when none or unreadable)."""
        ...

    def remove_others(self, keep: set[str]) -> list[str]:
        """Forget consumers not in ``keep`` (views no longer configured); their names."""
        ...

    def lease_view(self, name: str) -> str | None:
        """Take or refresh this process's lease on applying view ``name``: None when it is
        ours now, else who holds it. One applier per view across hosts (on one host a file
        lock in ``[log] path`` says the same)."""
        ...

    def release_view(self, name: str) -> None:
        """Let go of :meth:`lease_view`'s lease (a clean stop)."""
        ...

    def request_copy(self, tables: list[str]) -> None:
        """``syncline snapshot``: ask the capture to copy ``tables`` again."""
        ...

    def rebuilds(self) -> dict[str, bool]:
        """The rebuilds under way (``syncline rebuild``): view -> whether it asks the view's
        worker to pause (a dead rebuild's request is ignored)."""
        ...

    def start_rebuild(self, view: str) -> None:
        """Register this process's rebuild of ``view`` (it holds retention); raises
        :class:`LogError` when another process rebuilds it."""
        ...

    def pause_for_rebuild(self, view: str) -> None:
        """Ask the worker of ``view`` to let go of it (the swap is next)."""
        ...

    def end_rebuild(self, view: str) -> None: ...

    def close(self) -> None: ...


class LogBusy(LogError):
    """The log is being created or is busy right now: read again later."""


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    """What a consumer (view) last reported to the log's control plane."""

    name: str
    kind: str
    seq: int
    commit_lsn: Position
    state: str
    error: str
    applied_events: int
    updated_at: float


_WORSE = {
    "failed": 7,
    "retrying": 6,
    "unknown": 5,
    "new": 4,
    "starting": 3,
    "filling": 3,
    "paused": 2,
    "stopped": 1,
}


def by_view(rows: dict[str, ConsumerRow]) -> dict[str, ConsumerRow]:
    """Consumer rows by view: a partitioned view's partitions (``NAME.pIofN``) merged into
    one row under ``NAME``, as far as its slowest partition (a partition not registered yet
    counts as ``new`` at 0), in its worst state, with their applied events summed. Rows left
    by another partition count (or by the view applied whole) give way to the newest."""
    out: dict[str, ConsumerRow] = {}
    groups: dict[str, dict[int, dict[int, ConsumerRow]]] = {}
    for name, r in rows.items():
        part = split_consumer(name)
        if part is None:
            out[name] = r
        else:
            groups.setdefault(part[0], {}).setdefault(part[2], {})[part[1]] = r
    for view, by_count in groups.items():

        def newest(parts: dict[int, ConsumerRow]) -> float:
            return max(r.updated_at for r in parts.values())

        count, parts = max(by_count.items(), key=lambda kv: newest(kv[1]))
        whole = out.get(view)
        if whole is not None and whole.updated_at >= newest(parts):
            continue
        kind = next(iter(parts.values())).kind
        full = [
            parts.get(i) or ConsumerRow(view, kind, 0, NO_POSITION, "new", "", 0, 0.0) for i in range(count)
        ]
        slow = min(full, key=lambda r: r.seq)
        worst = max(full, key=lambda r: _WORSE.get(r.state, 0))
        out[view] = ConsumerRow(
            view,
            kind,
            slow.seq,
            slow.commit_lsn,
            worst.state,
            worst.error or slow.error,
            sum(r.applied_events for r in full),
            max(r.updated_at for r in full),
        )
    return out


@dataclass(frozen=True, slots=True)
class FailureRow:
    """Why a failed view failed: ``fixable`` by a change in its store (then retried at
    ``next_retry``, a Unix time; 0: not scheduled), and what to do."""

    fixable: bool
    action: str
    next_retry: float


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """Errors of one class met by a component (``capture``, or ``view`` ``name``); a transient
    one was followed by a retry."""

    component: str
    name: str
    error: str
    transient: bool
    n: int


class LogObserver(Protocol):
    """A read-only look at the log for ``status``, ``wait``, ``/metrics`` and the HTTP API, from
    any process. Reads raise :class:`LogBusy` while the log is being created or is busy."""

    def meta(self, key: str, default: str = "") -> str:
        """A value the capture recorded (``state``, ``hw``, ``received_lsn``, ...)."""
        ...

    def consumers(self) -> dict[str, ConsumerRow]: ...

    def failures(self) -> dict[str, FailureRow]: ...

    def docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The documents of :meth:`LogControl.put_doc` under ``prefix.``, by the rest of
        their key."""
        ...

    def errors(self) -> list[ErrorRow]: ...

    def held(self) -> tuple[int, int]:
        """(first record held, 0 when none; how many records are held)."""
        ...

    def size_bytes(self) -> int: ...

    def events_after(self, seq: int, upto: int) -> tuple[int, int | None]:
        """Change events in records after ``seq`` up to ``upto``, and the oldest commit time
        among them (microseconds since the epoch; None when there are none)."""
        ...

    def holds_unapplied(self, seq: int, lsn: int) -> bool:
        """Whether a record after ``seq`` holds a transaction committed at or before ``lsn``
        (or an initial snapshot, which holds every transaction committed before it)."""
        ...

    def one_pass_snapshot_rows(self) -> int:
        """Rows of a one-pass initial snapshot (PostgreSQL 13) the log still holds."""
        ...

    def copy_requests_pending(self) -> int:
        """``syncline snapshot`` requests the capture has not taken yet."""
        ...

    def consistent(self) -> AbstractContextManager[None]:
        """Reads inside the block see one state of the log."""
        ...

    def close(self) -> None: ...
