"""The capture: pre-flight checks, slot and snapshot, then the pgoutput stream into the log.

Rules (see ARCHITECTURE.md):
- the slot's flush position is confirmed only up to what :meth:`LogAppender.sync`
  made durable; when nothing is in flight, a keepalive's WAL end is confirmed too (after it
  is durably recorded), so an idle publication does not pin WAL;
- a transaction whose commit LSN is not above the log's newest is a replay and skipped;
- streamed (in-progress) transactions are buffered per xid, sub-transaction aborts honoured,
  and appended at Stream Commit: the log is in commit order;
- a slot that existed and is gone or invalidated stops the capture (fail closed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from syncline.core import failpoints
from syncline.core.config_models import SourceConfig, dsn_passwords
from syncline.core.errors import SourceError, TransientSourceError, redact
from syncline.core.events import Relation
from syncline.core.position import NO_POSITION
from syncline.core.timing import Window
from syncline.log.base import LogAppender
from syncline.sources.postgres import catalog as cat
from syncline.sources.postgres.columns import ExcludedColumns
from syncline.sources.postgres.follow import TableFollower, queued_copies, usable
from syncline.sources.postgres.generated import GeneratedColumns
from syncline.sources.postgres.lsn import format_lsn
from syncline.sources.postgres.machine import (
    Begin,
    Change,
    Commit,
    Keepalive,
    Message,
    RelationSeen,
    StreamAborted,
    StreamCommitted,
    StreamedChange,
    StreamMachine,
)
from syncline.sources.postgres.pgoutput import (
    RelationMessage,
    decode_relation,
    encode_relation,
    remap_change,
)
from syncline.sources.postgres.replication import ReplicationConnection
from syncline.sources.postgres.snapshot import take_snapshot

log = logging.getLogger("syncline.capture")

FOLLOW_VERSION = 140000
"""pgoutput sends logical decoding messages (the watermarks) from PostgreSQL 14 on."""
SYNC_INTERVAL = 0.05
"""Longest time received transactions wait for their durable commit while the stream runs."""
SYNC_GAP = 0.01
"""Shortest time between two durable commits (group commit): when transactions arrive one
by one, the next commit waits up to this long for more. A single transaction after a quiet
time is committed at once; under load it bounds the commits to ~100/s, not one per
source transaction."""
TIMING_INTERVAL = 5.0
"""Seconds between two publications of the capture's stage time (source commit -> log append)."""
SYNC_BYTES = 8 << 20
STATUS_INTERVAL = 1.0
REPAIR_INTERVAL = 0.5
"""How often the capture looks for repairs requested by ``syncline verify --repair``."""


@dataclass
class CaptureStats:
    events: int = 0
    transactions: int = 0
    confirmed_lsn: int = 0
    started: float = field(default_factory=time.monotonic)


class Capture:
    def __init__(
        self,
        cfg: SourceConfig,
        writer: LogAppender,
        on_tables: Callable[[list[str], dict[str, list[str]], list[str]], None] | None = None,
    ) -> None:
        """``on_tables(every table, captured tables' columns, captured tables without a
        key)`` is called once the tables are discovered: it warns about names that match
        nothing and may refuse the start (raise)."""
        self.cfg = cfg
        self.writer = writer
        self.on_tables = on_tables
        self.stats = CaptureStats()
        self.dsn = cfg.dsn.value

    # -- start-up -------------------------------------------------------------------------

    def prepare(self) -> tuple[ReplicationConnection, int]:
        """Checks, publication, slot, first snapshot. Returns the connection and version."""
        conn = cat.connect(self.dsn)
        try:
            info = cat.server_info(conn)
            if not self.writer.meta("source_reached"):
                self.writer.set_meta_now(source_reached=1)
            cat.check_server(info, self.cfg.allow_superuser)
            if info.superuser and self.cfg.allow_superuser is None:
                log.warning(
                    "role %r is a superuser; syncline needs only REPLICATION and SELECT on the tables"
                    " (README, Security). Set source.allow_superuser = false to refuse a superuser,"
                    " true to accept it without this warning",
                    info.user,
                )
            if self.cfg.failover and info.version < 170000:
                raise SourceError(
                    "source.failover = true needs PostgreSQL 17 or newer (failover slots); "
                    f"the source runs {info.version // 10000}"
                )
            tables = cat.discover_tables(conn, self.cfg.tables)
            streaming = self.writer.meta("state") == "streaming"
            if self.on_tables is not None:
                every = [t.qualified for t in cat.discover_tables(conn, ())]
                # refused at the first start only, for the tables there at its first attempt:
                # one that appears later (also while a first start was interrupted) is left
                # out of the views that need a key, and must not stop every later start
                first = self.writer.meta("first_tables")
                if not first and not streaming:
                    # a first start whose earlier runs died before they got here (killed
                    # while starting) cannot tell which tables were there at the start
                    there_first = (
                        sorted(t.qualified for t in tables) if self.writer.start_count() <= 1 else []
                    )
                    first = json.dumps(there_first)
                    self.writer.set_meta_now(first_tables=first)
                there = set(json.loads(first)) if first and not streaming else set()
                keyless = [
                    t.qualified
                    for t in tables
                    if t.replident == "f" and not t.has_pk and t.qualified in there
                ]
                self.on_tables(every, cat.table_columns(conn, tables), keyless)
            if not tables and info.version < FOLLOW_VERSION:
                raise SourceError(
                    f"no table of database {info.database!r} matches source.tables {list(self.cfg.tables)}"
                    " (PostgreSQL 13 cannot follow tables created later: create them first)"
                )
            if not streaming:
                # a table named exactly must be capturable; one a glob matches is left out
                # with a warning (followed once it has a key)
                named = [t for t in tables if t.qualified in self.cfg.tables]
                cat.check_tables(named + [t for t in tables if not t.can_select])
                for t in tables:
                    if not usable(t):
                        log.warning(
                            "table %s is not followed: it has no primary key. Add one, or ALTER TABLE "
                            "%s REPLICA IDENTITY FULL (it is then followed and copied)",
                            t.qualified,
                            t.qualified,
                        )
                tables = [t for t in tables if usable(t)]
                cat.ensure_publication(conn, self.cfg.publication, tables, info.version)
            elif info.version < FOLLOW_VERSION:
                added = cat.ensure_publication(conn, self.cfg.publication, tables, info.version)
                if added:
                    log.warning(
                        "tables added to publication %s: %s. Their changes are captured from now on; "
                        "rows they already hold are not copied (PostgreSQL 14 or newer copies them)",
                        self.cfg.publication,
                        ", ".join(added),
                    )
            elif cat.publication_tables(conn, self.cfg.publication) is None:
                # dropped behind our back: recreated empty, the follower adds and copies tables
                cat.ensure_publication(conn, self.cfg.publication, [], info.version)
            repl = ReplicationConnection(self.dsn)
            try:
                sysid, _tl, _pos, dbname = repl.identify_system()
                self._check_identity(sysid, dbname)
                slot = cat.slot_info(conn, self.cfg.slot)
                state = self.writer.meta("state")
                if state == "streaming":
                    self._check_slot(slot)
                    if self.cfg.failover:
                        repl.set_failover(self.cfg.slot)
                else:
                    self._first_snapshot(repl, slot, tables, sysid, dbname, info.version)
                self._check_not_behind(cat.slot_info(conn, self.cfg.slot))
            except BaseException:
                repl.close()
                raise
            return repl, info.version
        finally:
            conn.close()

    @staticmethod
    def _relation(
        payload: bytes,
        rcat: cat.RelationCatalog,
        gen: GeneratedColumns,
        leaves: dict[int, tuple[int, tuple[int, ...]]],
        excluded: ExcludedColumns,
    ) -> tuple[bytes, Relation]:
        """A Relation message as the log keeps it (a leaf partition's as its root's, with
        stored generated columns, without excluded columns), and its Relation; notes
        leaf-to-root mappings."""
        plain = payload
        rmsg = decode_relation(plain)
        root = rcat.partition_root(rmsg.oid)
        if root is not None:
            # A leaf partition although the publication publishes via the root: record the
            # root's shape, map the leaf's changes onto it.
            rootmsg = rcat.relation_message(root)
            names = [c[1] for c in rmsg.columns]
            if not {c[1] for c in rootmsg.columns} <= set(names):
                # the catalogue moved on since this message (columns added or dropped
                # later): the leaf's own columns, under the root
                rootmsg = RelationMessage(root.oid, root.schema, root.name, rmsg.replident, rmsg.columns)
            leaves[rmsg.oid] = (root.oid, tuple(names.index(c[1]) for c in rootmsg.columns))
            rmsg = rootmsg
            plain = encode_relation(rootmsg)
        else:
            leaves.pop(rmsg.oid, None)
        full = excluded.relation(gen.relation(rmsg))
        if full is not rmsg:
            rmsg, plain = full, encode_relation(full)
        return plain, rcat.relation(rmsg)

    def _check_identity(self, sysid: str, dbname: str) -> None:
        known = self.writer.meta("system_id")
        kdb = self.writer.meta("database")
        if known and (known != sysid or kdb != dbname):
            raise SourceError(
                f"the log at {self.writer.where} belongs to database {kdb!r} of system {known}, "
                f"but the source is {dbname!r} of system {sysid}: use another [log] path"
            )

    def _check_slot(self, slot: cat.SlotInfo | None) -> None:
        name = self.cfg.slot
        if slot is None:
            raise SourceError(
                f"replication slot {name!r} is missing, but this log has streamed from it: "
                "changes since may be lost. syncline will not re-create it silently: run "
                "`syncline resync` (a new slot, every table copied again online), or start over "
                f"(delete the log directory {self.writer.where} and the views' data)"
            )
        if slot.wal_status == "lost":
            raise SourceError(
                f"replication slot {name!r} was invalidated by the server (wal_status = lost): "
                "the WAL it needed is gone. Run `syncline resync` (a new slot, every table copied "
                f"again online), or start over (delete {self.writer.where} and the views' data)"
            )
        if slot.plugin != "pgoutput":
            raise SourceError(f"replication slot {name!r} uses plugin {slot.plugin!r}, not pgoutput")
        if slot.active_pid is not None:
            raise TransientSourceError(
                f"replication slot {name!r} is in use by another process (pid {slot.active_pid})"
            )

    def _check_not_behind(self, slot: cat.SlotInfo | None) -> None:
        if slot is None:
            return
        ours = max(self.writer.durable_end_lsn(), int(self.writer.meta("received_lsn", "0")))
        consistent = int(self.writer.meta("consistent_lsn", "0"))
        if slot.confirmed_flush > max(ours, consistent):
            raise SourceError(
                f"replication slot {self.cfg.slot!r} is confirmed up to "
                f"{format_lsn(slot.confirmed_flush)} but the log at {self.writer.where} only holds "
                f"changes up to {format_lsn(max(ours, consistent))}: the log lost data "
                "(restored from an old copy?). Start over with a new log and views"
            )

    def _first_snapshot(
        self,
        repl: ReplicationConnection,
        slot: cat.SlotInfo | None,
        tables: list[cat.TableInfo],
        sysid: str,
        dbname: str,
        version: int,
    ) -> None:
        """Create the slot, then copy every table. From PostgreSQL 14 on the copies are
        watermark chunks run while the stream runs (a first start killed at 90 % resumes at
        90 %); PostgreSQL 13 has no logical messages in pgoutput: one copy in the slot's
        exported snapshot, started over after a crash."""
        name = self.cfg.slot
        ours = self.writer.meta("slot") == name and self.writer.meta("state") == "snapshotting"
        if slot is not None:
            if not ours:
                raise SourceError(
                    f"replication slot {name!r} already exists but this log never used it: "
                    f"drop it (SELECT pg_drop_replication_slot('{name}')) or set source.slot "
                    "to another name"
                )
            if slot.active_pid is not None:
                raise TransientSourceError(
                    f"replication slot {name!r} is in use by another process (pid {slot.active_pid})"
                )
            log.info("dropping slot %s left by an unfinished snapshot", name)
            repl.drop_slot(name)
        kept = {k: self.writer.meta(k) for k in ("source_reached", "first_tables")}
        self.writer.reset()
        self.writer.set_meta_now(
            **{k: v for k, v in kept.items() if v},
            state="snapshotting",
            slot=name,
            system_id=sysid,
            database=dbname,
            capture_state="snapshotting",
            capture_error="",
        )
        created = repl.create_slot(name, failover=self.cfg.failover)
        log.info(
            "created slot %s at %s; copying %d tables",
            name,
            format_lsn(created.consistent_point),
            len(tables),
        )
        if version >= FOLLOW_VERSION:
            # one durable step: from here a restart resumes the copies, never drops the slot
            self.writer.set_meta_now(
                state="streaming",
                consistent_lsn=created.consistent_point,
                **queued_copies(tables, reset=False, first=True),
            )
            return
        take_snapshot(
            self.dsn,
            created.snapshot_name,
            created.consistent_point,
            tables,
            self.writer,
            exclude=self.cfg.exclude_columns,
        )
        self.writer.set_meta_now(state="streaming", consistent_lsn=created.consistent_point)

    # -- streaming --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Prepare, then stream into the log until ``stop``. A lost connection is a
        :class:`TransientSourceError` (retried by the caller)."""
        try:
            repl, version = self.prepare()
            try:
                self._stream(repl, version, stop)
            finally:
                repl.close()
        except psycopg.OperationalError as e:
            text = str(e).strip()
            first = redact(text.splitlines()[0], [self.dsn, *dsn_passwords(self.dsn)]) if text else ""
            raise TransientSourceError(f"source connection lost ({first or type(e).__name__})") from e

    def _stream(self, repl: ReplicationConnection, version: int, stop: threading.Event) -> None:
        proto = 2 if (version >= 140000 and self.cfg.streaming) else 1
        options = {"proto_version": str(proto), "publication_names": f'"{self.cfg.publication}"'}
        if proto >= 2:
            options["streaming"] = "on"
        if version >= FOLLOW_VERSION:
            options["messages"] = "true"
        repl.start(self.cfg.slot, 0, options)
        log.info(
            "streaming from slot %s (protocol %d), log holds up to %s",
            self.cfg.slot,
            proto,
            format_lsn(self.writer.durable_end_lsn()),
        )
        self.writer.set_meta_now(capture_state="streaming", capture_error="")
        catalog_conn = cat.connect(self.dsn)
        rcat = cat.RelationCatalog(catalog_conn)
        gen = GeneratedColumns(catalog_conn)
        excluded = ExcludedColumns(self.cfg.exclude_columns, rcat.primary_key)
        follower: TableFollower | None = None
        if version >= FOLLOW_VERSION:

            def relation_of(t: cat.TableInfo) -> tuple[bytes, Relation]:
                m = excluded.relation(rcat.relation_message(t, generated=True))
                return encode_relation(m), rcat.relation(m)

            follower = TableFollower(self.cfg, self.writer, catalog_conn, relation_of)
            follower.load()
        w = self.writer
        stats = self.stats
        machine = StreamMachine(w.last_commit_lsn)
        last_sync = time.monotonic()
        last_status = 0.0
        last_repairs = 0.0
        appended = Window()  # source commit -> log append, published for the console
        last_timing = time.monotonic()
        confirmed = max(w.durable_end_lsn(), int(w.meta("received_lsn", "0")))
        received = confirmed
        dirty = False
        seen_end = NO_POSITION  # a keepalive's end while nothing was in flight, not recorded yet
        sent_confirmed = confirmed
        leaves: dict[int, tuple[int, tuple[int, ...]]] = {}

        def durable() -> None:
            """Commit what was received durably (with an idle keepalive's end, which may then
            be confirmed), and confirm it."""
            nonlocal confirmed, received, dirty, last_sync
            confirmed = max(confirmed, w.sync(received_lsn=seen_end or None))
            failpoints.hit("capture.synced_not_confirmed")
            if seen_end > confirmed:
                confirmed = seen_end
                received = max(received, seen_end)
            dirty = False
            last_sync = time.monotonic()

        def status(now: float, asked: bool) -> None:
            """Tell the server what is durable: when asked, when it moved, or once a second."""
            nonlocal sent_confirmed, last_status
            if asked or confirmed > sent_confirmed or now - last_status >= STATUS_INTERVAL:
                repl.send_status(received, confirmed, confirmed)
                sent_confirmed = confirmed
                last_status = now

        def shaped(payload: bytes) -> bytes:
            """A change as the log keeps it: a leaf partition's as its root's, stored
            generated columns filled in, excluded columns cut."""
            plain = remap_change(payload, leaves) if leaves else payload
            return excluded.change(gen.change(plain) if gen.plans else plain)

        try:
            while not stop.is_set():
                due = dirty or seen_end > confirmed
                msg = repl.read(max(0.0, last_sync + SYNC_GAP - time.monotonic()) if due else 0.5)
                now = time.monotonic()
                if follower is not None and machine.idle:
                    follower.tick(now)
                if msg is None:
                    if due:
                        durable()
                    status(now, asked=False)
                    if machine.idle and now - last_repairs >= REPAIR_INTERVAL:
                        last_repairs = now
                        w.apply_repair_requests()  # `verify --repair` while `run` runs
                    continue
                ev = machine.feed(msg)
                if isinstance(ev, Change):
                    if not ev.replay:
                        plain = shaped(ev.payload)
                        if follower is not None:
                            follower.on_change(plain, ev.xid)
                        w.add(plain)
                        stats.events += 1
                elif isinstance(ev, StreamedChange):
                    plain = shaped(ev.payload)
                    if follower is not None:
                        follower.stream_change(ev.xid, plain)
                    w.stream_add(ev.xid, ev.subxid, plain)
                    failpoints.hit("capture.streamed_in_progress")
                elif isinstance(ev, Begin):
                    if not ev.replay:
                        w.begin(ev.xid, ev.final_lsn, ev.commit_time)
                elif isinstance(ev, Commit):
                    if follower is not None:
                        follower.committed(ev.xid)
                    if not ev.replay:
                        w.commit(ev.commit_lsn, ev.end_lsn, ev.commit_time)
                        stats.transactions += 1
                        wall = time.time()
                        appended.add(wall, wall - ev.commit_time / 1e6)
                        if now - last_timing >= TIMING_INTERVAL:
                            last_timing = now
                            w.set_meta_now(capture_timing=json.dumps(appended.summary(wall)))
                        dirty = True
                        failpoints.hit("capture.logged_not_synced")
                    received = max(received, ev.end_lsn)
                    if w.pending_bytes() >= SYNC_BYTES or now - last_sync >= SYNC_INTERVAL:
                        durable()
                elif isinstance(ev, RelationSeen):
                    _plain, rel = self._relation(ev.payload, rcat, gen, leaves, excluded)
                    if follower is not None and not rel.key and rel.replident != "f":
                        follower.key_lost(rel.oid)
                    if ev.stream_xid is not None:
                        w.stream_add_relation(ev.stream_xid, rel)
                    elif not ev.replay:
                        w.add_relation(rel)
                elif isinstance(ev, StreamCommitted):
                    if follower is not None:
                        follower.stream_end(ev.xid, committed=True)
                    if ev.replay:
                        w.stream_discard(ev.xid)
                    else:
                        w.stream_commit(ev.xid, ev.commit_lsn, ev.end_lsn, ev.commit_time)
                        stats.transactions += 1
                        dirty = True
                    received = max(received, ev.end_lsn)
                elif isinstance(ev, StreamAborted):
                    w.stream_abort(ev.xid, ev.subxid)
                    if follower is not None and ev.xid == ev.subxid:
                        follower.stream_end(ev.xid, committed=False)
                elif isinstance(ev, Message):
                    if follower is not None:  # our watermarks and markers
                        dirty = follower.on_message(ev.payload) or dirty
                elif isinstance(ev, Keepalive):
                    if machine.idle and ev.wal_end > confirmed:
                        # Nothing in flight: everything before wal_end has been sent to us, so
                        # it may be confirmed once the log has recorded that it was seen,
                        # together with every commit received (the next durable commit,
                        # within SYNC_GAP: the server sends one keepalive per transaction
                        # when it keeps up, and a commit each would cost one fsync each).
                        seen_end = max(seen_end, ev.wal_end)
                    if (dirty or seen_end > confirmed) and now - last_sync >= SYNC_GAP:
                        durable()
                    status(now, asked=ev.reply)
                stats.confirmed_lsn = confirmed
            # clean stop: make everything durable and confirm it
            if dirty or seen_end > confirmed:
                durable()
            repl.send_status(received, confirmed, confirmed)
        finally:
            if follower is not None:
                follower.close()
            catalog_conn.close()
