"""The Tantivy search view: one document per source row in one index directory.

Layout (fixed at index creation; tables and columns arrive later, so columns are not
schema fields):

* ``_id`` (raw, stored, indexed, fast): ``[table, key...]`` as compact JSON (the table as in
  ``_table``), unique across tables; upserts and deletes go by this term (fast: results sorted by a column
  identify their documents through it);
* ``_key`` (raw, stored, indexed): the primary-key columns' text joined by ``:``, escaped as
  in a Redis key (:func:`~syncline.core.keytemplate.pk_text`);
* ``_table`` (raw, stored, indexed): ``schema.table``, each name escaped as in a Redis key
  (:func:`~syncline.core.keytemplate.table_text`: ``s."t.u"`` is ``s.t\\.u``); truncate
  deletes by this term;
* ``text`` (tokenized with the configured tokenizer, not stored): the values of the
  configured ``text_fields`` (when absent: every string, enum, JSON or XML column, and
  arrays of them): the default field of queries;
* ``doc`` (JSON, indexed with the tokenizer, not stored): every column by name as
  PostgreSQL text; query one column with ``doc.name:word``;
* ``_row`` (bytes, stored only): the row as compact JSON, every column by name as its
  ``::text`` (null for NULL). Stored apart from ``doc`` because tantivy turns a JSON string
  that looks like an RFC 3339 date into a date value, which would not give the text back;
* ``num`` (JSON, fast, not stored): integer and floating-point/numeric columns as numbers
  (finite values), for range queries (``num.price:[10 TO 20]``), sorting and aggregations;
* ``date`` (JSON, fast, not stored): date, timestamp and timestamptz columns as RFC 3339 UTC
  dates (years 1678-2261; infinity and BC values are stored only), for
  ``date.at:[2024-01-01T00:00:00Z TO *]`` and sorting;
* ``_meta`` (bytes, stored only): on the bookkeeping document (``_table`` = ``_syncline``,
  ``_key`` = ``_syncline:position``) the checkpoint and the relations JSON, replaced in
  every commit, so the index is never ahead of or behind its recorded position.

Uncommitted changes are not visible to searchers, so the view keeps an overlay of the
documents it wrote since the last commit (and the tables it truncated) to resolve partial
rows (unchanged TOAST values) against. A batch with ``commit=False`` is applied into the
open writer; the index is committed at a batch with ``commit=True`` (at most every
``commit_interval`` seconds). Any failure rolls the writer back to the last commit.

Each document is handed to tantivy as one JSON text (``IndexWriter.add_json``): one C-level
encode per row instead of a Python call per field. The documents of a step replace earlier
ones through a single delete-by-term-set query, issued before they are added (tantivy
applies a delete to the documents added before it), and not at all for a table that has no
committed document and keys not written since the last commit (snapshot, bulk loads).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

import tantivy

from syncline.core import codec
from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Relation,
    Value,
    column_mapping,
    key_text,
)
from syncline.core.keytemplate import table_text
from syncline.views.base import Batch, keyless_refusal, leave_out_keyless
from syncline.views.netting import Key, TableDelta
from syncline.views.skeleton import AppliedView
from syncline.views.tantivy.document import Builder, DocShape, Document, compile_document
from syncline.views.tantivy.values import (
    Converter,
    date_converter,
    is_wordy,
    number_converter,
    text_converter,
)

log = logging.getLogger(__name__)

F_ID = "_id"
F_KEY = "_key"
F_TABLE = "_table"
F_TEXT = "text"
F_DOC = "doc"
F_ROW = "_row"
F_NUM = "num"
F_DATE = "date"
F_META = "_meta"
META_TABLE = "_syncline"
META_KEY = "_syncline:position"
LAYOUT = 2
"""Version of the index layout (stored in the bookkeeping document)."""
WRITER_HEAP = 256_000_000
"""Bytes of indexing memory shared by the writer's threads (fewer, larger segments)."""
WRITER_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
"""Indexing threads: one per two cores (the capture, the other views and this process's
Python thread need the rest; on 2 cores a second thread costs more CPU than it saves)."""

Fields = dict[str, str | None]


def table_of(rel: Relation) -> str:
    """``_table`` of a table's documents (and the first element of their ``_id``)."""
    return table_text(rel.schema, rel.name)


def _id_prefix(table: str) -> str:
    """The start of the ``_id`` of every document of ``table`` (as in ``_table``)."""
    return "[" + encode_basestring(table) + ","


def doc_id(qualified: str, key: Key) -> str:
    """The unique id term of a row's document."""
    return json.dumps([qualified, *key], ensure_ascii=False, separators=(",", ":"))


META_ID = doc_id(META_TABLE, (META_KEY,))


def build_schema(tokenizer: str) -> Any:
    sb = tantivy.SchemaBuilder()
    # single-token fields record no frequencies or positions (cheaper to index)
    sb.add_text_field(F_ID, stored=True, tokenizer_name="raw", fast=True, index_option="basic")
    sb.add_text_field(F_KEY, stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_text_field(F_TABLE, stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_text_field(F_TEXT, stored=False, tokenizer_name=tokenizer)
    sb.add_json_field(F_DOC, stored=False, tokenizer_name=tokenizer)
    sb.add_bytes_field(F_ROW, stored=True)
    sb.add_json_field(F_NUM, stored=False, fast=True, tokenizer_name="raw", index_option="basic")
    sb.add_json_field(F_DATE, stored=False, fast=True, tokenizer_name="raw", index_option="basic")
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


def _check_layout(index: Any) -> None:
    """Raise ValueError unless ``index`` has this version's fields."""
    index.parse_query("x", [F_TEXT, F_ID, F_KEY, F_TABLE, F_DOC, F_NUM, F_DATE])
    index.searcher().search(tantivy.Query.exists_query(F_ID), 1)  # _id must be fast


def _stored_fields(d: Any) -> Fields:
    raw = d.get_first(F_ROW)
    if raw is None:
        return {}
    got = json.loads(bytes(raw))
    return dict(got) if isinstance(got, dict) else {}


def _read_meta(index: Any) -> tuple[Checkpoint, dict[int, Relation]]:
    searcher = index.searcher()
    res = searcher.search(tantivy.Query.term_query(index.schema, F_ID, META_ID), 1)
    if not res.hits:
        return Checkpoint(), {}
    raw = searcher.doc(res.hits[0][1]).get_first(F_META)
    meta = json.loads(bytes(raw))
    rels = {int(oid): codec.relation_from_json(doc) for oid, doc in meta.get("relations", {}).items()}
    return Checkpoint.stored(meta["seq"], meta["commit_lsn"], meta.get("log_id")), rels


def _open_existing(path: str) -> Any:
    if not os.path.isdir(path) or not tantivy.Index.exists(path):
        raise ViewError(f"no search index at {path}")
    return tantivy.Index.open(path)


def _not_meta(index: Any, q: Any) -> Any:
    return tantivy.Query.boolean_query(
        [
            (tantivy.Occur.Must, q),
            (tantivy.Occur.MustNot, tantivy.Query.term_query(index.schema, F_TABLE, META_TABLE)),
        ]
    )


def _hit(d: Any, score: float) -> dict[str, Any]:
    return {
        "table": d.get_first(F_TABLE),
        "key": d.get_first(F_KEY),
        "score": score,
        "fields": _stored_fields(d),
    }


def search(path: str, query: str, limit: int = 10, order_by: str | None = None) -> list[dict[str, Any]]:
    """Search the index of a tantivy view (for ``syncline search VIEW QUERY``).

    ``query`` uses tantivy's query language over the text fields (``word``, ``"a phrase"``,
    ``+must -not``, ``doc.column:word``, ``num.column:[1 TO 5]``,
    ``date.column:[2024-01-01T00:00:00Z TO *]``, ``_table:public.items``; ``*`` matches
    every row). Returns up to ``limit`` hits, best first: ``{"table", "key", "score",
    "fields"}`` where ``fields`` holds every column's stored PostgreSQL text by name.

    ``order_by``: a number or date column (``"price"``, ``"-price"`` for descending) to sort
    by instead of relevance; rows without a value in it are left out, ``score`` is 0."""
    if limit <= 0:
        return []
    try:
        index = _open_existing(path)
    except (OSError, ValueError) as e:
        raise ViewError(f"cannot open the search index at {path}: {e}") from e
    searcher = index.searcher()
    rels = _read_meta(index)[1].values()
    columns = {c.name for rel in rels for c in rel.columns}
    try:
        parsed = index.parse_query(column_fields(query, searcher, columns), [F_TEXT])
    except ValueError as e:
        raise ViewError(f"invalid search query {query!r}: {e}") from e
    if order_by:
        column = order_by.lstrip("-+")
        if column not in columns:
            raise ViewError(f"--sort {order_by!r}: no column {column!r} in the view's tables")
        sortable = {c.name for rel in rels for c in rel.columns if number_converter(c) or date_converter(c)}
        if column not in sortable:
            raise ViewError(
                f"--sort {order_by!r}: column {column!r} is not a number, date or timestamp "
                "column (only those sort; text is searched)"
            )
    try:
        if order_by:
            return _sorted_search(index, searcher, parsed, limit, order_by)
        return [
            _hit(searcher.doc(addr), float(score))
            for score, addr in searcher.search(_not_meta(index, parsed), limit).hits
        ]
    except ValueError as e:
        raise ViewError(f"search {query!r} failed: {e}") from e
    except BaseException as e:  # tantivy panics surface as pyo3_runtime.PanicException
        if type(e).__name__ != "PanicException":
            raise
        raise ViewError(
            f"search {query!r} failed inside tantivy ({e}); for a numeric range with one "
            "fractional bound write both bounds with a fraction (num.x:[1.5 TO 3.5]) or use "
            "num.x:>=1.5 AND num.x:<=3"
        ) from None


_QUOTED = re.compile(r'("(?:[^"\\]|\\.)*")')
_FIELD = re.compile(r"(?<![\w.\\])([A-Za-z_][A-Za-z0-9_]*):(?=\S)")
_OWN_FIELDS = frozenset((F_TEXT, F_ID, F_KEY, F_TABLE, F_DOC, F_NUM, F_DATE))


def column_fields(query: str, searcher: Any, columns: set[str]) -> str:
    """Let a query name columns directly: ``name:lamp`` means ``doc.name:lamp``, and a
    range ``price:[1 TO 5]`` means ``num.price`` (or ``date.price`` for a date column).
    A name that is no column of the indexed tables is an error (ValueError)."""

    def field(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _OWN_FIELDS:
            return m.group(0)
        if name not in columns:
            known = ", ".join(sorted(columns))
            raise ValueError(f"no column named {name!r} in this index (columns: {known})")
        rest = m.string[m.end() :]
        if rest[:1] in ("[", "{", ">", "<"):
            for f in (F_NUM, F_DATE):
                if searcher.search(tantivy.Query.exists_query(f"{f}.{name}"), 1).count:
                    return f"{f}.{name}:"
            return f"{F_NUM}.{name}:"
        return f"{F_DOC}.{name}:"

    parts = _QUOTED.split(query)
    for i in range(0, len(parts), 2):  # outside quoted phrases
        parts[i] = _FIELD.sub(field, parts[i])
    return "".join(parts)


def _sorted_search(index: Any, searcher: Any, parsed: Any, limit: int, order_by: str) -> list[dict[str, Any]]:
    desc = order_by.startswith("-")
    column = order_by.lstrip("-+")
    field = ""
    for f in (F_NUM, F_DATE):
        if searcher.search(tantivy.Query.exists_query(f"{f}.{column}"), 1).count:
            field = f"{f}.{column}"
            break
    if not field:
        return []
    q = tantivy.Query.boolean_query(
        [
            (tantivy.Occur.Must, _not_meta(index, parsed)),
            (tantivy.Occur.Must, tantivy.Query.exists_query(field)),
        ]
    )
    agg = {
        "top": {
            "top_hits": {
                "size": limit,
                "sort": [{field: "desc" if desc else "asc"}],
                "docvalue_fields": [F_ID],
            }
        }
    }
    out = []
    for h in searcher.aggregate(q, agg)["top"]["hits"]:
        ids = h["docvalue_fields"].get(F_ID) or []
        if not ids:
            continue
        res = searcher.search(tantivy.Query.term_query(index.schema, F_ID, ids[0]), 1)
        if res.hits:
            out.append(_hit(searcher.doc(res.hits[0][1]), 0.0))
    return out


class _Failure(Exception):
    """An error of ours inside apply (message already specific)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How the rows of one table shape become documents (computed once per shape)."""

    rel: Relation
    qualified: str
    names: tuple[str, ...]
    kidx: tuple[int, ...]
    key_texts: tuple[Converter | None, ...] | None
    """Per key column its ``::text`` conversion; None when no key column needs one."""
    shape: DocShape
    document: Builder
    """Row values -> (id, document JSON, row JSON): :func:`compile_document`."""


def _plan(rel: Relation, text_fields: tuple[str, ...] | None) -> _Plan:
    names = rel.column_names
    convs = tuple(text_converter(c) for c in rel.columns)
    kidx = rel.key_indexes()
    kconvs = tuple(convs[i] for i in kidx)
    wanted = {c.name for c in rel.columns if is_wordy(c)} if text_fields is None else set(text_fields)
    enames = tuple(encode_basestring(n) + ":" for n in names)
    nums = tuple(
        (enames[i], i, f) for i, c in enumerate(rel.columns) if (f := number_converter(c)) is not None
    )
    dates = tuple(
        (enames[i], i, d) for i, c in enumerate(rel.columns) if (d := date_converter(c)) is not None
    )
    q = table_of(rel)
    id_prefix = _id_prefix(q)
    texts = convs if any(convs) else None
    text_idx = tuple(i for i, n in enumerate(names) if n in wanted)
    head = '{"_table":' + encode_basestring(q) + ',"_id":'
    shape = DocShape(head, id_prefix, enames, kidx, texts, text_idx, nums, dates)
    return _Plan(
        rel=rel,
        qualified=q,
        names=names,
        kidx=kidx,
        key_texts=kconvs if any(kconvs) else None,
        shape=shape,
        document=compile_document(shape),
    )


def _key_of(plan: _Plan, key: Key) -> Key:
    """A netting key (output text) in ``::text`` form, as documents are keyed."""
    if plan.key_texts is None:
        return key
    return tuple(v if f is None or v is None else f(v) for f, v in zip(plan.key_texts, key, strict=True))


def _id_of(plan: _Plan, key: Key) -> str:
    return plan.shape.id_prefix + ",".join("null" if k is None else encode_basestring(k) for k in key) + "]"


class TantivyView(AppliedView):
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
        super().__init__(cfg.name)
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
        self._done = Checkpoint()
        """Applied (committed, or held in the writer until the next commit)."""
        self._committed = Checkpoint()
        self._pending: dict[str, str | None] = {}
        """Documents written since the last commit: id -> the row's JSON (None: deleted)."""
        self._truncated: set[str] = set()
        self._has_committed: dict[str, bool] = {}
        self._plans: dict[int, _Plan] = {}
        self._searcher_cache: Any = None
        self._dirty = False
        self._last_commit = time.monotonic()

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
                    _check_layout(index)
                except ValueError as e:
                    raise ViewError(
                        f"view {self.name!r}: {self.path} holds a tantivy index that this syncline "
                        f"did not create (another program, or an older index layout: {e}); remove "
                        "it (the view is rebuilt from the log) or choose another path"
                    ) from e
            else:
                index = tantivy.Index(build_schema(self.tokenizer), path=self.path)
        except OSError as e:
            raise TransientViewError(f"view {self.name!r}: cannot open search index {self.path}: {e}") from e
        try:
            writer = index.writer(WRITER_HEAP, WRITER_THREADS)
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
        self._committed = self._done = cp
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
                    self._commit_writer()
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
        rel = next((r for r in self._rels.values() if r.qualified == qualified), None)
        if rel is not None:
            qualified = table_of(rel)
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

    transient_errors = (OSError,)

    def _ensure_open(self) -> None:
        if self._writer is None:
            self._open_writer()

    def _applied(self) -> Checkpoint:
        return self._done

    def _begin(self, batch: Batch) -> bool:
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return {**batch.relations, **self._rels}

    def _commit(self, batch: Batch) -> None:
        """Commit now, or with a later batch when ``commit_interval`` has not passed."""
        self._done = batch.checkpoint
        self._dirty = True
        if self.commit_interval <= 0 or time.monotonic() - self._last_commit >= self.commit_interval:
            self._commit_writer()

    def _stored_seq(self) -> str:
        return str(self._committed.seq)

    def flush(self) -> None:
        """Commit applied batches now (with ``commit_interval`` > 0)."""
        with self._lock:
            if self._writer is not None and self._dirty and not self._in_txn:
                self._commit_writer()

    # ------------------------------------------------------------------ internals

    def _reset_pending(self) -> None:
        self._pending.clear()
        self._truncated.clear()
        self._has_committed.clear()
        self._searcher_cache = None
        self._dirty = False

    def _searcher(self) -> Any:
        """A searcher of the last commit (the index is reloaded only when committing)."""
        if self._searcher_cache is None:
            self._searcher_cache = self._index.searcher()
        return self._searcher_cache

    def _commit_writer(self) -> None:
        w = self._writer
        meta = {
            "view": self.name,
            "layout": LAYOUT,
            "seq": self._done.seq,
            "commit_lsn": self._done.commit_lsn,
            "log_id": self._done.log,
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
        self._committed = self._done
        self._committed_rels = dict(self._rels)
        self._last_commit = time.monotonic()
        self._reset_pending()

    def _abort(self) -> None:
        self._reset_pending()
        self._done = self._committed
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

    def _plan_for(self, rel: Relation) -> _Plan:
        p = self._plans.get(rel.oid)
        if p is None or p.rel != rel:
            p = self._plans[rel.oid] = _plan(rel, self.text_fields)
        return p

    def _may_have_committed(self, qualified: str) -> bool:
        """Whether the last commit holds documents of the table (not truncated since)."""
        if qualified in self._truncated:
            return False
        got = self._has_committed.get(qualified)
        if got is None:
            q = tantivy.Query.term_query(self._index.schema, F_TABLE, qualified)
            got = self._has_committed[qualified] = bool(self._searcher().search(q, 1).count)
        return got

    def _lookup(self, qualified: str, i: str) -> Fields | None:
        """The stored (or written since the last commit) columns of the row with id ``i``."""
        if i in self._pending:
            row = self._pending[i]
            return None if row is None else dict(json.loads(row))
        if not self._may_have_committed(qualified):
            return None
        searcher = self._searcher()
        res = searcher.search(tantivy.Query.term_query(self._index.schema, F_ID, i), 1)
        if not res.hits:
            return None
        return _stored_fields(searcher.doc(res.hits[0][1]))

    def _table_docs(self, qualified: str) -> dict[str, Fields]:
        """Every document of a table (committed, overlaid with uncommitted writes)."""
        out: dict[str, Fields] = {}
        if self._may_have_committed(qualified):
            searcher = self._searcher()
            q = tantivy.Query.term_query(self._index.schema, F_TABLE, qualified)
            n = searcher.search(q, 1).count or 0
            if n:
                for _, addr in searcher.search(q, n).hits:
                    d = searcher.doc(addr)
                    out[str(d.get_first(F_ID))] = _stored_fields(d)
        prefix = _id_prefix(qualified)
        for i, pending in self._pending.items():
            if not i.startswith(prefix):
                continue
            if pending is None:
                out.pop(i, None)
            else:
                out[i] = dict(json.loads(pending))
        return out

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        qualified = table_of(rel)
        self._writer.delete_documents_by_term(F_TABLE, qualified)
        prefix = _id_prefix(qualified)
        for i in [i for i in self._pending if i.startswith(prefix)]:
            del self._pending[i]
        self._truncated.add(qualified)

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
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
        if table_of(prev) != table_of(new):
            renamed = True
        if not renamed and not dropped:
            return
        docs = self._table_docs(table_of(prev))
        if not docs:
            return
        if not new.key_indexes():
            raise _Failure(keyless_refusal(self.name, self.kind, new.qualified))
        self._writer.delete_documents_by_query(
            tantivy.Query.term_set_query(self._index.schema, F_ID, list(docs))
        )
        for i in docs:
            self._pending[i] = None
        rows = [
            [fields.get(prev.columns[j].name) if j is not None else None for j in mapping]
            for fields in docs.values()
        ]
        self._write(self._plan_for(new), [], rows)

    def _on_delta(self, td: TableDelta) -> None:
        rel = td.relation
        cur = self._rels.get(rel.oid)
        if cur is None or not cur.same_shape(rel):
            self._on_schema(cur, rel)
        if not rel.key_indexes():
            leave_out_keyless(self.name, self.kind, rel)
            return
        plan = self._plan_for(rel)
        q = plan.qualified
        rows: list[Sequence[Value]] = list(td.upserts())
        # partial rows: read the stored row of the origin key before anything is deleted
        for row, origin in td.partials():
            stored = self._lookup(q, _id_of(plan, _key_of(plan, origin)))
            if stored is None:
                self.missing_partials += 1
                log.warning(
                    "view %s: %s: updated row %s with unchanged TOAST values has no stored "
                    "document; its unchanged columns are null",
                    self.name,
                    q,
                    key_text(tuple(str(row[i]) for i in plan.kidx)),
                )
            rows.append(
                [
                    (stored.get(n) if stored is not None else None) if v is UNCHANGED else v
                    for n, v in zip(plan.names, row, strict=True)
                ]
            )
        self._write(plan, [_id_of(plan, _key_of(plan, k)) for k in td.deletes()], rows)

    def _write(self, plan: _Plan, deletes: list[str], rows: Iterable[Sequence[Value]]) -> None:
        """Delete the documents ``deletes`` and replace those of ``rows`` (full rows, output
        or ``::text`` form), keys distinct."""
        docs: list[tuple[str, str, str]] = []
        for vals in rows:
            try:
                docs.append(self._document(plan, vals))
            except Exception as e:
                self._reject(plan, vals, e)
        pending = self._pending
        ids = [*deletes, *(d[0] for d in docs)]
        if not self._may_have_committed(plan.qualified):
            ids = [i for i in ids if pending.get(i) is not None]
        w = self._writer
        if ids:
            # one delete for the step, before the new documents (a tantivy delete applies
            # to the documents added before it)
            w.delete_documents_by_query(tantivy.Query.term_set_query(self._index.schema, F_ID, ids))
        for i in deletes:
            pending[i] = None
        for i, text, row in docs:
            try:
                w.add_json(text)
            except ValueError as e:
                pending[i] = None
                self._reject(plan, list(json.loads(row).values()), e)
                continue
            pending[i] = row

    def _document(self, plan: _Plan, vals: Sequence[Value]) -> Document:
        """(id, the document as JSON text for ``add_json``, the row's JSON) of a row."""
        return plan.document(vals)

    def _reject(self, plan: _Plan, vals: Sequence[Value], e: Exception) -> None:
        kt = key_text(tuple("" if vals[k] is None else str(vals[k]) for k in plan.kidx))
        if not self.skip_errors:
            raise _Failure(f"row with key {kt!r}: tantivy rejected the document: {e}") from e
        self.skipped += 1
        log.warning("view %s: %s: skipped row with key %r: %s", self.name, plan.qualified, kt, e)


__all__ = ["TantivyView", "build_schema", "doc_id", "search"]
