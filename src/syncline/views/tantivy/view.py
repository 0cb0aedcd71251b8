"""The Tantivy search view: one document per source row in one index directory.

Layout (fixed at index creation; tables and columns arrive later, so columns are not
schema fields):

* ``_id`` (raw, stored, indexed): ``["schema.table", key...]`` as compact JSON, unique
  across tables; upserts and deletes go by this term;
* ``_key`` (raw, stored, indexed): the primary-key columns' text joined by ``:``;
* ``_table`` (raw, stored, indexed): ``schema.table``; truncate deletes by this term;
* ``text`` (tokenized with the configured tokenizer, not stored): the values of the
  configured ``text_fields`` (all columns when absent): the default field of queries;
* ``doc`` (JSON, stored, tokenized): every column by name as PostgreSQL text (NULL: null);
  query one column with ``doc.name:word``;
* ``num`` (JSON, fast, not stored): integer and floating-point/numeric columns as numbers,
  for range queries (``num.price:[10 TO 20]``) and aggregations;
* ``_meta`` (bytes, stored only): on the bookkeeping document (``_table`` = ``_syncline``,
  ``_key`` = ``_syncline:position``) the checkpoint and the relations JSON, replaced in
  every commit, so the index is never ahead of or behind its recorded position.

Uncommitted changes are not visible to searchers, so the view keeps an overlay of the
documents it wrote since the last commit (and the tables it truncated) to resolve partial
rows (unchanged TOAST values) against. A batch with ``commit=False`` is applied into the
open writer; the index is committed at a batch with ``commit=True`` (at most every
``commit_interval`` seconds). Any failure rolls the writer back to the last commit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import Any

import tantivy

from syncline.core import codec
from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Relation,
    SchemaChange,
    column_mapping,
    key_text,
)
from syncline.views.base import Batch, selected_oids
from syncline.views.netting import DeltaStep, Key, SchemaStep, TableDelta, TruncateStep, net_steps

log = logging.getLogger(__name__)

F_ID = "_id"
F_KEY = "_key"
F_TABLE = "_table"
F_TEXT = "text"
F_DOC = "doc"
F_NUM = "num"
F_META = "_meta"
META_TABLE = "_syncline"
META_KEY = "_syncline:position"

_INTS = {"smallint", "integer", "bigint", "int2", "int4", "int8", "oid"}
_FLOATS = {"real", "double precision", "float4", "float8"}
Fields = dict[str, str | None]


def doc_id(qualified: str, key: Key) -> str:
    """The unique id term of a row's document."""
    return json.dumps([qualified, *key], ensure_ascii=False, separators=(",", ":"))


META_ID = doc_id(META_TABLE, (META_KEY,))


def build_schema(tokenizer: str) -> Any:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field(F_ID, stored=True, tokenizer_name="raw")
    sb.add_text_field(F_KEY, stored=True, tokenizer_name="raw")
    sb.add_text_field(F_TABLE, stored=True, tokenizer_name="raw")
    sb.add_text_field(F_TEXT, stored=False, tokenizer_name=tokenizer)
    sb.add_json_field(F_DOC, stored=True, tokenizer_name=tokenizer)
    sb.add_json_field(F_NUM, stored=False, fast=True)
    sb.add_bytes_field(F_META, stored=True)
    return sb.build()


def _check_tokenizer(tokenizer: str) -> bool:
    """Whether tantivy knows the tokenizer (it only complains at commit)."""
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("t", tokenizer_name=tokenizer)
    idx = tantivy.Index(sb.build())
    w = idx.writer(15_000_000, 1)
    d = tantivy.Document()
    d.add_text("t", "x")
    w.add_document(d)
    try:
        w.commit()
    except ValueError:
        return False
    finally:
        w.wait_merging_threads()
    return True


def _number(type_name: str, v: str) -> int | float | None:
    t = type_name.split("(", 1)[0].strip()
    try:
        if t in _INTS:
            return int(v)
        if t in _FLOATS or t == "numeric":
            f = float(v)
            return f if math.isfinite(f) else None
    except ValueError:
        return None
    return None


def _stored_fields(searcher: Any, addr: Any) -> tuple[str, Fields]:
    d = searcher.doc(addr)
    got = d.get_first(F_DOC)
    return str(d.get_first(F_ID)), dict(got) if isinstance(got, dict) else {}


def _read_meta(index: Any) -> tuple[Checkpoint, dict[int, Relation]]:
    searcher = index.searcher()
    res = searcher.search(tantivy.Query.term_query(index.schema, F_ID, META_ID), 1)
    if not res.hits:
        return Checkpoint(), {}
    raw = searcher.doc(res.hits[0][1]).get_first(F_META)
    meta = json.loads(bytes(raw))
    rels = {int(oid): codec.relation_from_json(doc) for oid, doc in meta.get("relations", {}).items()}
    return Checkpoint(int(meta["seq"]), int(meta["commit_lsn"])), rels


def _open_existing(path: str) -> Any:
    if not os.path.isdir(path) or not tantivy.Index.exists(path):
        raise ViewError(f"no search index at {path}")
    return tantivy.Index.open(path)


def search(path: str, query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Search the index of a tantivy view (for ``syncline search VIEW QUERY``).

    ``query`` uses tantivy's query language over the text fields (``word``, ``"a phrase"``,
    ``+must -not``, ``doc.column:word``, ``num.column:[1 TO 5]``, ``_table:public.items``).
    Returns up to ``limit`` hits, best first: ``{"table", "key", "score", "fields"}`` where
    ``fields`` holds every column's stored PostgreSQL text by name."""
    if limit <= 0:
        return []
    try:
        index = _open_existing(path)
    except (OSError, ValueError) as e:
        raise ViewError(f"cannot open the search index at {path}: {e}") from e
    try:
        parsed = index.parse_query(query, [F_TEXT])
    except ValueError as e:
        raise ViewError(f"invalid search query {query!r}: {e}") from e
    q = tantivy.Query.boolean_query(
        [
            (tantivy.Occur.Must, parsed),
            (tantivy.Occur.MustNot, tantivy.Query.term_query(index.schema, F_TABLE, META_TABLE)),
        ]
    )
    searcher = index.searcher()
    out: list[dict[str, Any]] = []
    for score, addr in searcher.search(q, limit).hits:
        d = searcher.doc(addr)
        fields = d.get_first(F_DOC)
        out.append(
            {
                "table": d.get_first(F_TABLE),
                "key": d.get_first(F_KEY),
                "score": float(score),
                "fields": dict(fields) if isinstance(fields, dict) else {},
            }
        )
    return out


class _Failure(Exception):
    """An error of ours inside apply (message already specific)."""


class TantivyView:
    kind = "tantivy"

    def __init__(self, cfg: ViewConfig) -> None:
        o = cfg.options
        path = o.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"view {cfg.name!r} (tantivy): option 'path' (a directory) is required")
        tf = o.get("text_fields")
        if tf is not None and (not isinstance(tf, list) or not all(isinstance(x, str) for x in tf)):
            raise ConfigError(f"view {cfg.name!r} (tantivy): text_fields: expected a list of column names")
        tok = o.get("tokenizer", "default")
        if not isinstance(tok, str) or not tok:
            raise ConfigError(f"view {cfg.name!r} (tantivy): tokenizer: expected a tokenizer name")
        interval = o.get("commit_interval", 0.0)
        if not isinstance(interval, int | float) or interval < 0:
            raise ConfigError(f"view {cfg.name!r} (tantivy): commit_interval: expected seconds >= 0")
        on_error = o.get("on_error", "stop")
        if on_error not in ("stop", "skip"):
            raise ConfigError(f'view {cfg.name!r} (tantivy): on_error: expected "stop" or "skip"')
        self.name = cfg.name
        self.path = path
        self.patterns = tuple(cfg.tables)
        self.text_fields: tuple[str, ...] | None = tuple(tf) if tf is not None else None
        self.tokenizer = tok
        self.commit_interval = float(interval)
        self.skip_errors = on_error == "skip"
        self.skipped = 0
        """Rows skipped because tantivy rejected them (on_error = "skip")."""
        self.missing_partials = 0
        """Partial rows (unchanged TOAST) that had no stored document to take values from."""
        self._index: Any = None
        self._writer: Any = None
        self._rels: dict[int, Relation] = {}
        self._committed_rels: dict[int, Relation] = {}
        self._applied = Checkpoint()
        self._committed = Checkpoint()
        self._pending: dict[str, Fields | None] = {}
        self._truncated: set[str] = set()
        self._dirty = False
        self._in_txn = False
        self._last_commit = time.monotonic()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Checkpoint:
        with self._lock:
            if self._writer is None:
                self._open_writer()
            return self._committed

    def _open_writer(self) -> None:
        if not _check_tokenizer(self.tokenizer):
            raise ConfigError(f"view {self.name!r} (tantivy): unknown tokenizer {self.tokenizer!r}")
        try:
            os.makedirs(self.path, exist_ok=True)
            if tantivy.Index.exists(self.path):
                index = tantivy.Index.open(self.path)
                try:
                    index.parse_query("x", [F_TEXT, F_ID, F_KEY, F_TABLE, F_DOC, F_NUM])
                except ValueError as e:
                    raise ViewError(
                        f"view {self.name!r}: {self.path} holds a tantivy index that syncline did "
                        f"not create ({e}); remove it or choose another path"
                    ) from e
            else:
                index = tantivy.Index(build_schema(self.tokenizer), path=self.path)
        except OSError as e:
            raise TransientViewError(f"view {self.name!r}: cannot open search index {self.path}: {e}") from e
        try:
            writer = index.writer()
        except ValueError as e:
            if "lock" in str(e).lower():
                raise TransientViewError(
                    f"view {self.name!r}: the search index {self.path} is held by another writer "
                    f"(another syncline process?); only one process may write it: {e}"
                ) from e
            raise ViewError(f"view {self.name!r}: cannot write search index {self.path}: {e}") from e
        index.reload()
        cp, rels = _read_meta(index)
        self._index, self._writer = index, writer
        self._committed = self._applied = cp
        self._rels = dict(rels)
        self._committed_rels = dict(rels)
        self._reset_pending()

    def close(self) -> None:
        with self._lock:
            w = self._writer
            if w is None:
                return
            try:
                if self._dirty and not self._in_txn:
                    self._commit()
                elif self._dirty:
                    w.rollback()
            except Exception as e:
                log.warning("view %s: committing on close failed: %s", self.name, e)
                try:
                    w.rollback()
                except Exception:
                    log.debug("rollback failed", exc_info=True)
            finally:
                self._writer = None
                self._index = None
                self._in_txn = False
                self._reset_pending()
                try:
                    w.wait_merging_threads()
                except Exception:
                    log.debug("wait_merging_threads failed", exc_info=True)

    def relations(self) -> dict[int, Relation]:
        return dict(self._rels)

    def read_checkpoint(self) -> Checkpoint | None:
        """The committed checkpoint; readable while another process writes the index."""
        with self._lock:
            if self._writer is not None:
                return self._committed
            if not os.path.isdir(self.path) or not tantivy.Index.exists(self.path):
                return Checkpoint()
            try:
                return _read_meta(tantivy.Index.open(self.path))[0]
            except (OSError, ValueError):
                return None

    def count_rows(self, qualified: str) -> int:
        """Committed documents of table ``schema.table``."""
        with self._lock:
            index = self._index if self._index is not None else _open_existing(self.path)
            res = index.searcher().search(tantivy.Query.term_query(index.schema, F_TABLE, qualified), 1)
            return int(res.count or 0)

    @property
    def index(self) -> Any:
        """The open tantivy index (for tests and verification)."""
        if self._index is None:
            raise ViewError(f"view {self.name!r}: not open")
        return self._index

    # ------------------------------------------------------------------ apply

    def apply(self, batch: Batch) -> None:
        """Apply ``batch`` (see :class:`~syncline.views.base.View`); ``batch.relations`` is
        advanced in place past the batch's schema changes."""
        with self._lock:
            if self._writer is None:
                self.open()
            if not self._in_txn and self._applied.seq >= batch.checkpoint.seq:
                log.debug("view %s: skipping batch up to seq %d", self.name, batch.checkpoint.seq)
                _advance(batch)
                return
            where = "-"
            try:
                self._in_txn = True
                rels = {**batch.relations, **self._rels}
                for step in net_steps(batch.transactions, rels, self._selected(batch, rels)):
                    if isinstance(step, SchemaStep):
                        where = step.new.qualified
                        self._schema_step(step.old, step.new)
                    elif isinstance(step, TruncateStep):
                        for r in step.relations:
                            where = r.qualified
                            self._truncate(r.qualified)
                    elif isinstance(step, DeltaStep):
                        for td in step.tables:
                            where = td.relation.qualified
                            self._apply_delta(td)
                where = "-"
                if batch.commit:
                    self._in_txn = False
                    self._applied = batch.checkpoint
                    self._dirty = True
                    if (
                        self.commit_interval <= 0
                        or time.monotonic() - self._last_commit >= self.commit_interval
                    ):
                        self._commit()
            except Exception as e:
                self._abort()
                msg = (
                    f"view {self.name!r}: table {where}: {e} (stored checkpoint seq "
                    f"{self._committed.seq}, batch up to seq {batch.checkpoint.seq} lsn "
                    f"{batch.checkpoint.commit_lsn})"
                )
                transient = isinstance(e, OSError | TransientViewError)
                raise (TransientViewError if transient else ViewError)(msg) from e
            _advance(batch)

    def flush(self) -> None:
        """Commit applied batches now (with ``commit_interval`` > 0)."""
        with self._lock:
            if self._writer is not None and self._dirty and not self._in_txn:
                self._commit()

    # ------------------------------------------------------------------ internals

    def _reset_pending(self) -> None:
        self._pending.clear()
        self._truncated.clear()
        self._dirty = False

    def _commit(self) -> None:
        w = self._writer
        meta = {
            "view": self.name,
            "seq": self._applied.seq,
            "commit_lsn": self._applied.commit_lsn,
            "tokenizer": self.tokenizer,
            "text_fields": list(self.text_fields) if self.text_fields is not None else None,
            "relations": {str(oid): codec.relation_to_json(r).decode() for oid, r in self._rels.items()},
        }
        d = tantivy.Document()
        d.add_text(F_ID, META_ID)
        d.add_text(F_KEY, META_KEY)
        d.add_text(F_TABLE, META_TABLE)
        d.add_bytes(F_META, json.dumps(meta).encode())
        w.delete_documents_by_term(F_ID, META_ID)
        w.add_document(d)
        w.commit()
        self._index.reload()
        self._committed = self._applied
        self._committed_rels = dict(self._rels)
        self._last_commit = time.monotonic()
        self._reset_pending()

    def _abort(self) -> None:
        self._in_txn = False
        self._reset_pending()
        self._applied = self._committed
        self._rels = dict(self._committed_rels)
        w = self._writer
        if w is None:
            return
        try:
            w.rollback()
        except Exception:
            log.warning("view %s: rollback failed; reopening on next use", self.name, exc_info=True)
            self._writer = None
            self._index = None
            try:
                w.wait_merging_threads()
            except Exception:
                log.debug("wait_merging_threads failed", exc_info=True)

    def _selected(self, batch: Batch, rels: dict[int, Relation]) -> set[int] | None:
        return selected_oids(self.patterns, batch, rels)

    def _lookup(self, qualified: str, key: Key) -> Fields | None:
        """The stored (or written since the last commit) columns of a row."""
        i = doc_id(qualified, key)
        if i in self._pending:
            return self._pending[i]
        if qualified in self._truncated:
            return None
        searcher = self._index.searcher()
        res = searcher.search(tantivy.Query.term_query(self._index.schema, F_ID, i), 1)
        if not res.hits:
            return None
        return _stored_fields(searcher, res.hits[0][1])[1]

    def _table_docs(self, qualified: str) -> dict[str, Fields]:
        """Every document of a table (committed, overlaid with uncommitted writes)."""
        out: dict[str, Fields] = {}
        if qualified not in self._truncated:
            searcher = self._index.searcher()
            q = tantivy.Query.term_query(self._index.schema, F_TABLE, qualified)
            n = searcher.search(q, 1).count or 0
            if n:
                for _, addr in searcher.search(q, n).hits:
                    i, stored = _stored_fields(searcher, addr)
                    out[i] = stored
        for i, pending in self._pending.items():
            if json.loads(i)[0] != qualified:
                continue
            if pending is None:
                out.pop(i, None)
            else:
                out[i] = pending
        return out

    def _truncate(self, qualified: str) -> None:
        self._writer.delete_documents_by_term(F_TABLE, qualified)
        for i in [i for i in self._pending if json.loads(i)[0] == qualified]:
            del self._pending[i]
        self._truncated.add(qualified)

    def _schema_step(self, old: Relation | None, new: Relation) -> None:
        """Record the new shape; rewrite stored documents when columns were dropped or
        renamed (new columns simply appear in documents written from now on)."""
        prev = self._rels.get(new.oid, old)
        self._rels[new.oid] = new
        if prev is None:
            return
        mapping = column_mapping(prev, new)
        renamed = any(
            j is not None and prev.columns[j].name != c.name
            for c, j in zip(new.columns, mapping, strict=True)
        )
        kept = {prev.columns[j].name for j in mapping if j is not None}
        dropped = any(c.name not in kept for c in prev.columns)
        if prev.qualified != new.qualified:
            renamed = True
        if not renamed and not dropped:
            return
        for i, fields in self._table_docs(prev.qualified).items():
            key = tuple(json.loads(i)[1:])
            out: Fields = {
                c.name: (fields.get(prev.columns[j].name) if j is not None else None)
                for c, j in zip(new.columns, mapping, strict=True)
            }
            self._writer.delete_documents_by_term(F_ID, i)
            self._pending[i] = None
            self._put(new, key, out)

    def _apply_delta(self, td: TableDelta) -> None:
        rel = td.relation
        cur = self._rels.get(rel.oid)
        if cur is None or not cur.same_shape(rel):
            self._schema_step(cur, rel)
        kidx = rel.key_indexes()
        if not kidx:
            raise _Failure("table has no primary key or replica identity columns")
        q = rel.qualified
        names = rel.column_names
        # partial rows: read the stored row of the origin key before anything is deleted
        resolved: list[tuple[Key, Fields]] = []
        for row, origin in td.partials():
            stored = self._lookup(q, origin)
            if stored is None:
                self.missing_partials += 1
                log.warning(
                    "view %s: %s: updated row %s with unchanged TOAST values has no stored "
                    "document; its unchanged columns are null",
                    self.name,
                    q,
                    key_text(tuple(str(row[i]) for i in kidx)),
                )
            fields: Fields = {}
            for n, v in zip(names, row, strict=True):
                if v is UNCHANGED:
                    fields[n] = stored.get(n) if stored is not None else None
                else:
                    fields[n] = v
            resolved.append((tuple(row[i] for i in kidx), fields))  # type: ignore[misc]
        w = self._writer
        for k in td.deletes():
            i = doc_id(q, k)
            w.delete_documents_by_term(F_ID, i)
            self._pending[i] = None
        for row in td.upserts():
            key: Key = tuple(row[i] for i in kidx)  # type: ignore[misc]
            self._put(rel, key, dict(zip(names, row, strict=True)))  # type: ignore[arg-type]
        for key, fields in resolved:
            self._put(rel, key, fields)

    def _put(self, rel: Relation, key: Key, fields: Fields) -> None:
        """Replace the document of ``key`` by one holding ``fields``."""
        i = doc_id(rel.qualified, key)
        try:
            d = self._document(rel, key, fields)
            self._writer.delete_documents_by_term(F_ID, i)
            self._writer.add_document(d)
        except Exception as e:
            kt = key_text(tuple("" if k is None else k for k in key))
            if not self.skip_errors:
                raise _Failure(f"row with key {kt!r}: tantivy rejected the document: {e}") from e
            self.skipped += 1
            log.warning("view %s: %s: skipped row with key %r: %s", self.name, rel.qualified, kt, e)
            return
        self._pending[i] = fields

    def _document(self, rel: Relation, key: Key, fields: Fields) -> Any:
        d = tantivy.Document()
        d.add_text(F_ID, doc_id(rel.qualified, key))
        d.add_text(F_KEY, key_text(tuple("" if k is None else k for k in key)))
        d.add_text(F_TABLE, rel.qualified)
        names = self.text_fields if self.text_fields is not None else rel.column_names
        for n in names:
            v = fields.get(n)
            if v:
                d.add_text(F_TEXT, v)
        d.add_json(F_DOC, fields)
        nums: dict[str, int | float] = {}
        for c in rel.columns:
            v = fields.get(c.name)
            if v is not None:
                x = _number(c.base or c.type_name, v)
                if x is not None:
                    nums[c.name] = x
        if nums:
            d.add_json(F_NUM, nums)
        return d


def _advance(batch: Batch) -> None:
    """Move ``batch.relations`` past the batch's schema changes (in place)."""
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, SchemaChange):
                batch.relations[it.relation.oid] = it.relation


__all__ = ["TantivyView", "build_schema", "doc_id", "search"]
