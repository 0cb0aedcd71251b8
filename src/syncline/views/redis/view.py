"""The Redis cache view: one hash per row, kept in sync with the source.

Layout (see ``docs/views/redis.md``):

* key ``{table}:{pk}`` by default (template option ``key``; placeholders ``{table}``
  = ``schema.table``, ``{schema}``, ``{name}``, ``{pk}`` = key columns' text joined by
  ``:``); field = column name, value = the column's ``::text`` (:mod:`.values`); NULL
  columns are absent fields;
* bookkeeping under ``_syncline:``: ``position:{view}`` (hash ``seq``, ``commit_lsn``),
  ``relations:{view}`` (hash oid -> relation JSON), ``keys:{view}:{schema.table}`` (set
  of the table's keys, for truncate; hash mode only).

Atomicity: every batch is sent as ONE ``MULTI`` ... ``EXEC`` on a dedicated connection,
together with the position. Commands are streamed into the open ``MULTI`` in chunks, so
syncline's memory stays bounded by one chunk whatever the batch size; Redis queues them
and executes them at ``EXEC``. A batch with ``commit=False`` (it ends inside a source
transaction) leaves the ``MULTI`` open; the following batches of that transaction are
queued into the same ``MULTI`` and the one with ``commit=True`` sends ``EXEC``. Until then
nothing is visible; if syncline dies, Redis drops the queued commands with the
connection. (The cost is Redis memory for the queue of one source transaction, which is
of the order of the data that transaction writes anyway.)

The whole apply is server-side and needs no reads inside the transaction: a partial row
(unchanged TOAST values) is ``HSET``/``HDEL`` of the sent columns over the stored hash, a
moved key first ``COPY``s the stored hash of its origin key to a scratch key; truncate is
a small Lua script unlinking the table's keys (``UNLINK``: memory is freed in the
background). Redis does not roll back a command that fails at run time inside
``EXEC`` (only commands refused while queueing abort the transaction); the commands used
fail at run time only when a user replaced one of our hashes by another type.
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis import exceptions as rex

from syncline.core import codec
from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import UNCHANGED, Checkpoint, Relation, Row, SchemaChange, column_mapping, key_text
from syncline.views.base import Batch, selected_oids, table_selected
from syncline.views.netting import DeltaStep, Key, SchemaStep, TableDelta, TruncateStep, net_steps
from syncline.views.redis.values import Converter, converter

log = logging.getLogger(__name__)

PREFIX = "_syncline:"
MAX_VALUE = 512 * 1024 * 1024
"""Redis's limit for one string (``proto-max-bulk-len`` default)."""
CHUNK = 1000
"""Commands sent to Redis per round trip while queueing a batch."""
PLACEHOLDERS = frozenset({"table", "schema", "name", "pk"})

_TRUNCATE_SET = """
local ks = redis.call('SMEMBERS', KEYS[1])
for i = 1, #ks, 500 do
  redis.call('UNLINK', unpack(ks, i, math.min(i + 499, #ks)))
end
redis.call('UNLINK', KEYS[1])
return #ks
"""

_TRUNCATE_SCAN = """
local cursor = '0'
local n = 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  if #r[2] > 0 then
    redis.call('UNLINK', unpack(r[2]))
    n = n + #r[2]
  end
until cursor == '0'
return n
"""


def validate_template(view: str, template: str) -> None:
    """Raise ConfigError unless ``template`` uses only the known placeholders."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"view {view!r} (redis): option 'key' {template!r}: {e}") from None
    used = set()
    for _, field, spec, conv in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conv:
            raise ConfigError(
                f"view {view!r} (redis): option 'key' {template!r}: unknown placeholder "
                f"{{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                f"(expected {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})"
            )
        used.add(field)
    if "pk" not in used:
        raise ConfigError(f"view {view!r} (redis): option 'key' {template!r}: must contain {{pk}}")


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class _Failure(Exception):
    """An error of ours inside apply (message already specific)."""


class RedisView:
    kind = "redis"

    def __init__(self, cfg: ViewConfig) -> None:
        o = cfg.options
        url = o.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"view {cfg.name!r} (redis): option 'url' (a redis:// URL) is required")
        self.name = cfg.name
        self._url = url.value if isinstance(url, Secret) else url
        self.template = str(o.get("key", "{table}:{pk}"))
        validate_template(cfg.name, self.template)
        self.mode = str(o.get("mode", "hash"))
        if self.mode not in ("hash", "invalidate"):
            raise ConfigError(
                f"view {cfg.name!r} (redis): option 'mode': "
                f'expected "hash" or "invalidate", got {self.mode!r}'
            )
        ttl = o.get("ttl", 0)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise ConfigError(f"view {cfg.name!r} (redis): option 'ttl': expected seconds >= 0, got {ttl!r}")
        self.ttl = ttl
        cols = o.get("columns")
        if cols is not None and (not isinstance(cols, list) or not all(isinstance(c, str) for c in cols)):
            raise ConfigError(f"view {cfg.name!r} (redis): option 'columns': expected a list of column names")
        self.columns: frozenset[str] | None = frozenset(cols) if cols is not None else None
        self.on_error = str(o.get("on_error", "stop"))
        if self.on_error not in ("stop", "skip"):
            raise ConfigError(
                f"view {cfg.name!r} (redis): option 'on_error': "
                f'expected "stop" or "skip", got {self.on_error!r}'
            )
        self.patterns = tuple(cfg.tables)
        self.skipped = 0
        """Rows not written because of on_error = "skip" (their key is deleted instead)."""
        self._pool: redis.ConnectionPool | None = None
        self._client: redis.Redis | None = None
        self._rels: dict[int, Relation] = {}
        self._txn: Any = None
        """The connection holding an open MULTI (between batches of one source transaction)."""
        self._txn_rels: dict[int, Relation] = {}
        self._queue: list[tuple[Any, ...]] = []
        self._scratch = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ names

    @property
    def position_key(self) -> str:
        return f"{PREFIX}position:{self.name}"

    @property
    def relations_key(self) -> str:
        return f"{PREFIX}relations:{self.name}"

    def keys_key(self, rel: Relation) -> str:
        return f"{PREFIX}keys:{self.name}:{rel.qualified}"

    def row_key(self, rel: Relation, key: Key) -> str:
        pk = key_text(tuple("" if v is None else v for v in key))
        return self.template.format(table=rel.qualified, schema=rel.schema, name=rel.name, pk=pk)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Checkpoint:
        with self._lock:
            if self._client is None:
                self._pool = redis.ConnectionPool.from_url(
                    self._url, socket_connect_timeout=10, socket_timeout=600, health_check_interval=30
                )
                self._client = redis.Redis(connection_pool=self._pool)
            try:
                self._load_relations()
                return self._stored_checkpoint()
            except Exception as e:
                raise self._error(e, "opening") from e

    def close(self) -> None:
        with self._lock:
            self._abort()
            if self._pool is not None:
                self._pool.disconnect()
            self._pool = None
            self._client = None

    def relations(self) -> dict[int, Relation]:
        return dict(self._rels)

    def read_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            if self._client is None:
                try:
                    self.open()
                except ViewError:
                    return None
            try:
                return self._stored_checkpoint()
            except Exception:
                return None

    def count_rows(self, qualified: str) -> int:
        with self._lock:
            c = self._require()
            rel = next((r for r in self._rels.values() if r.qualified == qualified), None)
            if rel is None:
                schema, _, name = qualified.partition(".")
                rel = Relation(0, schema, name, "d", (), ())
            if self.mode == "hash":
                return int(c.scard(self.keys_key(rel)))
            return sum(1 for _ in c.scan_iter(match=self._pattern(rel), count=1000))

    @property
    def client(self) -> redis.Redis:
        """The Redis client (for verification and tests)."""
        return self._require()

    # ------------------------------------------------------------------ apply

    def apply(self, batch: Batch) -> None:
        with self._lock:
            self._apply(batch)

    def _apply(self, batch: Batch) -> None:
        if self._client is None:
            self.open()
        where = "-"
        try:
            if self._txn is None:
                stored = self._stored_checkpoint()
                if stored.seq >= batch.checkpoint.seq:
                    log.debug("view %s: skipping batch up to seq %d", self.name, batch.checkpoint.seq)
                    _advance(batch)
                    return
                self._begin()
            rels = {**batch.relations, **self._rels, **self._txn_rels}
            for step in net_steps(batch.transactions, rels, self._selected(batch, rels)):
                if isinstance(step, SchemaStep):
                    where = step.new.qualified
                    self._schema(step.old, step.new)
                elif isinstance(step, TruncateStep):
                    for rel in step.relations:
                        where = rel.qualified
                        self._truncate(rel)
                elif isinstance(step, DeltaStep):
                    for td in step.tables:
                        where = td.relation.qualified
                        if td.relation.oid not in self._rels and td.relation.oid not in self._txn_rels:
                            self._remember(td.relation)
                        self._delta(td)
            where = "-"
            if batch.commit:
                self._send(
                    "HSET",
                    self.position_key,
                    "seq",
                    batch.checkpoint.seq,
                    "commit_lsn",
                    batch.checkpoint.commit_lsn,
                )
                self._commit()
        except Exception as e:
            self._abort()
            raise self._error(e, f"table {where}", batch) from e
        _advance(batch)

    # ------------------------------------------------------------------ transaction plumbing

    def _begin(self) -> None:
        assert self._pool is not None
        conn: Any = self._pool.get_connection()
        self._txn = conn
        self._txn_rels = {}
        self._queue = []
        self._scratch = 0
        conn.send_command("MULTI")
        conn.read_response()

    def _send(self, *args: Any) -> None:
        self._queue.append(args)
        if len(self._queue) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._queue:
            return
        conn = self._txn
        cmds, self._queue = self._queue, []
        conn.send_packed_command(conn.pack_commands(cmds))
        first: Exception | None = None
        for cmd in cmds:
            try:
                conn.read_response()
            except rex.ResponseError as e:
                # refused while queueing: EXEC will abort the whole transaction
                first = first or _Failure(f"Redis refused {cmd[0]}: {e}")
        if first is not None:
            raise first

    def _commit(self) -> None:
        self._flush()
        conn = self._txn
        conn.send_command("EXEC")
        result = conn.read_response()
        self._release(conn)
        self._rels.update(self._txn_rels)
        self._txn_rels = {}
        errors = [r for r in (result or []) if isinstance(r, Exception)]
        if errors:
            raise _Failure(f"{len(errors)} commands failed inside EXEC (first: {errors[0]})")

    def _release(self, conn: Any) -> None:
        self._txn = None
        assert self._pool is not None
        self._pool.release(conn)

    def _abort(self) -> None:
        """Drop an open MULTI: closing its connection discards what Redis queued."""
        conn, self._txn = self._txn, None
        self._queue = []
        self._txn_rels = {}
        if conn is not None:
            try:
                conn.disconnect()
            finally:
                if self._pool is not None:
                    self._pool.release(conn)

    # ------------------------------------------------------------------ steps

    def _remember(self, rel: Relation) -> None:
        self._txn_rels[rel.oid] = rel
        self._send("HSET", self.relations_key, str(rel.oid), codec.relation_to_json(rel))

    def _schema(self, old: Relation | None, new: Relation) -> None:
        cur = self._txn_rels.get(new.oid) or self._rels.get(new.oid) or old
        self._remember(new)
        if cur is None or self.mode != "hash":
            return
        if cur.key != new.key or cur.qualified != new.qualified:
            log.warning(
                "view %s: %s: primary key or name changed; keys already stored keep their old "
                "names until the rows change (resync the view to rename them)",
                self.name,
                new.qualified,
            )
        mapping = column_mapping(cur, new)
        renamed = [
            (cur.columns[i].name, c.name)
            for c, i in zip(new.columns, mapping, strict=True)
            if i is not None and cur.columns[i].name != c.name
        ]
        if renamed and cur.qualified == new.qualified:
            # rename the fields in every stored row of the table
            script = (
                "local ks = redis.call('SMEMBERS', KEYS[1])\n"
                "for _, k in ipairs(ks) do\n"
                "  for j = 1, #ARGV, 2 do\n"
                "    local v = redis.call('HGET', k, ARGV[j])\n"
                "    if v then redis.call('HSET', k, ARGV[j + 1], v); redis.call('HDEL', k, ARGV[j]) end\n"
                "  end\n"
                "end\n"
                "return #ks"
            )
            self._send("EVAL", script, 1, self.keys_key(new), *[n for pair in renamed for n in pair])
        kept = {i for i in mapping if i is not None}
        dropped = [c.name for i, c in enumerate(cur.columns) if i not in kept]
        if dropped and cur.qualified == new.qualified:
            # drop removed columns' fields from every stored row of the table
            script = (
                "local ks = redis.call('SMEMBERS', KEYS[1])\n"
                "for _, k in ipairs(ks) do redis.call('HDEL', k, unpack(ARGV)) end\n"
                "return #ks"
            )
            self._send("EVAL", script, 1, self.keys_key(new), *dropped)

    def _truncate(self, rel: Relation) -> None:
        if self.mode == "hash":
            self._send("EVAL", _TRUNCATE_SET, 1, self.keys_key(rel))
        else:
            self._send("EVAL", _TRUNCATE_SCAN, 0, self._pattern(rel))

    def _pattern(self, rel: Relation) -> str:
        parts = {
            "table": _glob_escape(rel.qualified),
            "schema": _glob_escape(rel.schema),
            "name": _glob_escape(rel.name),
            "pk": "*",
        }
        return self.template.format(**parts)

    def _delta(self, td: TableDelta) -> None:
        rel = td.relation
        kidx = rel.key_indexes()
        if not kidx:
            raise _Failure("table has no primary key or replica identity columns")
        full = td.upserts()
        partials = td.partials()
        deletes = td.deletes()

        def key_of(row: Row) -> Key:
            return tuple(row[i] for i in kidx)  # type: ignore[misc]

        if self.mode == "invalidate":
            keys = {self.row_key(rel, k) for k in deletes}
            keys.update(self.row_key(rel, key_of(r)) for r in full)
            for r, origin in partials:
                keys.add(self.row_key(rel, key_of(r)))
                keys.add(self.row_key(rel, origin))
            for k in sorted(keys):
                self._send("UNLINK", k)
            return

        kset = self.keys_key(rel)
        fields = self._fields(rel)
        # (1) stored hashes of moved partial rows' origins, to scratch keys
        moved: dict[int, str] = {}
        for i, (r, origin) in enumerate(partials):
            if key_of(r) != origin:
                self._scratch += 1
                tmp = f"{PREFIX}scratch:{self.name}:{self._scratch}"
                moved[i] = tmp
                self._send("COPY", self.row_key(rel, origin), tmp, "REPLACE")
        # (2) deletes
        for dk in deletes:
            rk = self.row_key(rel, dk)
            self._send("UNLINK", rk)
            self._send("SREM", kset, rk)
        # (3) full rows
        for r in full:
            rk = self.row_key(rel, key_of(r))
            mapping = self._mapping(rel, r, fields, rk)
            self._send("UNLINK", rk)
            if mapping is None:
                self._send("SREM", kset, rk)
                continue
            if mapping:
                self._send("HSET", rk, *mapping)
                if self.ttl:
                    self._send("EXPIRE", rk, self.ttl)
                self._send("SADD", kset, rk)
            else:
                self._send("SREM", kset, rk)  # no stored column is non-NULL: no hash
        # (4) partial rows over the stored hash
        for i, (r, _origin) in enumerate(partials):
            rk = self.row_key(rel, key_of(r))
            if i in moved:
                self._send("UNLINK", rk)
                self._send("COPY", moved[i], rk, "REPLACE")
                self._send("UNLINK", moved[i])
            mapping = self._mapping(rel, r, fields, rk)
            if mapping is None:
                self._send("UNLINK", rk)
                self._send("SREM", kset, rk)
                continue
            nulls = [rel.columns[j].name for j, _ in fields if r[j] is None]
            if nulls:
                self._send("HDEL", rk, *nulls)
            if mapping:
                self._send("HSET", rk, *mapping)
                if self.ttl:
                    self._send("EXPIRE", rk, self.ttl)
            self._send("SADD", kset, rk)

    def _fields(self, rel: Relation) -> list[tuple[int, Converter | None]]:
        return [
            (j, converter(c))
            for j, c in enumerate(rel.columns)
            if self.columns is None or c.name in self.columns
        ]

    def _mapping(
        self, rel: Relation, row: Row, fields: Sequence[tuple[int, Converter | None]], rk: str
    ) -> list[str] | None:
        """Field/value pairs of the row's sent, non-NULL columns (None: skipped row)."""
        out: list[str] = []
        for j, conv in fields:
            v = row[j]
            if v is None or v is UNCHANGED:
                continue
            assert isinstance(v, str)
            if conv is not None:
                v = conv(v)
            if len(v) * 4 > MAX_VALUE and len(v.encode()) > MAX_VALUE:
                msg = (
                    f"{rel.qualified} key {rk}: column {rel.columns[j].name} value of "
                    f"{len(v.encode())} bytes exceeds Redis's {MAX_VALUE} byte limit"
                )
                if self.on_error == "skip":
                    self.skipped += 1
                    log.error("view %s: %s; row skipped (key deleted)", self.name, msg)
                    return None
                raise _Failure(msg)
            out += (rel.columns[j].name, v)
        return out

    # ------------------------------------------------------------------ internals

    def _require(self) -> redis.Redis:
        if self._client is None:
            raise ViewError(f"view {self.name!r}: not open")
        return self._client

    def _stored_checkpoint(self) -> Checkpoint:
        got = self._require().hgetall(self.position_key)
        if not got:
            return Checkpoint()
        return Checkpoint(int(got[b"seq"]), int(got[b"commit_lsn"]))

    def _load_relations(self) -> None:
        self._rels = {
            int(oid): codec.relation_from_json(doc)
            for oid, doc in self._require().hgetall(self.relations_key).items()
        }

    def _wanted(self, rel: Relation) -> bool:
        return table_selected(self.patterns, rel.qualified)

    def _selected(self, batch: Batch, rels: dict[int, Relation]) -> set[int] | None:
        return selected_oids(self.patterns, batch, rels)

    def _secrets(self) -> list[str]:
        out = [self._url]
        try:
            from urllib.parse import urlsplit

            p = urlsplit(self._url)
            out += [p.password or "", p.username or ""]
        except ValueError:
            pass
        return [s for s in out if s and len(s) > 2]

    def _error(self, e: Exception, where: str, batch: Batch | None = None) -> ViewError:
        text = str(e)
        for s in self._secrets():
            text = text.replace(s, "***")
        if batch is not None:
            try:
                stored = str(self._stored_checkpoint().seq)
            except Exception:
                stored = "?"
            text += (
                f" (stored checkpoint seq {stored}, batch up to seq {batch.checkpoint.seq} "
                f"lsn {batch.checkpoint.commit_lsn})"
            )
        transient = isinstance(e, rex.ConnectionError | rex.TimeoutError | OSError | TransientViewError)
        if transient:
            return TransientViewError(
                f"view {self.name!r}: Redis unavailable ({type(e).__name__}) {where}: {text}"
            )
        if isinstance(e, ViewError):
            return e
        return ViewError(f"view {self.name!r}: {where}: {text}")


def _advance(batch: Batch) -> None:
    """Move ``batch.relations`` past the batch's schema changes (in place)."""
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, SchemaChange):
                batch.relations[it.relation.oid] = it.relation


__all__ = ["MAX_VALUE", "RedisView", "validate_template"]
