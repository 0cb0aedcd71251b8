"""The apply skeleton every view kind shares, written once (template method).

:meth:`AppliedView.apply` owns the order of things; a kind fills in the hooks:

1. ``_ensure_open()`` — connect if needed (or fail with a clear error);
2. outside an open target transaction: ``_applied()`` returns the position the store holds;
   a batch at or below it is skipped (``_skipped()``), so a batch delivered again after a
   crash is applied once in effect;
3. ``_prepare(batch)`` — work that must precede the target transaction (the replica's user
   types), run for every batch that is not skipped;
4. ``_begin(batch)`` — open the target transaction; it may find, under the store's own lock,
   that the batch was applied meanwhile (returns False: skipped);
5. the batch's net steps (:func:`~syncline.views.netting.net_steps`) are dispatched to
   ``_on_schema``, ``_on_truncate`` (per table: ``_truncate_table``) and ``_on_delta``, with
   ``_at(table)`` naming the table every error is reported against;
6. ``_after_steps(batch)``, then ``_commit(batch)`` storing ``batch.checkpoint`` with the
   data when the batch ends a source transaction, or ``_continue()`` when it does not (the
   target transaction stays open for the next batch);
7. on any error: ``_abort()`` drops the open target transaction, and ``_error(e, batch)``
   classifies it (:class:`~syncline.core.errors.TransientViewError`: retried;
   :class:`~syncline.core.errors.ViewError`: the view stops with the message).

``batch.relations`` is advanced past the batch's schema changes after a batch applied or
skipped, so the caller passes the same dict with the next batch.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

from syncline.core.errors import TransientViewError, ViewError
from syncline.core.events import Checkpoint, Relation
from syncline.views.base import Batch, advance_relations, selected_oids
from syncline.views.netting import DeltaStep, SchemaStep, TableDelta, TruncateStep, net_steps

log = logging.getLogger("syncline.view")

NOWHERE = "-"


class AppliedView(ABC):
    """Base of every view kind (and of the log's compactor): see the module docstring."""

    name: str
    kind: str
    patterns: tuple[str, ...] = ()
    transient_errors: tuple[type[BaseException], ...] = (OSError,)
    """Exceptions of the store that mean "try again" (besides TransientViewError)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._in_txn = False
        self._where = NOWHERE
        self._lock = threading.RLock()
        """The store's connection is used by one thread at a time: the applying worker, and
        status readers of the same view object."""

    # ------------------------------------------------------------------ the skeleton

    def apply(self, batch: Batch) -> None:
        """Apply every transaction of ``batch`` and store ``batch.checkpoint``, atomically
        (see :class:`~syncline.views.base.View`)."""
        with self._lock:
            self._where = NOWHERE
            try:
                self._ensure_open()
                if not self._in_txn and self._applied().seq >= batch.checkpoint.seq:
                    self._skip(batch)
                    return
                self._prepare(batch)
                if not self._in_txn:
                    if not self._begin(batch):
                        self._skip(batch)
                        return
                    self._in_txn = True
                rels = self._state(batch)
                selected = self._selected(batch, rels)
                self._before_steps(batch, selected)
                for step in net_steps(batch.transactions, rels, selected):
                    if isinstance(step, DeltaStep):
                        for td in step.tables:
                            self._at(td.relation.qualified)
                            self._on_delta(td)
                    elif isinstance(step, SchemaStep):
                        self._at(step.new.qualified)
                        self._on_schema(step.old, step.new)
                    elif isinstance(step, TruncateStep):
                        self._on_truncate(step)
                self._after_steps(batch)
                self._at(NOWHERE)
                if batch.commit:
                    self._commit(batch)
                    self._in_txn = False
                else:
                    self._continue()
            except BaseException as e:
                self._in_txn = False
                self._abort()
                if not isinstance(e, Exception):
                    raise
                err = self._error(e, batch)
                if err is e:
                    raise
                raise err from (None if self._hide_cause(e) else e)
            advance_relations(batch)

    def _skip(self, batch: Batch) -> None:
        log.debug("view %s: batch up to seq %d already applied", self.name, batch.checkpoint.seq)
        self._skipped()
        advance_relations(batch)

    # ------------------------------------------------------------------ required hooks

    @abstractmethod
    def _ensure_open(self) -> None:
        """Connect to the store if not connected."""

    @abstractmethod
    def _applied(self) -> Checkpoint:
        """The checkpoint the store holds (outside a target transaction)."""

    @abstractmethod
    def _begin(self, batch: Batch) -> bool:
        """Open the target transaction; False when the batch turns out to be applied."""

    @abstractmethod
    def _state(self, batch: Batch) -> dict[int, Relation]:
        """The table shapes the batch's rows are read with (oid -> Relation)."""

    @abstractmethod
    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        """A table appeared or changed shape (``old`` None: first seen)."""

    @abstractmethod
    def _on_delta(self, td: TableDelta) -> None:
        """The net row changes of one table."""

    @abstractmethod
    def _commit(self, batch: Batch) -> None:
        """Store ``batch.checkpoint`` with the applied data and commit the target transaction."""

    @abstractmethod
    def _abort(self) -> None:
        """Drop the open target transaction (nothing of it may stay visible)."""

    # ------------------------------------------------------------------ optional hooks

    def _skipped(self) -> None:  # noqa: B027 (optional hook)
        """Undo what ``_applied`` prepared (a WATCH, a read transaction)."""

    def _prepare(self, batch: Batch) -> None:  # noqa: B027 (optional hook)
        """Work that must come before the target transaction."""

    def _selected(self, batch: Batch, rels: dict[int, Relation]) -> set[int] | None:
        """The tables this view keeps (None: every table)."""
        return selected_oids(self.patterns, batch, rels)

    def _before_steps(self, batch: Batch, selected: set[int] | None) -> None:  # noqa: B027 (optional hook)
        """Called inside the target transaction before the first step."""

    def _after_steps(self, batch: Batch) -> None:  # noqa: B027 (optional hook)
        """Called inside the target transaction after the last step."""

    def _continue(self) -> None:  # noqa: B027 (optional hook)
        """The batch ends inside a source transaction: keep the target transaction open."""

    def _at(self, table: str) -> None:
        """What follows concerns ``table`` (named in errors)."""
        self._where = table

    def _on_truncate(self, step: TruncateStep) -> None:
        for rel in step.relations:
            self._at(rel.qualified)
            self._truncate_table(rel, step.dropped)

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        """Empty one table (``dropped``: the source dropped it)."""
        raise NotImplementedError

    def _stored_seq(self) -> str:
        """The stored checkpoint's seq for error messages ("?" when unknown)."""
        return "?"

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        """The error to raise for ``e`` (after ``_abort``): the table, the stored and the
        batch's positions, transient when the store may recover by itself."""
        msg = (
            f"view {self.name!r}: table {self._where}: {e} (stored checkpoint seq "
            f"{self._stored_seq()}, batch up to seq {batch.checkpoint.seq} lsn "
            f"{batch.checkpoint.commit_lsn})"
        )
        transient = isinstance(e, (*self.transient_errors, TransientViewError))
        return (TransientViewError if transient else ViewError)(msg)

    def _hide_cause(self, e: Exception) -> bool:
        """Raise the classified error ``from None`` (the cause may hold unredacted text)."""
        return False
