"""The transform stage: a view wrapped so that each batch passes through the user's
function first (:mod:`syncline.transform`).

The wrapped view sees batches of its *output* tables: a table the function returns dicts
for keeps the source's oid and name with the output's columns (a source column kept under
its name keeps its type; a new one takes the type of its first non-NULL value); a table
named by :class:`~syncline.transform.Output` gets an oid of its own. A shape is announced
to the view (a SchemaChange) the first time a table is output and whenever its columns
change; the shapes the view holds are kept in the log's documents (``transform.VIEW``),
saved when a batch commits, so a restarted worker knows them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.config_models import ViewConfig
from syncline.core.errors import ViewError
from syncline.core.events import (
    UNCHANGED,
    Column,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
)
from syncline.core.patterns import table_selected
from syncline.log.base import LogControl
from syncline.sources.registry import format_position
from syncline.transform import Change, Delete, Output, Transform, load_transform
from syncline.transform.values import to_python, to_text, type_of
from syncline.views.base import Batch, View

log = logging.getLogger("syncline.transform")

SLOW = 1.0
"""Seconds one call may take before a warning names it."""
_OWN_OIDS = 3_900_000_000
"""Output tables of another name get oids from here up (above any table's in practice)."""


class TransformError(ViewError):
    pass


def _oid_of(table: str) -> int:
    return _OWN_OIDS + zlib.crc32(table.encode()) % 300_000_000


def _split(table: str) -> tuple[str, str]:
    schema, dot, name = table.partition(".")
    if not dot or not schema or not name:
        raise ValueError(f"an output table is named schema.table, got {table!r}")
    return schema, name


def to_change(
    it: RowChange, rel: Relation, t: Transaction, originals: dict[str, tuple[Any, Any]] | None = None
) -> Change:
    """The :class:`Change` a transform sees for ``it`` (``originals``: filled with each
    column's Python value and its text, so a value returned unchanged goes back as it was)."""
    names = rel.column_names
    seen: dict[str, tuple[Any, Any]] = {} if originals is None else originals

    def typed(row: Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        got: dict[str, Any] = {}
        for c, text in zip(rel.columns, row, strict=False):
            v = UNCHANGED if text is UNCHANGED else to_python(text, c)
            got[c.name] = v
            seen.setdefault(c.name, (v, text))
        return got

    new = typed(it.new)
    old = typed(it.old) if it.old is not None else None
    kidx = rel.key_indexes() if rel.key else ()
    if new is not None:
        key = {names[i]: new[names[i]] for i in kidx}
    else:
        key = {names[i]: (old or {}).get(names[i]) for i in kidx}
    return Change(
        op=it.op,
        table=rel.qualified,
        new=new,
        old=old,
        key=key,
        lsn=format_position(t.commit_lsn),
        seq=t.seq,
        commit_time=dt.datetime.fromtimestamp(t.commit_time / 1e6, dt.UTC),
    )


class TransformStage:
    """Turns source batches into output batches (pure but for the user's function)."""

    def __init__(
        self, fn: Transform, ref: str, view: str, patterns: tuple[str, ...] = (), skip: bool = False
    ) -> None:
        self.fn = fn
        self.ref = ref
        self.view = view
        self.patterns = patterns
        self.skip = skip
        self.out: dict[int, Relation] = {}
        """The output shapes the view holds."""
        self.skipped = 0
        self.changed = False
        """Shapes announced since the last :meth:`saved`."""

    # -- shapes -------------------------------------------------------------------------------

    def _shape(
        self,
        oid: int,
        schema: str,
        name: str,
        row: dict[str, Any],
        key: tuple[str, ...],
        src: Relation | None,
    ) -> tuple[Relation, SchemaChange | None]:
        """The output relation for ``row`` (and a SchemaChange when it is new or changed)."""
        known = self.out.get(oid)
        if known is not None and known.column_names == tuple(row) and known.key == key:
            return known, None
        by_name = {c.name: c for c in src.columns} if src is not None else {}
        prev = {c.name: c for c in known.columns} if known is not None else {}
        cols = []
        for n, v in row.items():
            c = by_name.get(n) or prev.get(n)
            if c is None:
                toid, tname, cat = type_of(next((x for x in [v] if x is not None), ""))
                c = Column(n, toid, -1, tname, cat, base=tname)
            cols.append(replace(c, in_identity=n in key))
        missing = [k for k in key if k not in row]
        if missing:
            raise TransformError(
                f"view {self.view}: transform {self.ref} returned a row of {schema}.{name} without its "
                f"key column(s) {', '.join(missing)}: keep the key columns under their names",
                action=f"change {self.ref} so its rows keep the key columns",
            )
        rel = Relation(oid, schema, name, "d", tuple(cols), key, src.user_types if src is not None else ())
        self.out[oid] = rel
        self.changed = True
        return rel, SchemaChange(rel)

    def _row(self, rel: Relation, row: dict[str, Any], originals: dict[str, tuple[Any, Any]]) -> Row:
        """The row's values as text, in ``rel``'s column order (an unchanged value: its
        original text, lossless)."""
        out: list[Any] = []
        for c in rel.columns:
            v = row.get(c.name)
            orig = originals.get(c.name)
            if v is UNCHANGED:
                out.append(UNCHANGED)
            elif orig is not None and orig[0] is v:
                out.append(orig[1])
            else:
                out.append(to_text(v, c))
        return tuple(out)

    # -- batches ------------------------------------------------------------------------------

    def batch(self, batch: Batch) -> Batch:
        src = dict(batch.relations)
        txns = []
        for t in batch.transactions:
            items: list[Any] = []
            for it in t.items:
                if isinstance(it, SchemaChange):
                    src[it.relation.oid] = it.relation
                elif isinstance(it, Truncate):
                    ids = tuple(o for o in it.relids if o in self.out)
                    if ids:
                        items.append(replace(it, relids=ids))
                    if it.dropped:
                        for o in it.relids:
                            src.pop(o, None)
                elif isinstance(it, RowChange):
                    rel = src.get(it.relid)
                    if rel is None or (self.patterns and not table_selected(self.patterns, rel.qualified)):
                        continue
                    items.extend(self._change(it, rel, t))
            txns.append(
                Transaction(t.seq, t.commit_lsn, t.end_lsn, t.xid, t.commit_time, items, t.last, t.snapshot)
            )
        return Batch(
            txns, dict(self.out), batch.checkpoint, sum(len(t.items) for t in txns), batch.commit, batch.meta
        )

    def _change(self, it: RowChange, rel: Relation, t: Transaction) -> list[Any]:
        originals: dict[str, tuple[Any, Any]] = {}
        change = to_change(it, rel, t, originals)
        started = time.monotonic()
        try:
            got = self.fn(change)
        except Exception as e:
            return self._failed(change, e)
        took = time.monotonic() - started
        if took > SLOW:
            log.warning(
                "view %s: transform %s took %.1f s for %s key %s",
                self.view,
                self.ref,
                took,
                rel.qualified,
                change.key,
            )
        results = got if isinstance(got, list | tuple) else ([] if got is None else [got])
        out: list[Any] = []
        same = False
        old_key_row = it.old if it.old is not None else None
        for r in results:
            if isinstance(r, dict):
                same = True
                if it.op == "delete":
                    continue  # the row of a deleted key goes below
                shape, sc = self._shape(rel.oid, rel.schema, rel.name, r, rel.key, rel)
                if sc is not None:
                    out.append(sc)
                out.append(
                    RowChange(it.op, rel.oid, self._row(shape, r, originals), self._old(shape, it, rel))
                )
            elif isinstance(r, Output):
                try:
                    schema, name = _split(r.table)
                except ValueError as e:
                    return self._failed(change, e)
                oid = _oid_of(r.table)
                shape, sc = self._shape(oid, schema, name, r.row, tuple(r.key), None)
                if sc is not None:
                    out.append(sc)
                out.append(RowChange("insert", oid, self._row(shape, r.row, {})))
            elif isinstance(r, Delete):
                oid = _oid_of(r.table)
                shape_or_none = self.out.get(oid)
                if shape_or_none is not None:
                    row = tuple(to_text(r.key.get(c.name), c) for c in shape_or_none.columns)
                    out.append(RowChange("delete", oid, None, row))
            else:
                return self._failed(
                    change,
                    TypeError(
                        f"returned {type(r).__name__}: expected None, a dict, Output, Delete or a list"
                    ),
                )
        # the source's own table: a delete, or an update the function no longer keeps,
        # removes the view's row of that key (and a moved key's old row)
        held = self.out.get(rel.oid)
        if held is not None and rel.key and (it.op == "delete" or (it.op == "update" and not same)):
            out.append(RowChange("delete", rel.oid, None, self._key_row(held, it, rel, old_key_row)))
        return out

    def _old(self, shape: Relation, it: RowChange, rel: Relation) -> Row | None:
        """The old key of an update that moved its key, in the output's columns."""
        if it.op != "update" or it.old is None:
            return None
        return self._key_row(shape, it, rel, it.old)

    def _key_row(self, shape: Relation, it: RowChange, rel: Relation, old: Row | None) -> Row:
        src = old if old is not None else it.new
        assert src is not None
        by_name = dict(zip(rel.column_names, src, strict=False))
        return tuple(by_name.get(c.name) if c.name in rel.key else None for c in shape.columns)

    def _failed(self, change: Change, e: BaseException) -> list[Any]:
        where = f"{change.table} key {change.key} at {change.lsn} (log record {change.seq})"
        if self.skip:
            self.skipped += 1
            log.error(
                "view %s: transform %s failed on %s, row skipped: %s: %s",
                self.view,
                self.ref,
                where,
                type(e).__name__,
                e,
            )
            return []
        tb = "".join(traceback.format_exception(e)).strip()
        raise TransformError(
            f"view {self.view}: transform {self.ref} failed on {where}: {type(e).__name__}: {e}\n{tb}",
            action=f'fix {self.ref} (or transform_errors = "skip"), then `syncline retry {self.view}`',
        )

    # -- persistence --------------------------------------------------------------------------

    def load(self, doc: dict[str, Any]) -> None:
        self.out = {int(o): relation_from_json(r) for o, r in (doc.get("relations") or {}).items()}

    def doc(self) -> dict[str, Any]:
        self.changed = False
        return {"relations": {str(o): relation_to_json(r).decode() for o, r in self.out.items()}}


class Stage(Protocol):
    """What :class:`TransformingView` runs a view's batches through."""

    changed: bool
    skipped: int

    def batch(self, batch: Batch) -> Batch: ...

    def load(self, doc: dict[str, Any]) -> None: ...

    def doc(self) -> dict[str, Any]: ...


class TransformingView:
    """A view whose batches pass through a stage first: a transform, or joined documents."""

    def __init__(self, inner: View, stage: Stage, control: LogControl | None, consumer: str) -> None:
        self.inner = inner
        self.stage = stage
        self.control = control
        self.key = f"transform.{consumer}"
        self.name = inner.name
        self.kind = inner.kind

    def open(self) -> Any:
        cp = self.inner.open()
        if self.control is not None:
            self.stage.load(self.control.get_doc(self.key))
        opened = getattr(self.stage, "opened", None)
        if opened is not None:
            opened(cp.seq)
        return cp

    def apply(self, batch: Batch) -> None:
        self.inner.apply(self.stage.batch(batch))
        if batch.commit and self.stage.changed and self.control is not None:
            self.control.put_doc(self.key, self.stage.doc())

    def close(self) -> None:
        self.inner.close()
        closing = getattr(self.stage, "close", None)
        if closing is not None:
            closing()

    def __getattr__(self, name: str) -> Any:  # flush, read_checkpoint, ... of the inner view
        return getattr(self.inner, name)


def joining(inner: View, vcfg: ViewConfig, state_dir: Path) -> View:
    """``inner`` fed the documents of ``vcfg.document`` (state in ``state_dir``)."""
    from syncline.transform.join import Document, JoinStage

    assert isinstance(vcfg.document, Document)
    state_dir.mkdir(parents=True, exist_ok=True)
    stage = JoinStage(vcfg.document, vcfg.name, state_dir / f"join-{vcfg.consumer}.sqlite")
    return TransformingView(inner, stage, None, vcfg.consumer)


def transforming(inner: View, vcfg: ViewConfig, control: LogControl | None) -> View:
    """``inner`` behind ``vcfg``'s transform (the function is loaded again here: the
    configuration checked it at load)."""
    assert vcfg.transform is not None
    fn = load_transform(vcfg.transform)
    stage = TransformStage(fn, vcfg.transform, vcfg.name, vcfg.tables, vcfg.transform_errors == "skip")
    return TransformingView(inner, stage, control, vcfg.consumer)
