"""The Redis cache view: one hash per row, kept in sync with the source.

Layout (see ``docs/views/redis.md``):

* key ``{table}:{pk}`` by default (template option ``key``; placeholders ``{table}``
  = ``schema.table``, ``{schema}``, ``{name}``, ``{pk}`` = key columns' text joined by
  ``:``); field = column name, value = the column's ``::text`` (:mod:`.values`); NULL
  columns are absent fields;
* bookkeeping under ``_syncline:``: ``position:{view}`` (hash ``seq``, ``commit_lsn``, ``log_id``),
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
fail at run time only when a user replaced one of our keys by another type: the view then
puts the position back to before the batch and stops.

Speed: full rows (the common case) go in chunks of ``ROWS``: one ``UNLINK`` of the chunk's
keys, one ``HSET`` per row built by a function generated for the table's columns, one
``SADD``/``SREM`` on the key set. Commands are encoded here (:mod:`.resp`) and written once
per chunk; the ``+QUEUED`` replies are checked in bulk one chunk later.

Restarts: the position is ``WATCH``ed and read on the connection that sends ``MULTI``; a
position other than the one this view last wrote (Redis restarted empty or older) is a
transient error, so the worker reopens the view from what Redis holds (an empty Redis is
refilled).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis import exceptions as rex

from syncline.core import codec
from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import ConfigError, TransientViewError, ViewError
from syncline.core.events import UNCHANGED, Checkpoint, Relation, Row, column_mapping
from syncline.core.keytemplate import escape_part, fill, key_glob, pk_text, table_text, validate_template
from syncline.core.patterns import table_selected
from syncline.core.textcast import Converter, converter
from syncline.views.base import Batch, leave_out_keyless
from syncline.views.netting import (
    Key,
    TableDelta,
    key_function,
)
from syncline.views.redis.resp import Pipe, bulk, byte_len, command, multi_key
from syncline.views.skeleton import AppliedView

log = logging.getLogger(__name__)

PREFIX = "_syncline:"
MAX_VALUE = 512 * 1024 * 1024
"""Redis's limit for one string (``proto-max-bulk-len`` default)."""
CHUNK = 2000
"""Commands per write to Redis while queueing a batch (their replies are read one write later)."""
ROWS = 1000
"""Rows per chunk of the row path: one UNLINK, one SADD and one SREM for that many rows."""

_TRUNCATE_SET = """
local ks = redis.call('SMEMBERS', KEYS[1])
for i = 1, #ks, 500 do
  redis.call('UNLINK', unpack(ks, i, math.min(i + 499, #ks)))
end
redis.call('UNLINK', KEYS[1])
return #ks
"""

_RENAME = """
local ks = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(ks) do
  for j = 1, #ARGV, 2 do
    local v = redis.call('HGET', k, ARGV[j])
    if v then redis.call('HSET', k, ARGV[j + 1], v); redis.call('HDEL', k, ARGV[j]) end
  end
end
return #ks
"""

_MOVE = """
local ks = redis.call('SMEMBERS', KEYS[1])
local old_fixed, new_parts, n = tonumber(ARGV[1]), {}, tonumber(ARGV[2])
local pre = #ARGV[3]
for i = 4, #ARGV do new_parts[#new_parts + 1] = ARGV[i] end
for _, k in ipairs(ks) do
  local pk = string.sub(k, pre + 1, pre + (#k - old_fixed) / n)
  local nk = table.concat(new_parts, pk)
  if redis.call('EXISTS', k) == 1 then redis.call('RENAME', k, nk) end
  redis.call('SADD', KEYS[2], nk)
end
redis.call('UNLINK', KEYS[1])
return #ks
"""

_DROP = """
local ks = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(ks) do redis.call('HDEL', k, unpack(ARGV)) end
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


class _Failure(Exception):
    """An error of ours inside apply (message already specific)."""


class RedisView(AppliedView):
    kind = "redis"

    def __init__(self, cfg: ViewConfig) -> None:
        o = cfg.options
        url = o.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"view {cfg.name!r} (redis): option 'url' (a redis:// URL) is required")
        super().__init__(cfg.consumer)
        """``name`` names this applier's bookkeeping: a partition keeps its own position, relations
        and key sets (a truncate unlinks only the keys it wrote)."""
        self.view = cfg.name
        self.partitions = cfg.partitions
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
        self._conn: Any = None
        """The connection holding an open MULTI (between batches of one source transaction)."""
        self._pipe: Pipe | None = None
        """Its socket, written and read by the apply path (None: no MULTI open)."""
        self._txn_rels: dict[int, Relation] = {}
        self._scratch = 0
        self._prev = Checkpoint()
        """The position stored when the open MULTI began."""
        self._out: list[str] = []
        """Encoded commands not sent yet (``self._n`` commands)."""
        self._n = 0
        self._desc: list[str] = []
        """What each unanswered command is about (a key, mostly), from ``_desc_base`` on."""
        self._desc_base = 0
        self._watch: dict[int, str] = {}
        """Commands that can fail while EXEC runs, by index: what they are about."""
        self._spans: list[tuple[int, str]] = []
        """(index of the first command, table) for every part of the transaction."""
        self._max_value = MAX_VALUE
        self._known: Checkpoint | None = None
        """The position this view last read or wrote (None: not opened)."""
        self._kparts: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ names

    @property
    def position_key(self) -> str:
        return f"{PREFIX}position:{self.name}"

    @property
    def relations_key(self) -> str:
        return f"{PREFIX}relations:{self.name}"

    def keys_key(self, rel: Relation) -> str:
        return f"{PREFIX}keys:{self.name}:{table_text(rel.schema, rel.name)}"

    def row_key(self, rel: Relation, key: Key) -> str:
        return pk_text(key).join(self._key_parts(rel))

    def _key_parts(self, rel: Relation) -> list[str]:
        """The template for ``rel`` split around ``{pk}`` (key = pk.join(parts))."""
        parts = self._kparts.get(rel.qualified)
        if parts is None:
            text = fill(self.template, rel.schema, rel.name, "\x00")
            parts = self._kparts[rel.qualified] = text.split("\x00")
        return parts

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Checkpoint:
        with self._lock:
            if self._client is None:
                self._pool = redis.ConnectionPool.from_url(
                    self._url, socket_connect_timeout=10, socket_timeout=600, health_check_interval=30
                )
                self._client = redis.Redis(connection_pool=self._pool)
            try:
                self._check_partitions()
                self._load_relations()
                self._max_value = self._server_limit()
                self._known = self._stored_checkpoint()
                return self._known
            except Exception as e:
                raise self._describe(e, "opening") from e

    def _check_partitions(self) -> None:
        """The store remembers in how many partitions the view is applied: each partition
        keeps its own position, so another count cannot go on from them."""
        c = self._require()
        key = f"{PREFIX}partitions:{self.view}"
        got = c.get(key)
        if got is None and self.partitions == 1:
            return  # a view applied whole (every store before partitions existed)
        if got is None:
            if c.exists(f"{PREFIX}position:{self.view}"):
                got = b"1"
            else:
                c.set(key, self.partitions, nx=True)
                got = c.get(key)
        if got is not None and int(got) != self.partitions:
            raise ViewError(
                f"view {self.view} (redis) was applied in {int(got)} partition(s) and is now configured "
                f"with {self.partitions}: the positions stored for the old count do not fit the new one",
                action=f"set partitions = {int(got)} again, or empty the view's Redis database (the view is "
                "refilled from the log)",
            )

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

    # The skeleton is AppliedView.apply; one MULTI/EXEC per source transaction, begun on a
    # connection that WATCHes the position key.

    def _ensure_open(self) -> None:
        if self._client is None:
            self.open()

    def _applied(self) -> Checkpoint:
        stored = self._watch_position()
        if self._known is not None and stored != self._known:
            raise TransientViewError(
                f"the position stored in Redis is log record {stored.seq}, but this view "
                f"had applied up to {self._known.seq}: Redis lost data (restarted without "
                "persistence, or restored an older copy); starting again from the stored "
                "position (an empty Redis is refilled)"
            )
        self._prev = stored
        return stored

    def _skipped(self) -> None:
        self._unwatch()

    def _begin(self, batch: Batch) -> bool:
        self._multi(self._prev)
        return True

    def _state(self, batch: Batch) -> dict[int, Relation]:
        return {**batch.relations, **self._rels, **self._txn_rels}

    def _at(self, table: str) -> None:
        super()._at(table)
        if self._pipe is not None:
            self._mark(table)

    def _on_schema(self, old: Relation | None, new: Relation) -> None:
        self._schema(old, new)

    def _truncate_table(self, rel: Relation, dropped: bool) -> None:
        self._truncate(rel)

    def _on_delta(self, td: TableDelta) -> None:
        if td.relation.oid not in self._rels and td.relation.oid not in self._txn_rels:
            self._remember(td.relation)
        self._delta(td)

    def _commit(self, batch: Batch) -> None:
        cp = batch.checkpoint
        self._cmd(
            "position",
            *("HSET", self.position_key, "seq", cp.seq, "commit_lsn", cp.commit_lsn, "log_id", cp.log),
        )
        self._exec()
        self._known = cp

    def _continue(self) -> None:
        self._flush()

    def _error(self, e: Exception, batch: Batch) -> BaseException:
        where = "" if isinstance(e, _Failure) else f"table {self._where}"
        return self._describe(e, where, batch)

    # ------------------------------------------------------------------ transaction plumbing

    def _watch_position(self) -> Checkpoint:
        """Take a connection for the next MULTI, WATCH the position key and read it there:
        EXEC fails if anything else changes it meanwhile (and a Redis that restarts drops
        the connection)."""
        assert self._pool is not None
        conn: Any = self._pool.get_connection()
        self._conn = conn
        conn.send_command("WATCH", self.position_key)
        conn.read_response()
        conn.send_command("HGETALL", self.position_key)
        got = conn.read_response()
        if isinstance(got, list):
            got = dict(zip(got[::2], got[1::2], strict=True))
        if not got:
            return Checkpoint()
        return Checkpoint.stored(got[b"seq"], got[b"commit_lsn"], got.get(b"log_id"))

    def _unwatch(self) -> None:
        conn, self._conn = self._conn, None
        conn.send_command("UNWATCH")
        conn.read_response()
        assert self._pool is not None
        self._pool.release(conn)

    def _multi(self, stored: Checkpoint) -> None:
        conn = self._conn
        self._txn_rels = {}
        self._scratch = 0
        self._prev = stored
        self._out = []
        self._n = 0
        self._desc = []
        self._desc_base = 0
        self._watch = {}
        self._spans = []
        conn.send_command("MULTI")
        conn.read_response()
        # the apply path writes RESP itself on the connection's socket (see .resp)
        self._pipe = Pipe(conn._sock)

    def _mark(self, table: str) -> None:
        """Commands queued from here on belong to ``table`` (for error messages)."""
        assert self._pipe is not None
        self._spans.append((self._pipe.sent + self._n, table))

    def _table_at(self, index: int) -> str:
        i = bisect.bisect_right(self._spans, (index, "\U0010ffff")) - 1
        return self._spans[i][1] if i >= 0 else "-"

    def _cmd(self, what: str, *args: str | int, watch: bool = True) -> None:
        """Queue one command; ``what`` names it in errors (a key, usually). ``watch``: the
        command can fail while EXEC runs (remember what it was until then)."""
        assert self._pipe is not None
        if watch:
            self._watch[self._pipe.sent + self._n] = what
        self._out.append(command(*args))
        self._desc.append(what)
        self._n += 1
        if self._n >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        """Send the queued commands; check the replies of those sent before (one chunk of
        lag, so Redis queues a chunk while the next one is built)."""
        pipe = self._pipe
        if pipe is None or not self._out:
            return
        n = self._n
        text = "".join(self._out)
        self._out = []
        self._n = 0
        pipe.send(text, n)
        self._check(pipe.check_queued(keep=n))

    def _check(self, refused: tuple[int, str] | None) -> None:
        assert self._pipe is not None
        if refused is not None:
            i, text = refused
            j = i - self._desc_base
            what = self._desc[j] if 0 <= j < len(self._desc) else "a command"
            if what.startswith("$"):  # a key as a bulk string
                what = what.split("\r\n", 2)[1]
            raise _Failure(f"table {self._table_at(i)}: Redis refused the command for {what}: {text}")
        drop = self._pipe.read - self._desc_base
        if drop > 0:
            del self._desc[:drop]
            self._desc_base = self._pipe.read

    def _exec(self) -> None:
        pipe = self._pipe
        assert pipe is not None
        self._flush()
        self._check(pipe.check_queued(0))
        result = pipe.exec()
        conn = self._conn
        self._pipe = None
        self._conn = None
        assert self._pool is not None
        self._pool.release(conn)
        self._rels.update(self._txn_rels)
        self._txn_rels = {}
        if isinstance(result, Exception):
            raise _Failure(f"Redis refused the transaction: {result}")
        if result is None:
            raise TransientViewError(
                "the position key changed while the batch was queued (another writer?); "
                "nothing of the batch was applied"
            )
        errors = [i for i, r in enumerate(result or ()) if isinstance(r, Exception)]
        if errors:
            first = errors[0]
            what = self._watch.get(first, "a command")
            # Redis applied every other command (it has no rollback), including the position:
            # put the position back, so that the view stops before this batch.
            prev = self._prev
            c = self._require()
            if prev.seq:
                c.hset(
                    self.position_key,
                    mapping={"seq": prev.seq, "commit_lsn": prev.commit_lsn, "log_id": prev.log},
                )
            else:
                c.delete(self.position_key)
            raise _Failure(
                f"table {self._table_at(first)}: {len(errors)} command(s) failed while Redis "
                f"ran the transaction, first for {what}: {result[first]} (Redis applied the "
                "others; the stored position was left before this batch: fix the key and "
                "restart, the batch is applied again)"
            )

    def _abort(self) -> None:
        """Drop an open MULTI: closing its connection discards what Redis queued."""
        conn, self._conn, self._pipe = self._conn, None, None
        self._out = []
        self._n = 0
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
        self._cmd(
            f"relations {self.relations_key}",
            "HSET",
            self.relations_key,
            str(rel.oid),
            codec.relation_to_json(rel).decode(),
        )

    def _schema(self, old: Relation | None, new: Relation) -> None:
        cur = self._txn_rels.get(new.oid) or self._rels.get(new.oid) or old
        self._remember(new)
        if cur is None:
            return
        if cur.qualified != new.qualified:
            if self.mode == "hash":
                self._move(cur, new)  # first: the field changes below apply to the moved rows
            else:
                self._truncate(cur)  # the renamed table's cached keys under the old name
        if self.mode != "hash":
            return
        if cur.key != new.key:
            log.info(
                "view %s: %s: its key changed; the capture copies the table again, and the keys "
                "stored under the old key go first",
                self.name,
                new.qualified,
            )
        mapping = column_mapping(cur, new)
        renamed = [
            (cur.columns[i].name, c.name)
            for c, i in zip(new.columns, mapping, strict=True)
            if i is not None and cur.columns[i].name != c.name
        ]
        kset = self.keys_key(new)
        if renamed:
            # rename the fields in every stored row of the table
            self._cmd(
                f"renaming fields of the keys in {kset}",
                "EVAL",
                _RENAME,
                1,
                kset,
                *[n for pair in renamed for n in pair],
            )
        kept = {i for i in mapping if i is not None}
        dropped = [c.name for i, c in enumerate(cur.columns) if i not in kept]
        if dropped:
            # drop removed columns' fields from every stored row of the table
            self._cmd(f"dropping fields of the keys in {kset}", "EVAL", _DROP, 1, kset, *dropped)

    def _move(self, cur: Relation, new: Relation) -> None:
        """A renamed table (or schema): its stored rows move to their keys under the new
        name, with their key set (a new table under the old name starts without them)."""
        olds, news = self._key_parts(cur), self._key_parts(new)
        if len(olds) == 1:  # a template without {pk} (refused at load; kept safe)
            return
        self._cmd(
            f"moving the keys in {self.keys_key(cur)} to {self.keys_key(new)}",
            "EVAL",
            _MOVE,
            2,
            self.keys_key(cur),
            self.keys_key(new),
            sum(byte_len(t) for t in olds),
            len(olds) - 1,
            olds[0],
            *news,
        )

    def _truncate(self, rel: Relation) -> None:
        if self.mode == "hash":
            self._cmd(f"truncate of {self.keys_key(rel)}", "EVAL", _TRUNCATE_SET, 1, self.keys_key(rel))
        else:
            self._cmd(f"truncate of {self._pattern(rel)}", "EVAL", _TRUNCATE_SCAN, 0, self._pattern(rel))

    def _pattern(self, rel: Relation) -> str:
        return key_glob(self.template, rel.schema, rel.name)

    def _delta(self, td: TableDelta) -> None:
        rel = td.relation
        kidx = rel.key_indexes()
        if not kidx:
            leave_out_keyless(self.name, self.kind, rel)
            return
        key_of = key_function(kidx)
        partials = td.partials()
        deletes = td.deletes()

        if self.mode == "invalidate":
            keys = {self.row_key(rel, k) for k in deletes}
            keys.update(self.row_key(rel, key_of(r)) for r in td.upserts())
            for r, origin in partials:
                keys.add(self.row_key(rel, key_of(r)))
                keys.add(self.row_key(rel, origin))
            ordered = sorted(keys)
            for i in range(0, len(ordered), ROWS):
                part = ordered[i : i + ROWS]
                self._emit(
                    [multi_key("UNLINK", [bulk(k) for k in part])], [f"{len(part)} keys from {part[0]}"]
                )
            return

        kset = self.keys_key(rel)
        # (1) stored hashes of moved partial rows' origins, to scratch keys
        moved: dict[int, str] = {}
        for i, (r, origin) in enumerate(partials):
            if key_of(r) != origin:
                self._scratch += 1
                tmp = f"{PREFIX}scratch:{self.name}:{self._scratch}"
                moved[i] = tmp
                ok = self.row_key(rel, origin)
                self._cmd(ok, "COPY", ok, tmp, "REPLACE", watch=False)
        # (2) deletes and (3) full rows, in chunks: UNLINK of the chunk's keys, HSET (and
        # EXPIRE) per row, SADD/SREM of the chunk's keys to the table's key set
        self._rows(rel, kset, deletes, td.upserts())
        # (4) partial rows over the stored hash
        fields = self._fields(rel)
        for i, (r, _origin) in enumerate(partials):
            rk = self.row_key(rel, key_of(r))
            if i in moved:
                self._cmd(rk, "UNLINK", rk, watch=False)
                self._cmd(rk, "COPY", moved[i], rk, "REPLACE", watch=False)
                self._cmd(rk, "UNLINK", moved[i], watch=False)
            mapping = self._mapping(rel, r, fields, rk)
            if mapping is None:
                self._cmd(rk, "UNLINK", rk, watch=False)
                self._cmd(rk, "SREM", kset, rk)
                continue
            nulls = [rel.columns[j].name for j, _h, _c in fields if r[j] is None]
            if nulls:
                self._cmd(rk, "HDEL", rk, *nulls)
            if mapping:
                self._cmd(rk, "HSET", rk, *mapping)
                if self.ttl:
                    self._cmd(rk, "EXPIRE", rk, self.ttl, watch=False)
            self._cmd(rk, "SADD", kset, rk)

    def _rows(self, rel: Relation, kset: str, deletes: list[Key], full: list[Row]) -> None:
        """Deleted keys and full rows: per chunk of ROWS rows one ``UNLINK`` of every key
        (so a row's hash is exactly its new row, and ``HSET`` cannot meet another type),
        ``HSET`` per row, one ``SADD`` and one ``SREM`` on the key set."""
        if not deletes and not full:
            return
        kparts = self._key_parts(rel)
        pk_of = _pk_function(rel.key_indexes())
        fields = self._fields(rel)
        limit = min(self._max_value, MAX_VALUE)
        kset_b = bulk(kset)
        expire = f"${len(str(self.ttl))}\r\n{self.ttl}\r\n" if self.ttl else ""
        up: list[str] = []
        gone: list[str] = []
        body: list[str] = []
        what: list[str] = []
        for k in deletes:
            gone.append(bulk(pk_text(k).join(kparts)))
            if len(gone) >= ROWS:
                self._chunk(kset, kset_b, up, gone, body, what)
                gone = []
        rows: list[Any] = full
        fast = _row_encoder(rel, fields, kparts, limit)
        for r in rows:
            got = fast(r)
            if got is not None:  # the common case, in one generated function
                kb, text = got
                body.append(text)
                what.append(kb)
                if expire:
                    body.append(f"*3\r\n$6\r\nEXPIRE\r\n{kb}{expire}")
                    what.append(kb)
                up.append(kb)
                if len(up) + len(gone) >= ROWS:
                    self._chunk(kset, kset_b, up, gone, body, what)
                    up, gone, body, what = [], [], [], []
                continue
            rk = pk_of(r).join(kparts)
            kb = f"${len(rk) if rk.isascii() else len(rk.encode())}\r\n{rk}\r\n"
            parts: list[str] = []
            for j, hdr, conv in fields:
                v = r[j]
                if v is None:
                    continue
                if conv is not None:
                    v = conv(v)
                n = len(v) if v.isascii() else len(v.encode())
                if n > limit:
                    self._too_large(rel, rk, rel.columns[j].name, n, limit)
                    parts = []
                    break
                parts.append(f"{hdr}${n}\r\n{v}\r\n")
            if parts:
                body.append(f"*{2 * len(parts) + 2}\r\n$4\r\nHSET\r\n{kb}")
                body += parts
                what.append(rk)
                if expire:
                    body.append(f"*3\r\n$6\r\nEXPIRE\r\n{kb}{expire}")
                    what.append(rk)
                up.append(kb)
            else:  # no stored column is non-NULL, or skipped: no hash
                gone.append(kb)
            if len(up) + len(gone) >= ROWS:
                self._chunk(kset, kset_b, up, gone, body, what)
                up, gone, body, what = [], [], [], []
        self._chunk(kset, kset_b, up, gone, body, what)

    def _chunk(
        self, kset: str, kset_b: str, up: list[str], gone: list[str], body: list[str], what: list[str]
    ) -> None:
        if not up and not gone:
            return
        assert self._pipe is not None
        keys = gone + up
        texts, names = [], []
        if keys:
            first = keys[0].split("\r\n", 2)[1]
            texts = [f"*{len(keys) + 1}\r\n$6\r\nUNLINK\r\n" + "".join(keys)]
            names = [f"{len(keys)} keys from {first}"]
        texts += body
        names += what
        if up:
            self._watch[self._pipe.sent + self._n + len(names)] = f"key set {kset}"
            texts.append(f"*{len(up) + 2}\r\n$4\r\nSADD\r\n{kset_b}" + "".join(up))
            names.append(f"key set {kset}")
        if gone:
            self._watch[self._pipe.sent + self._n + len(names)] = f"key set {kset}"
            texts.append(f"*{len(gone) + 2}\r\n$4\r\nSREM\r\n{kset_b}" + "".join(gone))
            names.append(f"key set {kset}")
        self._emit(texts, names)

    def _emit(self, texts: list[str], names: list[str]) -> None:
        """Queue already encoded commands (``body`` may hold a command in several pieces:
        ``names`` has one entry per command)."""
        self._out += texts
        self._desc += names
        self._n += len(names)
        if self._n >= CHUNK:
            self._flush()

    def _too_large(self, rel: Relation, rk: str, column: str, size: int, limit: int) -> None:
        msg = (
            f"table {rel.qualified} key {rk}: column {column} value of {size} bytes exceeds "
            f"Redis's limit of {limit} bytes (proto-max-bulk-len)"
        )
        if self.on_error == "skip":
            self.skipped += 1
            log.error(
                "view %s: %s; row skipped (key deleted; %d skipped so far)", self.name, msg, self.skipped
            )
            return
        raise _Failure(msg)

    def _fields(self, rel: Relation) -> list[tuple[int, str, Converter | None]]:
        """(column index, the column name as a RESP bulk string, text conversion)."""
        return [
            (j, bulk(c.name), converter(c))
            for j, c in enumerate(rel.columns)
            if self.columns is None or c.name in self.columns
        ]

    def _mapping(
        self, rel: Relation, row: Row, fields: Sequence[tuple[int, str, Converter | None]], rk: str
    ) -> list[str] | None:
        """Field/value pairs of the row's sent, non-NULL columns (None: skipped row)."""
        out: list[str] = []
        limit = min(self._max_value, MAX_VALUE)
        for j, _hdr, conv in fields:
            v = row[j]
            if v is None or v is UNCHANGED:
                continue
            assert isinstance(v, str)
            if conv is not None:
                v = conv(v)
            n = byte_len(v)
            if n > limit:
                self._too_large(rel, rk, rel.columns[j].name, n, limit)
                return None
            out += (rel.columns[j].name, v)
        return out

    # ------------------------------------------------------------------ internals

    def _require(self) -> redis.Redis:
        if self._client is None:
            raise ViewError(f"view {self.name!r}: not open")
        return self._client

    def _server_limit(self) -> int:
        """The largest value Redis accepts (``proto-max-bulk-len``; 512 MB if not readable)."""
        try:
            got: dict[Any, Any] = self._require().config_get("proto-max-bulk-len")
            value = got.get("proto-max-bulk-len") or got.get(b"proto-max-bulk-len")
            return int(value) if value else MAX_VALUE
        except (rex.ResponseError, ValueError):  # CONFIG disabled (managed Redis): the default
            return MAX_VALUE

    def _stored_checkpoint(self) -> Checkpoint:
        got = self._require().hgetall(self.position_key)
        if not got:
            return Checkpoint()
        return Checkpoint.stored(got[b"seq"], got[b"commit_lsn"], got.get(b"log_id"))

    def _load_relations(self) -> None:
        self._rels = {
            int(oid): codec.relation_from_json(doc)
            for oid, doc in self._require().hgetall(self.relations_key).items()
        }

    def _wanted(self, rel: Relation) -> bool:
        return table_selected(self.patterns, rel.qualified)

    def _secrets(self) -> list[str]:
        out = [self._url]
        try:
            from urllib.parse import urlsplit

            p = urlsplit(self._url)
            out += [p.password or "", p.username or ""]
        except ValueError:
            pass
        return [s for s in out if s and len(s) > 2]

    def _describe(self, e: Exception, where: str, batch: Batch | None = None) -> ViewError:
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
        at = f" {where}" if where else ""
        if isinstance(e, TransientViewError):
            return TransientViewError(f"view {self.name!r} (redis){at}: {text}")
        if isinstance(e, rex.ConnectionError | rex.TimeoutError | OSError):
            return TransientViewError(
                f"view {self.name!r}: Redis unavailable ({type(e).__name__}){at}: {text}"
            )
        if isinstance(e, ViewError):
            return e
        return ViewError(f"view {self.name!r} (redis){at}: {text}")


RowEncoder = Callable[[Any], "tuple[str, str] | None"]


def _row_encoder(
    rel: Relation, fields: Sequence[tuple[int, str, Converter | None]], kparts: list[str], limit: int
) -> RowEncoder:
    """A function, generated for the table's columns, that encodes a full row as
    (its key as a bulk string, its ``HSET`` command) with no loop over the columns; None
    for the rows the general path handles (a NULL, non-ASCII text, a value above
    ``limit``, a template with more than one ``{pk}``)."""
    if len(kparts) != 2 or not fields:
        return lambda row: None
    ns: dict[str, Any] = {"PRE": kparts[0], "POST": kparts[1], "LIMIT": limit, "E": escape_part}
    kidx = rel.key_indexes()
    used = sorted({j for j, _h, _c in fields} | set(kidx))
    lines = ["def enc(r):"]
    lines += [f"    v{j} = r[{j}]" for j in used]
    lines.append("    if " + " or ".join(f"v{j} is None" for j in used) + ":")
    lines.append("        return None")
    for j, _hdr, conv in fields:
        if conv is not None:
            ns[f"C{j}"] = conv
            lines.append(f"    v{j} = C{j}(v{j})")
    pk = f"v{kidx[0]}" if len(kidx) == 1 else "':'.join((" + "".join(f"E(v{j}), " for j in kidx) + "))"
    lines.append(f"    rk = PRE + {pk} + POST")
    checks = " and ".join(["rk.isascii()"] + [f"v{j}.isascii()" for j, _h, _c in fields])
    lines.append(f"    if not ({checks}):")
    lines.append("        return None")
    lines.append("    if " + " or ".join(f"len(v{j}) > LIMIT" for j, _h, _c in fields) + ":")
    lines.append("        return None")
    lines.append('    kb = f"${len(rk)}\\r\\n{rk}\\r\\n"')
    text = f"*{2 * len(fields) + 2}\\r\\n$4\\r\\nHSET\\r\\n{{kb}}"
    for j, hdr, _conv in fields:
        ns[f"H{j}"] = hdr
        text += f"{{H{j}}}${{len(v{j})}}\\r\\n{{v{j}}}\\r\\n"
    lines.append(f'    return kb, f"{text}"')
    exec("\n".join(lines), ns)  # our own code: names and constants only
    fn: RowEncoder = ns["enc"]
    return fn


def _pk_function(kidx: tuple[int, ...]) -> Callable[[Any], str]:
    """Row -> ``{pk}`` (:func:`~syncline.core.keytemplate.pk_text`; NULL as empty)."""
    if len(kidx) == 1:
        i = kidx[0]
        return lambda row: row[i] or ""
    return lambda row: ":".join([escape_part(row[i] or "") for i in kidx])


__all__ = ["MAX_VALUE", "RedisView", "validate_template"]
