"""The processes of ``syncline run``: one capture, one per view. Each owns its connections,
retries transient errors with backoff and reports its state in the log database."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from syncline.core import failpoints
from syncline.core.config_models import Config, ViewConfig
from syncline.core.errors import (
    LogError,
    SourceError,
    SourceUnreachable,
    SynclineError,
    TransientViewError,
    ViewError,
)
from syncline.core.events import Checkpoint, Relation, RowChange, SchemaChange, Transaction, Truncate
from syncline.core.patterns import selection_warnings, table_selected
from syncline.log import (
    count_capture_error,
    log_ready,
    open_appender,
    open_control,
    open_cursor,
    open_retention,
)
from syncline.log.base import LOG_ID, LogAppender, LogControl, LogCursor, LogLocked
from syncline.log.embedded.retention import Retention
from syncline.runtime.backoff import Backoff
from syncline.runtime.logsetup import setup_logging
from syncline.runtime.prefetch import Prefetcher
from syncline.runtime.viewstats import ViewStats
from syncline.sources.registry import format_position, open_capture
from syncline.views.base import (
    KEYED_KINDS,
    Batch,
    DeferredCommit,
    View,
    advance_relations,
    keyless_refusal,
    selected_oids,
)
from syncline.views.partition import take_partition
from syncline.views.registry import create_view

EXIT_TERMINAL = 3


class PausedForRebuild(Exception):
    """``syncline rebuild`` asked this worker to let go of its view for the swap."""


def set_title(role: str) -> None:
    """Name the process ``syncline: ROLE`` in ps and top (``capture``, ``view replica``)."""
    import setproctitle

    setproctitle.setproctitle(f"syncline: {role}")


def _child_setup(cfg: Config, name: str) -> threading.Event:
    """Die with the parent, stop on SIGTERM/SIGINT, log with secrets redacted."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - non-Linux
        pass
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise SystemExit(1)  # the supervisor died before we could ask to die with it
    set_title(name)
    setup_logging(cfg.secrets(), prefix=f"[{name}] ")
    stop = threading.Event()

    def handler(_sig: int, _frm: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


_healthy: Event | None = None
"""This worker's "it started well" event, shared with the supervisor (set by
:func:`mark_healthy`): a worker killed after it was set is restarted without back-off."""


def mark_healthy() -> None:
    """The worker got through its start (the capture read the source's catalogue, a view
    resumed from its position)."""
    if _healthy is not None and not _healthy.is_set():
        _healthy.set()


def capture_entry(cfg: Config, healthy: Event | None = None) -> None:
    """Process target: the exit code is the capture's result."""
    global _healthy
    _healthy = healthy
    raise SystemExit(capture_main(cfg))


def view_entry(cfg: Config, vcfg: ViewConfig, healthy: Event | None = None) -> None:
    global _healthy
    _healthy = healthy
    raise SystemExit(view_main(cfg, vcfg))


OPEN_ERROR = "capture-open-error"
"""A file in ``[log] path``: why the capture could not open the log (its state cannot be
recorded in a log it cannot open)."""
REACHED = "log-reached"
"""A file in ``[log] path``: this host's capture has opened the log once (an unreachable log
is then retried; before, it is a configuration error)."""


def capture_main(cfg: Config) -> int:
    stop = _child_setup(cfg, "capture")
    log = logging.getLogger("syncline.capture")
    backoff = Backoff()
    warned = False

    def on_tables(every: list[str], columns: dict[str, list[str]], keyless: list[str]) -> None:
        nonlocal warned
        mark_healthy()
        if not warned:
            warned = True
            for w in selection_warnings(cfg.source.tables, view_selections(cfg), every, columns):
                log.warning("%s", w)
        for v in cfg.views:
            if v.kind in KEYED_KINDS:
                for q in keyless:
                    if table_selected(v.tables, q):
                        raise SourceError(keyless_refusal(v.name, v.kind, q))

    locked_since: float | None = None
    opened = False
    while not stop.is_set():
        try:
            writer = open_appender(cfg.log)
            if not opened:
                opened = True
                with contextlib.suppress(OSError):
                    (Path(cfg.log.path) / REACHED).touch()
        except LogLocked as e:
            # A previous `run` may still be dying (its workers exit with their parent).
            now = time.monotonic()
            locked_since = locked_since or now
            if now - locked_since > 30:
                log.error("%s", e)
                return EXIT_TERMINAL
            stop.wait(0.5)
            continue
        except LogError as e:
            if not e.transient or not (opened or (Path(cfg.log.path) / REACHED).exists()):
                # a log never reached is almost always a wrong [log] setting: say so and stop
                log.error("%s", e)
                with contextlib.suppress(OSError):  # the supervisor's last line names it
                    (Path(cfg.log.path) / OPEN_ERROR).write_text(str(e)[:500])
                return EXIT_TERMINAL
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.1fs", e, delay)
            stop.wait(delay)
            continue
        started = time.monotonic()
        try:
            _set_state(writer, "starting", "")
            open_capture(cfg, writer, on_tables).run(stop)
            _set_state(writer, "stopped", "")
            return 0
        except SynclineError as e:
            first = isinstance(e, SourceUnreachable) and not (
                writer.meta("source_reached") or writer.meta("system_id")
            )
            count_capture_error(cfg.log, e, e.transient and not first)
            if first:
                # never reached: almost always a wrong dsn; retrying forever would hide it
                msg = f"{e} (syncline has never reached this source: check [source] dsn)"
                log.error("%s", msg)
                _set_state(writer, "failed", msg)
                return EXIT_TERMINAL
            if not e.transient:
                log.error("%s", e)
                _set_state(writer, "failed", str(e))
                return EXIT_TERMINAL
            if time.monotonic() - started > 60:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.1fs", e, delay)
            _set_state(writer, "retrying", str(e))
            stop.wait(delay)
        except Exception as e:
            count_capture_error(cfg.log, e, False)
            log.exception("capture failed")
            _set_state(writer, "failed", f"{type(e).__name__}: {e}")
            return EXIT_TERMINAL
        finally:
            writer.close()
    return 0


def view_selections(cfg: Config) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(name, tables, text_fields) of every configured view, for :func:`selection_warnings`."""
    out = []
    for v in cfg.views:
        tf = v.options.get("text_fields")
        out.append((v.name, v.tables, tuple(str(f) for f in tf) if isinstance(tf, list) else ()))
    return out


def _set_state(writer: LogAppender, state: str, error: str) -> None:
    with contextlib.suppress(Exception):
        writer.set_meta_now(capture_state=state, capture_error=error[:500])


def view_main(cfg: Config, vcfg: ViewConfig) -> int:
    stop = _child_setup(cfg, f"view {vcfg.consumer}")
    if vcfg.kind == "compacted":
        # The compactor only serves retention and future views: it yields the CPU to the
        # capture and the views, and catches up when they are idle.
        with contextlib.suppress(OSError):
            os.nice(10)
    log = logging.getLogger(f"syncline.view.{vcfg.consumer}")
    path = Path(cfg.log.path)
    while not log_ready(cfg.log) and not stop.is_set():
        stop.wait(0.5)
    lock = _exclusive(path / f"view-{vcfg.consumer}.lock", stop, log)
    if lock is None:
        return 0
    # the log's control plane may be away (a JetStream outage, a full store): wait for it,
    # one line per distinct error, rather than die with a traceback and be restarted
    opened: list[LogControl] = []
    if not _retrying(lambda: opened.append(open_control(cfg.log)), stop, log, "opening the log"):
        return 0
    consumers = opened[0]

    def register() -> None:
        # a failure recorded earlier stays until the view runs again: while this attempt
        # starts, `status` still shows what fixes it
        consumers.update(vcfg.consumer, vcfg.kind, state="starting")

    if not _retrying(register, stop, log, f"view {vcfg.consumer}: registering in the log"):
        return 0
    backoff = Backoff()
    quiet = _Quiet(consumers, log)  # reports are best effort: the log may be away
    while not stop.is_set():
        view = None
        if not _lease(consumers, vcfg.consumer, stop, log):
            return 0
        try:
            view = create_view(vcfg, consumers, Path(cfg.log.path))
            cp = view.open()
            backoff.reset()
            try:
                _view_loop(view, vcfg, cfg, cp, consumers, stop, log)
            except sqlite3.OperationalError as e:  # the log is busy or being created
                raise TransientViewError(f"reading the log: {e}") from e
            _close_reporting(view, vcfg, consumers)
            quiet.update(vcfg.consumer, vcfg.kind, state="stopped")
            quiet.release_view(vcfg.consumer)
            return 0
        except PausedForRebuild:
            assert view is not None
            _close_reporting(view, vcfg, consumers)
            quiet.update(vcfg.consumer, vcfg.kind, state="paused", error="")
            log.info(
                "view %s: paused while another command holds its store (`syncline rebuild`'s swap, "
                "or a read of a store that admits one process)",
                vcfg.consumer,
            )
            if not _sit_out_rebuild(lock, consumers, vcfg.name, stop):
                return 0
            log.info("view %s: resuming on its store (rebuilt, or read meanwhile)", vcfg.consumer)
        except SynclineError as e:
            if view is not None:
                _safe_close(view)
            quiet.count_error(vcfg.consumer, e, e.transient)
            if not e.transient:
                fixable = isinstance(e, ViewError) and e.fixable
                action = (e.action if isinstance(e, ViewError) else "") or (
                    f"fix the cause, then run `syncline retry {vcfg.name}`"
                )
                log.error("%s; to fix: %s", e, action)
                quiet.update(vcfg.consumer, vcfg.kind, state="failed", error=str(e)[:500])
                quiet.set_failure(vcfg.consumer, fixable, action)
                return EXIT_TERMINAL
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.1fs (the log keeps the changes)", e, delay)
            quiet.update(vcfg.consumer, vcfg.kind, state="retrying", error=str(e)[:500])
            stop.wait(delay)
        except Exception as e:
            if view is not None:
                _safe_close(view)
            log.exception("view %s failed", vcfg.consumer)
            quiet.count_error(vcfg.consumer, e, False)
            quiet.update(vcfg.consumer, vcfg.kind, state="failed", error=f"{type(e).__name__}: {e}"[:500])
            quiet.set_failure(
                vcfg.consumer,
                False,
                f"a defect in syncline: report it; `syncline retry {vcfg.name}` tries again",
            )
            return EXIT_TERMINAL
    return 0


class _Quiet:
    """The control plane's writes, best effort: a report that cannot reach the log (a NATS
    outage, a full store) is logged at debug level and dropped; the state is reported again
    with the next one."""

    def __init__(self, control: LogControl, log: logging.Logger) -> None:
        self._control = control
        self._log = log

    def __getattr__(self, name: str) -> Callable[..., None]:
        call = getattr(self._control, name)

        def quietly(*args: object, **kwargs: object) -> None:
            try:
                call(*args, **kwargs)
            except (LogError, sqlite3.Error) as e:
                self._log.debug("could not report %s to the log: %s", name, e)

        return quietly


def _sit_out_rebuild(lock: Any, control: LogControl, name: str, stop: threading.Event) -> bool:
    """Let go of the view's lock until the rebuild is over, then take it again (False:
    stopped meanwhile)."""
    fcntl.flock(lock, fcntl.LOCK_UN)
    while not stop.is_set():
        with contextlib.suppress(LogError, sqlite3.Error):
            if name not in control.rebuilds():
                break
        stop.wait(0.2)
    return wait_flock(lock, stop)


def _close_reporting(view: View, vcfg: ViewConfig, consumers: LogControl) -> None:
    """Close the view; a :class:`DeferredCommit` view commits on close: report that."""
    view.close()
    done = view.read_checkpoint() if isinstance(view, DeferredCommit) else None
    if done is not None:
        with contextlib.suppress(LogError, sqlite3.Error):  # reported again at the next start
            consumers.add_applied(vcfg.consumer, vcfg.kind, 0, done.seq, done.commit_lsn)


def _safe_close(view: object) -> None:
    with contextlib.suppress(Exception):
        view.close()  # type: ignore[attr-defined]


def _view_loop(
    view: View,
    vcfg: ViewConfig,
    cfg: Config,
    cp: Checkpoint,
    consumers: LogControl,
    stop: threading.Event,
    log: logging.Logger,
) -> None:
    path = Path(cfg.log.path)
    reader = open_cursor(cfg.log)
    retention: Retention | None = None
    if vcfg.kind == "compacted" and vcfg.options.get("retention") == "applied":
        names = vcfg.options.get("views")
        retention = open_retention(cfg.log, view, [str(n) for n in names] if isinstance(names, list) else [])
    try:
        hw = reader.hw()
        if cp.seq > hw:
            raise ViewError(
                f"view {vcfg.consumer} has applied log record {cp.seq} but the log at {path} ends at "
                f"{hw}: the log was reset; empty the view's store to rebuild it"
            )
        trimmed = reader.trimmed_seq()
        log_id = reader.meta(LOG_ID)
        _check_same_log(reader, cp, trimmed, vcfg, path, log_id)
        # the store's own position, which may be behind the recorded one (a store restored
        # or emptied): `wait` must not count on more than the store holds
        consumers.update(vcfg.consumer, vcfg.kind, seq=cp.seq, commit_lsn=cp.commit_lsn)
        if cp.seq < trimmed:
            if cp.seq != 0:
                raise ViewError(
                    f"view {vcfg.consumer} is at log record {cp.seq} but the log was trimmed up to "
                    f"{trimmed}: empty the view's store to refill it from the compacted log"
                )
            cp = _fill_from_compacted(view, vcfg, cfg, consumers, stop, log, log_id)
            if isinstance(view, DeferredCommit):
                view.flush()
        relations = reader.relations_at(cp.seq)

        def healthy() -> None:
            consumers.update(vcfg.consumer, vcfg.kind, state="running", error="")
            consumers.clear_failure(vcfg.consumer)

        # a view retried after a failure stays "starting", its error and fix shown, until
        # it has applied a batch or found nothing to apply: the batch that failed may fail again
        retried = any(consumers.failure(vcfg.consumer)[:2])
        consumers.update(
            vcfg.consumer,
            vcfg.kind,
            state="starting" if retried else "running",
            seq=cp.seq,
            commit_lsn=cp.commit_lsn,
            **({} if retried else {"error": ""}),
        )
        if not retried:
            healthy()
        log.info("view %s (%s) resumes after log record %d", vcfg.consumer, vcfg.kind, cp.seq)
        mark_healthy()
        pos = cp
        open_txn = False
        part = (vcfg.partition, vcfg.partitions) if vcfg.partition is not None else None
        prefetch = Prefetcher(cfg.log, cp, vcfg.batch_events, part=part, log_id=log_id)
        try:
            extra = _sequence_meta(reader) if _wants_sequences(vcfg.kind) else None
            # every worker keeps its lease; the compactor is never paused by a rebuild
            paused = _pause_check(consumers, vcfg.consumer, vcfg.name, pausable=vcfg.kind != "compacted")
            open_txn = _apply_loop(
                view,
                vcfg,
                prefetch,
                relations,
                pos,
                consumers,
                stop,
                retention,
                extra,
                paused,
                log_id,
                healthy if retried else None,
                ViewStats(consumers, vcfg.consumer),
            )
        finally:
            prefetch.close()
        if open_txn:
            raise TransientViewError("stopped inside a transaction; it is rolled back")
    finally:
        reader.close()


def _kind_declares(kind: str, name: str, default: object) -> object:
    """What a view kind's package declares as ``name`` (``default`` for the compactor, which
    is not a registered kind, and for kinds that do not declare it)."""
    from syncline.views.registry import KINDS, kind_module

    return getattr(kind_module(kind), name, default) if kind in KINDS else default


def _wants_sequences(kind: str) -> bool:
    return bool(_kind_declares(kind, "SEQUENCES", False))


def _check_same_log(
    reader: LogCursor, cp: Checkpoint, trimmed: int, vcfg: ViewConfig, path: Path, log_id: str
) -> None:
    """The store's checkpoint names the log it was read from by its id (a log emptied or
    replaced since has another one, even when its new records repeat the old numbers and
    positions). A store written before logs had ids names the record by number and by the
    source position of its transaction: another transaction under that number is another
    log too. Either way the view must not resume after it."""
    if cp.seq <= 0:
        return
    if cp.log and log_id:
        if cp.log == log_id:
            return
        found = f"the log at {path} is another log (id {log_id}, the view's store names {cp.log})"
    else:
        if cp.seq <= trimmed:
            return
        got = reader.read(Checkpoint(cp.seq - 1), 1)
        if not got or got[0].seq != cp.seq or got[0].commit_lsn == cp.commit_lsn:
            return
        found = (
            f"record {cp.seq} of the log at {path} is another transaction (committed at "
            f"{format_position(got[0].commit_lsn)})"
        )
    raise ViewError(
        f"view {vcfg.consumer} has applied log record {cp.seq} (committed at "
        f"{format_position(cp.commit_lsn)}), but {found}: the log was reset or replaced; empty the "
        "view's store to rebuild it",
        action="empty the view's store (it is refilled from the log)",
    )


def _sequence_meta(reader: LogCursor) -> Callable[[], dict[str, object]]:
    """``Batch.meta`` for the replica view: the source's sequences (read at most once a
    second from the log's metadata, written by the capture)."""
    state: dict[str, object] = {"at": 0.0, "meta": {}}

    def get() -> dict[str, object]:
        now = time.monotonic()
        if now - float(state["at"]) >= 1.0:  # type: ignore[arg-type]
            state["at"] = now
            with contextlib.suppress(sqlite3.Error, ValueError):
                raw = reader.meta("sequences")
                state["meta"] = {"sequences": json.loads(raw)} if raw else {}
        return state["meta"]  # type: ignore[return-value]

    return get


def _pause_check(control: LogControl, name: str, view: str, pausable: bool = True) -> Callable[[], bool]:
    """Whether ``syncline rebuild`` asks this view's worker to pause (read twice a second);
    every few seconds it refreshes the worker's lease on the view, and raises when another
    applier took it over (the view is then applied by one process only)."""
    state = {"at": 0.0, "paused": False, "leased": time.monotonic()}

    def get() -> bool:
        now = time.monotonic()
        if now - state["leased"] >= 3.0:
            state["leased"] = now
            try:
                holder = control.lease_view(name)
            except LogError:
                holder = None  # the log is away: the reads fail on their own
            if holder is not None:
                raise TransientViewError(f"view {name}: another applier took it over ({holder})")
        if pausable and now - state["at"] >= 0.5:
            state["at"] = now
            with contextlib.suppress(LogError, sqlite3.Error):
                state["paused"] = control.rebuilds().get(view, False)
        return bool(state["paused"])

    return get


def view_events(batch: Batch, patterns: tuple[str, ...]) -> int:
    """The batch's events that concern a view following ``patterns`` (all when none)."""
    sel = selected_oids(patterns, batch, batch.relations)
    if sel is None:
        return batch.events
    n = 0
    for txn in batch.transactions:
        for it in txn.items:
            if isinstance(it, RowChange):
                n += it.relid in sel
            elif isinstance(it, SchemaChange):
                n += it.relation.oid in sel
            elif isinstance(it, Truncate):
                n += any(r in sel for r in it.relids)
    return n


def batch_interval(vcfg: ViewConfig) -> float:
    """The view's ``batch_interval``: configured, or its kind's default (0 when none)."""
    if vcfg.batch_interval is not None:
        return vcfg.batch_interval
    return float(_kind_declares(vcfg.kind, "BATCH_INTERVAL", 0.0))  # type: ignore[arg-type]


REPORT_GAP = 0.005
"""Shortest time between two progress reports of a view to the log's control plane (what
``wait`` and ``status`` read): transactions applied one by one are reported together,
instead of one write to the log per source transaction competing with the capture's."""


def _apply_loop(
    view: View,
    vcfg: ViewConfig,
    prefetch: Prefetcher,
    relations: dict[int, Relation],
    pos: Checkpoint,
    consumers: LogControl,
    stop: threading.Event,
    retention: Retention | None,
    extra: Callable[[], dict[str, object]] | None = None,
    paused: Callable[[], bool] | None = None,
    log_id: str = "",
    healthy: Callable[[], None] | None = None,
    stats: ViewStats | None = None,
) -> bool:
    """Apply batches until stopped; return True if stopped inside a source transaction.

    The position recorded in the consumer table (what ``wait``, ``status`` and retention
    read) is always one the view has committed: for a :class:`DeferredCommit` view its
    committed checkpoint, which an idle loop commits after ``commit_interval``.
    ``healthy`` is called once, after the first committed batch or at the log's end."""
    open_txn = False
    deferred_view = view if isinstance(view, DeferredCommit) else None
    deferred = deferred_view is not None
    opt = vcfg.options.get("commit_interval", 0.0)
    interval = float(opt) if deferred and isinstance(opt, int | float) else 0.0
    reported = pos
    applied = pos
    applied_at = 0.0
    last_report = 0.0
    last_batch = 0.0
    gap = batch_interval(vcfg)
    events = 0
    in_txn = 0  # events of the batches of a source transaction not yet committed
    applied_time = 0  # source commit time of the last transaction applied (µs)
    while not stop.is_set():
        if stats is not None:
            stats.maybe_publish()
        # called on every turn: it also keeps this applier's lease on the view
        if paused is not None and paused() and not open_txn:
            raise PausedForRebuild
        now = time.monotonic()
        report_in = last_report + REPORT_GAP - now if applied != reported else 0.05
        hold = last_batch + gap - now  # > 0: let the transactions arriving meanwhile join
        if hold > 0 and not open_txn and not prefetch.full():
            stop.wait(max(0.0, min(hold, report_in)))
            txns = prefetch.get(0.0) if time.monotonic() >= last_batch + gap else None
        else:
            txns = prefetch.get(max(0.0, report_in))
        if txns and vcfg.partition is not None:
            txns = take_partition(txns, relations, vcfg.partition, vcfg.partitions)
        if txns:
            last_batch = time.monotonic()
            last = txns[-1]
            n = sum(len(t.items) for t in txns)
            batch = Batch(txns, relations, Checkpoint(last.seq, last.commit_lsn, log_id), n, commit=last.last)
            if extra is not None:
                batch.meta = extra()
            in_txn += view_events(batch, vcfg.tables)
            started = time.monotonic()
            view.apply(batch)
            advance_relations(batch)  # views may have done it: idempotent
            if stats is not None:
                stats.applied(txns, relations, time.monotonic() - started)
            pos = batch.checkpoint
            open_txn = not last.last
            if not last.last:
                failpoints.hit("view.mid_transaction")
                continue
            if applied == reported:
                applied_at = time.monotonic()
            applied = pos
            applied_time = last.commit_time
            failpoints.hit("view.committed_not_reported")
            if healthy is not None:
                healthy()
                healthy = None
            events += in_txn
            in_txn = 0
        elif applied == reported:
            if healthy is not None and prefetch.at_end():
                healthy()
                healthy = None
            if retention is not None:  # idle: what every consumer has applied can go now
                retention.maybe_trim(reported.seq)
            continue
        elif deferred_view is not None and time.monotonic() - applied_at >= interval:
            deferred_view.flush()
        done = deferred_view.read_checkpoint() if deferred_view is not None else applied
        if done is None or (done.seq <= reported.seq and not events):
            continue
        if time.monotonic() - last_report < REPORT_GAP:
            continue  # reported a moment ago: the next turn reports this batch with the next ones
        # events not written now are kept by the consumer table for the next call
        written = consumers.add_applied(vcfg.consumer, vcfg.kind, events, done.seq, done.commit_lsn)
        last_report = time.monotonic()
        events = 0
        if written and done.seq > reported.seq:
            reported = applied if done.seq >= applied.seq else done
            if stats is not None and reported is applied and applied_time:
                stats.committed(applied_time)
        if retention is not None:
            retention.maybe_trim(reported.seq)
    if stats is not None:
        stats.maybe_publish(force=True)
    return open_txn


def _fill_from_compacted(
    view: View,
    vcfg: ViewConfig,
    cfg: Config,
    consumers: LogControl,
    stop: threading.Event,
    log: logging.Logger,
    log_id: str,
) -> Checkpoint:
    """A new view, and the log was trimmed: fill it from the compacted log (on a NATS log
    and another host than the capture's: from the copy published to NATS), then continue."""
    from syncline.log.embedded.compact import iter_compacted

    path = Path(cfg.log.path)

    if cfg.log.kind == "nats" and not (path / "compact.db").exists():
        # another host than the capture's: the compacted state it publishes to NATS
        from syncline.log.nats.compacted import fetch

        fetched = path / "compact-fetched"
        log.info("view %s is new and the log was trimmed: fetching the compacted state", vcfg.consumer)
        try:
            if fetch(cfg.log, fetched):
                return _fill_from(iter_compacted(fetched), view, vcfg, consumers, stop, log, log_id)
        finally:
            shutil.rmtree(fetched, ignore_errors=True)
    if not (path / "compact.db").exists():
        # the compactor keeps its state where the capture runs: on another host, nothing
        # here can fill the view, and following the trimmed log would lose its first rows
        if cfg.log.kind == "nats":
            raise ViewError(
                f"view {vcfg.consumer} is new and the log was trimmed, but no compacted state was "
                "published to NATS (a capture older than this version trimmed it)",
                action=f"start `syncline apply --view {vcfg.name}` once where the capture runs (same"
                " [log] path): the compacted log is there",
            )
        raise ViewError(
            f"view {vcfg.consumer} is new and the log was trimmed, but the compacted log that fills a new"
            f" view is not in {path} (it is kept where `syncline capture` runs)",
            action=f"start `syncline apply --view {vcfg.name}` once where the capture runs (same"
            " [log] path), or configure the view where the capture runs before the log is trimmed",
        )
    log.info("view %s is new and the log was trimmed: filling it from the compacted log", vcfg.consumer)
    return _fill_from(iter_compacted(path), view, vcfg, consumers, stop, log, log_id)


def _fill_from(
    txns: Iterator[Transaction],
    view: View,
    vcfg: ViewConfig,
    consumers: LogControl,
    stop: threading.Event,
    log: logging.Logger,
    log_id: str,
) -> Checkpoint:
    consumers.update(vcfg.consumer, vcfg.kind, state="filling")
    relations: dict[int, Relation] = {}
    cp = Checkpoint()
    n = 0
    for txn in txns:
        if stop.is_set():
            raise TransientViewError("stopped while filling from the compacted log")
        cp = Checkpoint(txn.seq, txn.commit_lsn, log_id)
        if vcfg.partition is not None:
            txn = take_partition([txn], relations, vcfg.partition, vcfg.partitions)[0]
        n += len(txn.items)
        batch = Batch([txn], relations, cp, len(txn.items), commit=txn.last)
        view.apply(batch)
        advance_relations(batch)
    log.info("view %s filled with %d rows and schema changes up to log record %d", vcfg.consumer, n, cp.seq)
    return cp


def wait_flock(
    f: Any,
    stop: threading.Event,
    timeout: float | None = None,
    on_long_wait: Callable[[], None] | None = None,
) -> bool:
    """Take the exclusive lock of the open file ``f``, waiting for its holder to let go;
    False when ``stop`` is set or ``timeout`` seconds passed first. ``on_long_wait`` is
    called once after 5 s of waiting."""
    started = time.monotonic()
    warned = False
    while not stop.is_set():
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                return False
            if on_long_wait is not None and not warned and waited >= 5.0:
                warned = True
                on_long_wait()
            stop.wait(0.1)
    return False


def _lease(control: LogControl, name: str, stop: threading.Event, log: logging.Logger) -> bool:
    """One applier per view across hosts: wait until this process holds the view's lease
    (False: stopped first)."""
    warned = False
    got: list[str | None] = []
    while not stop.is_set():
        got.clear()
        if not _retrying(lambda: got.append(control.lease_view(name)), stop, log, f"view {name}: its lease"):
            return False
        holder = got[0]
        if holder is None:
            return True
        if not warned:
            warned = True
            log.warning("view %s is applied by %s; waiting until it stops", name, holder)
        stop.wait(1.0)
    return False


def _retrying(call: Callable[[], object], stop: threading.Event, log: logging.Logger, what: str) -> bool:
    """Call until it does not raise :class:`LogError` (False: stopped first), with back-off
    and one warning per distinct error."""
    backoff = Backoff()
    last = ""
    while not stop.is_set():
        try:
            call()
            return True
        except LogError as e:
            delay = backoff.next_delay()
            if str(e) != last:
                last = str(e)
                log.warning("%s: %s; retrying in %.1fs", what, e, delay)
            stop.wait(delay)
    return False


def _exclusive(lockfile: Path, stop: threading.Event, log: logging.Logger) -> object | None:
    """One process per view: wait for a previous one (e.g. still dying) to let go."""
    f = open(lockfile, "a+")  # noqa: SIM115 - held for the life of the process
    if wait_flock(
        f, stop, on_long_wait=lambda: log.warning("waiting for another process holding %s", lockfile)
    ):
        return f
    f.close()
    return None
