"""The change-event model shared by every source, log and view.

Values travel as PostgreSQL's *text output* (``str``), ``None`` for SQL NULL, or
:data:`UNCHANGED` for an unchanged TOASTed value that the source did not send. Views convert
text to their native types; a view must keep its stored value for :data:`UNCHANGED`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Literal

import msgspec

from syncline.core.position import NO_POSITION, Position


class _Unchanged(Enum):
    UNCHANGED = 0  # an integer: the log's packed records (msgpack) tell it from text values

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged.UNCHANGED
"""Marker for an unchanged TOAST value (pgoutput ``'u'``): never NULL, never a placeholder."""

Value = str | None | _Unchanged
Row = tuple[Value, ...]
Op = Literal["insert", "update", "delete"]


@dataclass(frozen=True, slots=True)
class UserType:
    """A user-defined type a column depends on, enough to re-create it in a SQL replica.

    kind: ``e`` enum (labels), ``c`` composite (attributes), ``d`` domain (base),
    ``r`` range (base = subtype).
    """

    schema: str
    name: str
    kind: str
    labels: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    base: str = ""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    type_name: str
    """``format_type(oid, typmod)`` as the source prints it, e.g. ``numeric(10,2)``."""
    category: str = "U"
    """pg_type.typcategory of the column's type, after resolving domains (``A`` array ...)."""
    element: str = ""
    """For arrays: ``format_type`` of the element type (domains resolved)."""
    base: str = ""
    """The type after resolving domains (same as type_name for non-domains)."""
    in_identity: bool = False
    """Part of the replica identity as sent in the Relation message."""


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's shape at one point of the stream (pgoutput Relation message + catalogue)."""

    oid: int
    schema: str
    name: str
    replident: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """Primary-key column names from the catalogue; falls back to the identity columns."""
    user_types: tuple[UserType, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def key_indexes(self) -> tuple[int, ...]:
        names = self.column_names
        return tuple(names.index(k) for k in self.key)

    def same_shape(self, other: Relation) -> bool:
        return (
            self.schema == other.schema
            and self.name == other.name
            and self.key == other.key
            and [(c.name, c.type_name) for c in self.columns]
            == [(c.name, c.type_name) for c in other.columns]
        )


class RowChange(msgspec.Struct, array_like=True, gc=False):
    """One row's change. A msgspec struct: the log's packed records decode straight into
    it, in C (``syncline.core.records``); it holds no containers of its own, so the garbage
    collector need not track the many of a batch."""

    op: Op
    relid: int
    new: Row | None
    """New row for insert/update (all columns, maybe with UNCHANGED)."""
    old: Row | None = None
    """Old row (identity columns or full row) when the source sent it."""
    ordinal: int = 0
    moved_in: bool = False
    """An update whose old key another partition applies (:mod:`syncline.views.partition`):
    read the row stored under the old key for unchanged values, never delete it."""


@dataclass(slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool = False
    restart_identity: bool = False
    ordinal: int = 0
    dropped: bool = False
    """The tables left the source (dropped, renamed out of ``source.tables``): views that
    hold tables drop them (or keep them, ``keep_dropped_tables``), the others empty them."""


@dataclass(slots=True)
class SchemaChange:
    """A Relation message: the table's columns from here on (may be unchanged)."""

    relation: Relation
    ordinal: int = 0


Item = RowChange | Truncate | SchemaChange


@dataclass(slots=True)
class Transaction:
    """One source transaction (or part of a huge one), in commit order.

    ``seq`` is the log's cursor of this record; a view's checkpoint is the ``seq`` of the last
    record it applied. ``last`` is False for all but the final part of a transaction that the
    log stored in several parts; views apply parts of one transaction in one target
    transaction.
    """

    seq: int
    commit_lsn: Position
    end_lsn: Position
    xid: int
    commit_time: int
    """Microseconds since the Unix epoch (UTC)."""
    items: list[Item] = field(default_factory=list)
    last: bool = True
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a consumer stands: everything up to and including log record ``seq`` (whose
    transaction committed at ``commit_lsn``) is applied."""

    seq: int = 0
    commit_lsn: Position = NO_POSITION
    log: str = ""
    """The id of the log the records were read from (``""``: not known, e.g. a store
    written before logs had ids): a log emptied or replaced has another id, so a record
    number never points into the wrong log."""

    @classmethod
    def stored(
        cls, seq: int | str | bytes, position: int | str | bytes, log: str | bytes | None = None
    ) -> Checkpoint:
        """A checkpoint read back from a store (integers, or their text)."""
        text = log.decode() if isinstance(log, bytes) else (log or "")
        return cls(int(seq), Position(int(position)), text)


def key_text(values: tuple[str, ...]) -> str:
    """The row key as users see it: key columns' text joined by ':'."""
    return ":".join(values)


def column_mapping(old: Relation, new: Relation) -> list[int | None]:
    """For each column of ``new``, the index of the same column in ``old`` (None if new):
    matched by name, or by position and type for a renamed column."""
    old_names = [c.name for c in old.columns]
    new_names = {c.name for c in new.columns}
    out: list[int | None] = []
    for i, c in enumerate(new.columns):
        if c.name in old_names:
            out.append(old_names.index(c.name))
        elif (
            i < len(old.columns)
            and old.columns[i].name not in new_names
            and old.columns[i].type_oid == c.type_oid
        ):
            out.append(i)  # renamed
        else:
            out.append(None)
    return out
