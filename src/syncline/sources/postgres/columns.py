"""Columns left out at capture (``[source] exclude_columns``).

A matched column is cut from the table's Relation message and from every change's tuples
before anything is logged, and never selected by a copy: its values reach neither the log
nor any view (they still cross the replication connection, in the capture's memory only).
A key column cannot be left out: the views could no longer tell rows apart."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from syncline.core.errors import SourceError
from syncline.core.patterns import column_excluded
from syncline.sources.postgres.pgoutput import RelationMessage, remap_change


class ExcludedColumns:
    """The projection of each table that has excluded columns (relation id -> the indexes
    of the columns kept), learnt from its Relation messages."""

    def __init__(self, patterns: Iterable[str], primary_key: Callable[[int], tuple[str, ...]]) -> None:
        self.patterns = tuple(patterns)
        self.primary_key = primary_key
        self.projections: dict[int, tuple[int, tuple[int, ...]]] = {}

    def relation(self, msg: RelationMessage) -> RelationMessage:
        """``msg`` without its excluded columns (noting the projection of its changes)."""
        if not self.patterns:
            return msg
        names = [c[1] for c in msg.columns]
        drop = {i for i, n in enumerate(names) if column_excluded(self.patterns, msg.schema, msg.name, n)}
        if not drop:
            self.projections.pop(msg.oid, None)
            return msg
        key = set(self.primary_key(msg.oid))
        if msg.replident != "f":
            key |= {c[1] for c in msg.columns if c[0] & 1}
        where = f"{msg.schema}.{msg.name}"
        if not key:
            raise SourceError(
                f"source.exclude_columns: {where} has no primary key (REPLICA IDENTITY FULL): its rows"
                " are told apart by all their columns, so none can be left out; add a primary key or"
                " narrow the pattern"
            )
        keys = sorted(names[i] for i in drop if names[i] in key)
        if keys:
            raise SourceError(
                f"source.exclude_columns: {where}.{keys[0]} is a key column (the views match rows by"
                " it) and cannot be left out: narrow the pattern"
            )
        keep = tuple(i for i in range(len(names)) if i not in drop)
        self.projections[msg.oid] = (msg.oid, keep)
        return RelationMessage(
            msg.oid, msg.schema, msg.name, msg.replident, tuple(msg.columns[i] for i in keep)
        )

    def change(self, buf: bytes) -> bytes:
        """A change message with the excluded columns cut from its tuples."""
        return remap_change(buf, self.projections) if self.projections else buf
