"""The view interface: a derived store that applies whole source transactions in commit
order and stores its checkpoint atomically with the data it applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from syncline.core.events import Checkpoint, Relation, SchemaChange, Transaction, Truncate
from syncline.core.patterns import table_selected


@dataclass(slots=True)
class Batch:
    """Consecutive log records (whole transactions) a view applies in one target transaction.

    ``relations`` is the schema state *before* the first record (oid -> Relation); schema
    changes inside the batch arrive as SchemaChange items. ``checkpoint`` is what the view
    must store together with the batch's effects.
    """

    transactions: list[Transaction]
    relations: dict[int, Relation]
    checkpoint: Checkpoint
    events: int = 0
    commit: bool = True
    """False when the batch ends inside a source transaction (one larger than a batch): the
    view applies it inside its open target transaction and commits only with the batch
    whose ``commit`` is True, storing that batch's checkpoint."""
    meta: dict[str, object] = field(default_factory=dict)


class View(Protocol):
    name: str
    kind: str

    def open(self) -> Checkpoint:
        """Connect, create bookkeeping if missing, and return the stored checkpoint
        (``Checkpoint()`` for a new, empty view)."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply every transaction of the batch and store ``batch.checkpoint``, atomically:
        after a crash either all of it is visible with the new checkpoint, or none of it."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class DeferredCommit(Protocol):
    """A view that may keep applied batches uncommitted for a while (tantivy with
    ``commit_interval``): only its committed checkpoint is reported as applied, so that
    ``wait`` and retention never count on what a crash would lose."""

    def flush(self) -> None:
        """Commit what was applied (outside a source transaction) now."""
        ...

    def read_checkpoint(self) -> Checkpoint | None:
        """The committed checkpoint."""
        ...


@runtime_checkable
class InPlaceRebuild(Protocol):
    """A view rebuilt inside its own store in one transaction (the PostgreSQL replica):
    ``syncline rebuild`` empties it, refills it from the log, and commits once."""

    def begin_rebuild(self) -> None: ...

    def finish_rebuild(self, checkpoint: Checkpoint) -> None: ...


KEYED_KINDS = ("redis", "tantivy")
"""View kinds that store one entry per key: they cannot hold a table without a key."""


def keyless_refusal(view: str, kind: str, qualified: str) -> str:
    """The one error for a table without a key in a view that needs one."""
    return (
        f"view {view!r} ({kind}) cannot follow table {qualified}: it has no primary key "
        f"(REPLICA IDENTITY FULL), so its rows have no key to store them under. Add a "
        f'primary key to {qualified}, or leave it out of the view: tables = [..., "!{qualified}"]'
    )


_LEFT_OUT: set[tuple[str, int]] = set()


def leave_out_keyless(view: str, kind: str, rel: Relation) -> None:
    """A table without a key met while streaming (created later): a view that stores one
    entry per key leaves it out, with one warning (at start it is an error instead)."""
    import logging

    if (view, rel.oid) not in _LEFT_OUT:
        _LEFT_OUT.add((view, rel.oid))
        logging.getLogger(f"syncline.view.{view}").warning(
            "%s; its rows are left out of this view", keyless_refusal(view, kind, rel.qualified)
        )


def warn_missed(view: str, missed: int, rel: Relation) -> None:
    """Updates or deletes of a table without a key that found no equal row: skipped, as
    PostgreSQL's own subscriber does, with a warning (the view differs; verify says where)."""
    if missed:
        import logging

        logging.getLogger(f"syncline.view.{view}").warning(
            "view %s: %d updates or deletes of %s (no primary key) found no equal row",
            view,
            missed,
            rel.qualified,
        )


def selected_oids(patterns: tuple[str, ...], batch: Batch, relations: dict[int, Relation]) -> set[int] | None:
    """Relation oids a view with table ``patterns`` keeps, among those known before the batch
    and those the batch introduces (None: every table)."""
    if not patterns:
        return None
    sel = {oid for oid, r in relations.items() if table_selected(patterns, r.qualified)}
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, SchemaChange) and table_selected(patterns, it.relation.qualified):
                sel.add(it.relation.oid)
    return sel


def advance_relations(batch: Batch) -> None:
    """Move ``batch.relations`` past the batch's schema changes (in place), so the next
    batch starts from the shapes in force after this one."""
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, SchemaChange):
                batch.relations[it.relation.oid] = it.relation
            elif isinstance(it, Truncate) and it.dropped:
                for oid in it.relids:
                    batch.relations.pop(oid, None)
