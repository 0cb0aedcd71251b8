"""Joined documents (``[views.NAME.document]``): one document per row of a root table,
with fields from its parents (many-to-one: the root's column references the parent's key)
and lists from its children (one-to-many: the child's column references the root's key),
kept incrementally.

When a row of any involved table changes, exactly the documents it touches are rebuilt:
the root's own, the roots that reference a changed parent, the roots of a changed child
(before and after a re-parenting). They are rebuilt from state syncline keeps itself,
never by asking the source: a SQLite file beside the log (``join-VIEW.sqlite``) with the
involved tables' rows and an index of their references. That file commits *before* the
view commits a batch, so after a crash it is at or ahead of the view; applying a batch to
it again changes nothing, and the documents the view then receives are those of the newest
state (each document ends equal to its SQL join over the source).

The view receives the documents as rows of the root table: the root's columns, then each
parent field (the parent column's type) and each child list (``jsonb``, ordered by the
child's key). A root row without its parent gets NULL fields; a deleted root deletes its
document.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.errors import ConfigError, ViewError
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
from syncline.transform.values import to_python
from syncline.views.base import Batch

log = logging.getLogger("syncline.join")


@dataclass(frozen=True)
class Parent:
    table: str
    column: str
    """The root's column that holds the parent's key."""
    fields: dict[str, str]
    """Document field -> the parent's column."""


@dataclass(frozen=True)
class Child:
    table: str
    column: str
    """The child's column that holds the root's key."""
    field: str
    """The document field holding the list."""
    value: str | None = None
    """The child's column listed (None: each child row as an object)."""


@dataclass(frozen=True)
class Document:
    root: str
    parents: tuple[Parent, ...] = ()
    children: tuple[Child, ...] = ()

    def tables(self) -> tuple[str, ...]:
        return (self.root, *(p.table for p in self.parents), *(c.table for c in self.children))


def parse_document(prefix: str, raw: object) -> Document:
    """``[views.NAME.document]`` (ConfigError naming the key)."""

    def need(d: dict[str, Any], key: str, where: str) -> str:
        v = d.get(key)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}.{key}: expected a name")
        return v

    def table(v: str, where: str) -> str:
        if v.count(".") != 1 or any(ch in v for ch in "*?[]!"):
            raise ConfigError(f"{where}: expected one table as schema.table, got {v!r}")
        return v

    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a table with root, parents, children")
    unknown = set(raw) - {"root", "parents", "children"}
    if unknown:
        raise ConfigError(f"{prefix}.{sorted(unknown)[0]}: unknown key (root, parents, children)")
    root = table(need(raw, "root", prefix), f"{prefix}.root")
    parents, children = [], []
    for i, p in enumerate(raw.get("parents") or []):
        where = f"{prefix}.parents[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("fields"), dict) or not p["fields"]:
            raise ConfigError(f"{where}: expected {{table, column, fields = {{field = parent column}}}}")
        fields = {str(k): str(v) for k, v in p["fields"].items()}
        parents.append(
            Parent(table(need(p, "table", where), f"{where}.table"), need(p, "column", where), fields)
        )
    for i, c in enumerate(raw.get("children") or []):
        where = f"{prefix}.children[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected {{table, column, field, value}}")
        value = c.get("value")
        children.append(
            Child(
                table(need(c, "table", where), f"{where}.table"),
                need(c, "column", where),
                need(c, "field", where),
                str(value) if value else None,
            )
        )
    doc = Document(root, tuple(parents), tuple(children))
    seen: set[str] = set()
    for t in doc.tables():
        if t in seen:
            raise ConfigError(
                f"{prefix}: table {t} appears twice (a document is a root, its parents and its "
                "children, each once: no cycles)"
            )
        seen.add(t)
    names = [f for p in doc.parents for f in p.fields] + [c.field for c in doc.children]
    dup = {f for f in names if names.count(f) > 1}
    if dup:
        raise ConfigError(f"{prefix}: field {sorted(dup)[0]} is named twice")
    return doc


def _typed(by: dict[str, Column], name: str, text: str | None) -> Any:
    col = by.get(name)
    return to_python(text, col) if col is not None else text


def _order(by: dict[str, Column], key: tuple[str, ...], row: dict[str, Any]) -> list[tuple[int, Any]]:
    return [_sortable(_typed(by, n, row.get(n))) for n in key]


def _sortable(v: Any) -> tuple[int, Any]:
    return (0, "") if v is None else (1, v if isinstance(v, int | float | str) else str(v))


class JoinStage:
    """Turns a view's batches into document upserts and deletes (the state in SQLite)."""

    def __init__(self, doc: Document, view: str, path: Path) -> None:
        self.document = doc
        self.tables = frozenset(doc.tables())
        self.view = view
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS rows (tbl TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL,"
            " PRIMARY KEY (tbl, key));"
            "CREATE TABLE IF NOT EXISTS refs (tbl TEXT NOT NULL, ref TEXT NOT NULL, key TEXT NOT NULL,"
            " PRIMARY KEY (tbl, ref, key));"
            "CREATE TABLE IF NOT EXISTS shapes (oid INTEGER PRIMARY KEY, rel TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " seq INTEGER NOT NULL);"
        )
        self.out: dict[int, Relation] = {
            int(o): relation_from_json(r) for o, r in self.db.execute("SELECT oid, rel FROM shapes")
        }
        self.changed = False
        self.skipped = 0
        self.rels: dict[str, Relation] = {}
        self._in_txn = False

    # -- state ----------------------------------------------------------------------------

    def _key(self, rel: Relation, row: dict[str, str | None]) -> str:
        return json.dumps([row.get(k) for k in rel.key])

    def _get(self, tbl: str, key: str) -> dict[str, str | None] | None:
        got = self.db.execute("SELECT row FROM rows WHERE tbl = ? AND key = ?", (tbl, key)).fetchone()
        return json.loads(got[0]) if got else None

    def _refs(self, rel: Relation, row: dict[str, str | None]) -> list[tuple[str, str]]:
        """(index name, referenced key) of a row: a root by each parent, a child by its root."""
        q = rel.qualified
        out = []
        if q == self.document.root:
            for p in self.document.parents:
                v = row.get(p.column)
                if v is not None:
                    out.append((f"{q}>{p.table}", json.dumps([v])))
        for c in self.document.children:
            if q == c.table and row.get(c.column) is not None:
                out.append((q, json.dumps([row.get(c.column)])))
        return out

    def _put(self, rel: Relation, row: dict[str, str | None]) -> None:
        key = self._key(rel, row)
        self._drop(rel, key)
        self.db.execute("INSERT INTO rows VALUES (?, ?, ?)", (rel.qualified, key, json.dumps(row)))
        for idx, ref in self._refs(rel, row):
            self.db.execute("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)", (idx, ref, key))

    def _drop(self, rel: Relation, key: str) -> dict[str, str | None] | None:
        old = self._get(rel.qualified, key)
        if old is not None:
            self.db.execute("DELETE FROM rows WHERE tbl = ? AND key = ?", (rel.qualified, key))
            for idx, ref in self._refs(rel, old):
                self.db.execute("DELETE FROM refs WHERE tbl = ? AND ref = ? AND key = ?", (idx, ref, key))
        return old

    # -- which documents ------------------------------------------------------------------

    def _roots_of(self, rel: Relation, row: dict[str, str | None] | None, key: str) -> set[str]:
        """Root keys whose document ``row`` (of ``rel``, key ``key``) takes part in."""
        if row is None:
            return set()
        q = rel.qualified
        if q == self.document.root:
            return {key}
        out: set[str] = set()
        for p in self.document.parents:
            if q == p.table:
                out |= {
                    k
                    for (k,) in self.db.execute(
                        "SELECT key FROM refs WHERE tbl = ? AND ref = ?", (f"{self.document.root}>{q}", key)
                    )
                }
        for c in self.document.children:
            if q == c.table and row.get(c.column) is not None:
                out.add(json.dumps([row.get(c.column)]))
        return out

    # -- batches --------------------------------------------------------------------------

    def batch(self, batch: Batch) -> Batch:
        rels = dict(batch.relations)
        for r in rels.values():
            if r.qualified in self.tables:
                self.rels[r.qualified] = r
        if not self._in_txn:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        dirty: set[str] = set()
        root_oid: int | None = None
        items: list[Any] = []
        for t in batch.transactions:
            for it in t.items:
                if isinstance(it, SchemaChange):
                    rels[it.relation.oid] = it.relation
                    if it.relation.qualified in self.tables:
                        self._check(it.relation)
                        self.rels[it.relation.qualified] = it.relation
                elif isinstance(it, Truncate):
                    for oid in it.relids:
                        rel = rels.get(oid)
                        if rel is None or rel.qualified not in self.tables:
                            continue
                        self.db.execute("DELETE FROM rows WHERE tbl = ?", (rel.qualified,))
                        self.db.execute(
                            "DELETE FROM refs WHERE tbl = ? OR tbl LIKE ?",
                            (rel.qualified, f"{rel.qualified}>%"),
                        )
                        if rel.qualified == self.document.root and rel.oid in self.out:
                            items.append(Truncate((rel.oid,)))
                            dirty.clear()
                        else:  # every document may have lost a field
                            dirty |= {
                                k
                                for (k,) in self.db.execute(
                                    "SELECT key FROM rows WHERE tbl = ?", (self.document.root,)
                                )
                            }
                elif isinstance(it, RowChange):
                    rel = rels.get(it.relid)
                    if rel is None or rel.qualified not in self.tables:
                        continue
                    if rel.qualified == self.document.root:
                        root_oid = rel.oid
                    dirty |= self._change(rel, it)
        if root_oid is None:
            root_oid = next((r.oid for r in rels.values() if r.qualified == self.document.root), None)
        if dirty and root_oid is not None:
            items.extend(self._documents(root_oid, sorted(dirty)))
        if batch.commit:
            self.db.execute("INSERT OR REPLACE INTO position VALUES (1, ?)", (batch.checkpoint.seq,))
            self.db.execute("COMMIT")  # before the view commits: the state is never behind it
            self._in_txn = False
        last = batch.transactions[-1]
        out_txn = Transaction(
            last.seq,
            last.commit_lsn,
            last.end_lsn,
            last.xid,
            last.commit_time,
            items,
            last.last,
            last.snapshot,
        )
        return Batch([out_txn], dict(self.out), batch.checkpoint, len(items), batch.commit, batch.meta)

    def _check(self, rel: Relation) -> None:
        """The declared columns exist (a clear error naming the missing one)."""
        names = set(rel.column_names)
        need: list[str] = []
        if rel.qualified == self.document.root:
            need = [p.column for p in self.document.parents]
        for p in self.document.parents:
            if rel.qualified == p.table:
                need = list(p.fields.values())
                if len(rel.key) != 1:
                    raise ViewError(f"view {self.view}: parent {p.table} needs a one-column primary key")
        for c in self.document.children:
            if rel.qualified == c.table:
                need = [c.column, *([c.value] if c.value else [])]
        missing = [n for n in need if n not in names]
        if missing:
            raise ViewError(
                f"view {self.view}: table {rel.qualified} has no column {missing[0]} (document declared "
                f"in [views.{self.view}.document])",
                action=f"fix [views.{self.view}.document], then `syncline retry {self.view}`",
            )
        if rel.qualified == self.document.root and len(rel.key) != 1 and self.document.children:
            raise ViewError(
                f"view {self.view}: root {rel.qualified} needs a one-column primary key for children"
            )

    def _row(
        self, rel: Relation, values: Row | None, base: dict[str, str | None] | None
    ) -> dict[str, str | None]:
        row: dict[str, str | None] = {}
        for c, v in zip(rel.columns, values or (), strict=False):
            if v is UNCHANGED:
                row[c.name] = (base or {}).get(c.name)
            else:
                row[c.name] = v
        return row

    def _change(self, rel: Relation, it: RowChange) -> set[str]:
        dirty: set[str] = set()
        old_key: str | None = None
        if it.old is not None:
            old_key = self._key(rel, self._row(rel, it.old, None))
        if it.op == "delete":
            key = old_key or self._key(rel, self._row(rel, it.new, None))
            old = self._drop(rel, key)
            return self._roots_of(rel, old, key) | ({key} if rel.qualified == self.document.root else set())
        new = self._row(rel, it.new, None)
        key = self._key(rel, new)
        prev = self._drop(rel, old_key) if old_key is not None and old_key != key else None
        if prev is not None:
            dirty |= self._roots_of(rel, prev, old_key or key) | (
                {old_key} if rel.qualified == self.document.root and old_key else set()
            )
        stored = self._get(rel.qualified, key)
        if it.op == "update" and any(v is UNCHANGED for v in it.new or ()):
            new = self._row(rel, it.new, stored or prev)
        dirty |= self._roots_of(rel, stored, key)
        self._put(rel, new)
        dirty |= self._roots_of(rel, new, key)
        return dirty

    # -- documents ------------------------------------------------------------------------

    def _shape(self, root_oid: int) -> Relation:
        root = self.rels[self.document.root]
        cols = list(root.columns)
        for p in self.document.parents:
            prel = self.rels.get(p.table)
            by = {c.name: c for c in prel.columns} if prel else {}
            for field, col in p.fields.items():
                base = by.get(col) or Column(field, 25, -1, "text", "S", base="text")
                cols.append(replace(base, name=field, in_identity=False))
        for c in self.document.children:
            cols.append(Column(c.field, 3802, -1, "jsonb", "U", base="jsonb"))
        return Relation(
            root_oid, root.schema, root.name, root.replident, tuple(cols), root.key, root.user_types
        )

    def _documents(self, root_oid: int, keys: list[str]) -> list[Any]:
        shape = self._shape(root_oid)
        items: list[Any] = []
        known = self.out.get(root_oid)
        if known is None or not known.same_shape(shape):
            self.out[root_oid] = shape
            self.db.execute(
                "INSERT OR REPLACE INTO shapes VALUES (?, ?)", (root_oid, relation_to_json(shape).decode())
            )
            items.append(SchemaChange(shape))
        for key in keys:
            row = self._get(self.document.root, key)
            if row is None:
                kv = json.loads(key)
                items.append(
                    RowChange(
                        "delete",
                        root_oid,
                        None,
                        tuple(
                            kv[shape.key.index(c.name)] if c.name in shape.key else None
                            for c in shape.columns
                        ),
                    )
                )
                continue
            items.append(RowChange("insert", root_oid, self._document(shape, row, key)))
        return items

    def _document(self, shape: Relation, row: dict[str, str | None], key: str) -> Row:
        doc: dict[str, str | None] = dict(row)
        for p in self.document.parents:
            ref = row.get(p.column)
            parent = self._get(p.table, json.dumps([ref])) if ref is not None else None
            for field, col in p.fields.items():
                doc[field] = parent.get(col) if parent else None
        for c in self.document.children:
            crel = self.rels.get(c.table)
            kids = [
                json.loads(r)
                for (r,) in self.db.execute(
                    "SELECT r.row FROM refs f JOIN rows r ON r.tbl = f.tbl AND r.key = f.key"
                    " WHERE f.tbl = ? AND f.ref = ? ORDER BY f.key",
                    (c.table, key),
                )
            ]
            by = {col.name: col for col in crel.columns} if crel else {}
            ckey = crel.key if crel else ()
            kids.sort(key=lambda k: _order(by, ckey, k))
            if c.value:
                values: list[Any] = [_typed(by, c.value, k.get(c.value)) for k in kids]
            else:
                values = [{n: _typed(by, n, v) for n, v in k.items()} for k in kids]
            doc[c.field] = json.dumps(values, default=str, ensure_ascii=False)
        return tuple(doc.get(col.name) for col in shape.columns)

    # -- the TransformingView's hooks -------------------------------------------------------

    def load(self, doc: dict[str, Any]) -> None:
        """(The shapes live in the state file, committed with it.)"""

    def opened(self, seq: int) -> None:
        """The view holds the log up to ``seq``: the state must hold at least as much."""
        got = self.db.execute("SELECT seq FROM position").fetchone()
        have = int(got[0]) if got else 0
        if have < seq:
            raise ViewError(
                f"view {self.view}: its documents' state {self.path} holds the log up to record {have}, "
                f"the view up to {seq} (the file was removed or replaced): documents would miss rows",
                action=f"empty the view's store (it is refilled with the state), or restore {self.path}",
            )

    def doc(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        if self._in_txn:
            self.db.execute("ROLLBACK")
            self._in_txn = False
        self.db.close()
