"""Net effect of a batch of transactions, per table and key (pure).

Applying the net effect of consecutive whole transactions in one target transaction gives
the same final state as applying them one by one, provided the target enforces no
constraint other than the primary key. Barriers (truncate, schema change) split the batch:
everything before a barrier is flushed first, in order.

For each key the final state is one of: deleted; a full row; a *partial* row, where some
values are UNCHANGED (unchanged TOAST) and the view must keep what it stores.

A table without a key (REPLICA IDENTITY FULL, no primary key) may hold equal rows; its
changes are not netted but kept in order as :class:`KeylessOp`: an update or delete acts on
*one* stored row equal to ``old``, as PostgreSQL's own subscriber does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import cast

from syncline.core.events import (
    UNCHANGED,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
)

Key = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class KeylessOp:
    """One change of a table without a key: insert ``new``; delete one row equal to ``old``;
    update one row equal to ``old`` to ``new`` (UNCHANGED values already filled from ``old``)."""

    op: str
    old: Row | None
    new: Row | None


@dataclass(slots=True)
class TableDelta:
    relation: Relation
    deleted: set[Key] = field(default_factory=set)
    rows: dict[Key, Row] = field(default_factory=dict)
    """Final rows by key; rows containing UNCHANGED are partial."""
    origin: dict[Key, Key] = field(default_factory=dict)
    """For partial rows whose key changed: the key under which the view stores the row that
    supplies the UNCHANGED values (read it before applying ``deleted``)."""
    ops: list[KeylessOp] = field(default_factory=list)
    """Tables without a key only (then every other field is empty): the changes in order."""

    def upserts(self) -> list[Row]:
        return [r for r in self.rows.values() if UNCHANGED not in r]

    def partials(self) -> list[tuple[Row, Key]]:
        """Partial rows with the stored key that supplies their UNCHANGED values."""
        return [(r, self.origin.get(k, k)) for k, r in self.rows.items() if UNCHANGED in r]

    def deletes(self) -> list[Key]:
        """Keys whose final state is absent (read partial origins before deleting)."""
        return list(self.deleted)

    def __len__(self) -> int:
        return len(self.deleted) + len(self.rows) + len(self.ops)


@dataclass(frozen=True, slots=True)
class DeltaStep:
    tables: list[TableDelta]


@dataclass(frozen=True, slots=True)
class TruncateStep:
    relations: list[Relation]
    cascade: bool
    restart_identity: bool
    dropped: bool = False
    """The tables left the source: drop them (or keep them), not only empty them."""


@dataclass(frozen=True, slots=True)
class SchemaStep:
    old: Relation | None
    new: Relation


Step = DeltaStep | TruncateStep | SchemaStep


def _merge(prev: Row, new: Row) -> Row:
    return tuple(p if n is UNCHANGED else n for p, n in zip(prev, new, strict=False))


def net_steps(
    transactions: list[Transaction],
    relations: dict[int, Relation],
    selected: set[int] | None = None,
) -> Iterator[Step]:
    """Yield the steps that bring a view from before to after ``transactions``.

    ``relations`` is updated in place with schema changes. ``selected``: relation oids the
    view keeps (None: all); rows of other tables are skipped, truncates filtered.
    """
    deltas: dict[int, TableDelta] = {}
    kidx: dict[int, KeyFn] = {}

    def flush() -> Iterator[Step]:
        if deltas:
            yield DeltaStep([d for d in deltas.values() if len(d)])
            deltas.clear()
            kidx.clear()

    for txn in transactions:
        for item in txn.items:
            if isinstance(item, RowChange):
                if selected is not None and item.relid not in selected:
                    continue
                rel = relations.get(item.relid)
                if rel is None:
                    continue  # table not (yet) known to this view: schema step missing
                d = deltas.get(item.relid)
                if d is None:
                    d = deltas[item.relid] = TableDelta(rel)
                    if rel.key:
                        kidx[item.relid] = key_function(rel.key_indexes())
                if rel.key:
                    _apply_change(d, kidx[item.relid], item)
                else:
                    d.ops.append(keyless_op(item))
            elif isinstance(item, SchemaChange):
                new = item.relation
                old = relations.get(new.oid)
                relations[new.oid] = new
                if old is not None and old.same_shape(new):
                    continue
                if selected is not None and new.oid not in selected:
                    continue
                yield from flush()
                yield SchemaStep(old, new)
            elif isinstance(item, Truncate):
                rels = [
                    relations[r]
                    for r in item.relids
                    if r in relations and (selected is None or r in selected)
                ]
                if item.dropped:
                    for r in item.relids:
                        relations.pop(r, None)
                if not rels:
                    continue
                yield from flush()
                yield TruncateStep(rels, item.cascade, item.restart_identity, item.dropped)
    yield from flush()


KeyFn = Callable[[Row], Key]


def key_function(kidx: tuple[int, ...]) -> KeyFn:
    """Row -> key tuple (key columns are never UNCHANGED: TOAST values are not index keys)."""
    if len(kidx) == 1:
        i = kidx[0]
        return lambda row: (row[i],)  # type: ignore[return-value]
    return cast(KeyFn, itemgetter(*kidx))


def fill_unchanged(new: Row, old: Row) -> Row:
    """``new`` with its unchanged TOAST values taken from ``old`` where ``old`` has them (a
    full old row: REPLICA IDENTITY FULL sends it)."""
    if UNCHANGED not in new:
        return new
    return tuple(
        o if (n is UNCHANGED and o is not None and o is not UNCHANGED) else n
        for n, o in zip(new, old, strict=False)
    )


def keyless_op(ch: RowChange) -> KeylessOp:
    """The change as applied to a table without a key (REPLICA IDENTITY FULL sends the
    whole old row with every update and delete, TOASTed values included)."""
    new = ch.new
    if ch.op == "update" and new is not None and ch.old is not None and UNCHANGED in new:
        new = _merge(ch.old, new)
    return KeylessOp(ch.op, ch.old, new)


def _apply_change(d: TableDelta, _key: KeyFn, ch: RowChange) -> None:
    if ch.op == "insert":
        assert ch.new is not None
        k = _key(ch.new)
        d.deleted.discard(k)
        d.rows[k] = ch.new
        return
    if ch.op == "delete":
        assert ch.old is not None
        k = _key(ch.old)
        d.rows.pop(k, None)
        d.deleted.add(k)
        return
    # update
    new = ch.new
    assert new is not None
    if ch.old is not None:
        old = ch.old
        new = fill_unchanged(new, old)
        old_k: Key = _key(old)
    else:
        old_k = _key(new)
    k = _key(new)
    prev = d.rows.pop(old_k, None)
    origin = d.origin.pop(old_k, old_k)
    if old_k != k and not ch.moved_in:
        d.deleted.add(old_k)
    if prev is not None and UNCHANGED in new:
        new = _merge(prev, new)
    d.deleted.discard(k)
    d.rows[k] = new
    if UNCHANGED in new and origin != k:
        d.origin[k] = origin
