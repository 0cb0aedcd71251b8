"""``syncline verify --repair``: the differing keys' current source rows, appended to the log
as one synthetic transaction that every view applies through its normal path.

Ordering (the DBLog watermark argument, see ARCHITECTURE.md "Verify"): the repair holds the
log's writer lock, so no capture runs and the log's tail is fixed. The rows are read in a
snapshot at ``P`` taken after the lock: every transaction already in the log committed
before ``P`` (none is newer than the repaired rows, so no key has to be dropped). The
repair is appended after the log's last record with the log's newest commit LSN; the
capture appends only transactions with a commit LSN above that, and every source
transaction it has not captured yet (committed before or after ``P``) is appended *after*
the repair. A key's last logged change is therefore always the newest: a repaired row never
overwrites a newer change, it is at worst overwritten by older-or-equal ones that are
followed by the newest.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from syncline.core.config_models import Config, LogConfig, ViewConfig
from syncline.core.events import Checkpoint, Relation, Row
from syncline.core.records import encode_delete, encode_insert
from syncline.log import open_appender, open_control, open_cursor
from syncline.log.base import LOG_ID, LogLocked
from syncline.log.embedded.store import (
    connect,
    repair_request_state,
    request_repair,
)
from syncline.verify.engine import ViewResult
from syncline.verify.readers import VerifyError
from syncline.verify.source import SourceSnapshot, TableSpec
from syncline.views.base import Batch, advance_relations
from syncline.views.registry import create_view

Hook = Callable[[], None]


def plan_keys(results: dict[str, ViewResult]) -> dict[str, dict[str, tuple[str | None, ...]]]:
    """table -> key text -> key values, over every view's differences."""
    out: dict[str, dict[str, tuple[str | None, ...]]] = {}
    for res in results.values():
        for q, tr in res.tables.items():
            for k in tr.diff.all_keys():
                out.setdefault(q, {})[k] = tr.key_values.get(k, ())
    return out


def _messages(
    rel: Relation, spec: TableSpec, keys: dict[str, tuple[str | None, ...]], rows: Mapping[str, Row]
) -> tuple[list[bytes], int, int]:
    msgs: list[bytes] = []
    ups = dels = 0
    kidx = rel.key_indexes()
    for k in sorted(keys):
        row = rows.get(k)
        if row is not None:
            msgs.append(encode_insert(rel.oid, row))
            ups += 1
            continue
        kv = keys[k]
        if len(kv) != len(kidx):
            continue
        old: list[str | None] = [None] * len(rel.columns)
        for i, v in zip(kidx, kv, strict=True):
            old[i] = v
        msgs.append(encode_delete(rel.oid, tuple(old), b"K"))
        dels += 1
    return msgs, ups, dels


def _build(
    cfg: Config, results: dict[str, ViewResult], snap: SourceSnapshot, rels: dict[str, Relation]
) -> tuple[list[bytes], dict[str, Any]]:
    """The repair's messages: the differing keys' rows read in ``snap``."""
    info: dict[str, Any] = {"seq": 0, "upserts": 0, "deletes": 0, "dropped": 0, "skipped": {}}
    msgs: list[bytes] = []
    specs = {s.qualified: s for s in snap.tables(cfg.source.tables, cfg.source.exclude_columns)}
    for q, ks in sorted(plan_keys(results).items()):
        rel, spec = rels.get(q), specs.get(q)
        if rel is None or spec is None or rel.column_names != spec.columns:
            info["skipped"][q] = "the table's columns changed since the log last saw it"
            continue
        if not rel.key:
            info["skipped"][q] = "no primary key: repair cannot tell its equal rows apart"
            continue
        rows = snap.output_rows(spec, set(ks))
        m, ups, dels = _messages(rel, spec, ks, rows)
        msgs += m
        info["upserts"] += ups
        info["deletes"] += dels
    return msgs, info


def _log_relations(log: LogConfig) -> dict[str, Relation]:
    reader = open_cursor(log)
    try:
        return {r.qualified: r for r in reader.relations_at(reader.hw()).values()}
    finally:
        reader.close()


def append_repair(
    cfg: Config, results: dict[str, ViewResult], after_read: Hook | None = None
) -> dict[str, Any]:
    """With ``run`` stopped: take the log's writer lock and append the repair transaction;
    return what it holds (``seq`` 0: nothing to do)."""
    path = Path(cfg.log.path)
    if not plan_keys(results):
        return {"seq": 0, "upserts": 0, "deletes": 0, "dropped": 0, "skipped": {}}
    try:
        writer = open_appender(cfg.log)
    except LogLocked:
        raise VerifyError(f"`syncline run` holds the log ({path}/writer.lock)") from None
    try:
        rels = _log_relations(cfg.log)
        with SourceSnapshot(cfg.source.dsn.value) as snap:
            if writer.last_commit_lsn() >= snap.lsn:  # pragma: no cover - the lock is held
                raise VerifyError("the log holds transactions newer than the repair snapshot")
            msgs, info = _build(cfg, results, snap, rels)
        if after_read is not None:
            after_read()
        info["seq"] = writer.append_repair(msgs, int(time.time() * 1_000_000))
    finally:
        writer.close()
    return info


def submit_repair(
    cfg: Config, results: dict[str, ViewResult], after_read: Hook | None = None
) -> tuple[int, dict[str, Any]]:
    """With ``run`` running: hand the repair to the capture as a request (snapshot position
    and messages); return the request id (0: nothing to do) and what it holds."""
    path = Path(cfg.log.path)
    if not plan_keys(results):
        return 0, {"seq": 0, "upserts": 0, "deletes": 0, "dropped": 0, "skipped": {}}
    if cfg.log.kind != "embedded":
        raise VerifyError(
            f'`verify --repair` while `syncline run` runs is not available on a log of kind "{cfg.log.kind}"'
            " yet: stop `run`, then repair"
        )
    rels = _log_relations(cfg.log)
    with SourceSnapshot(cfg.source.dsn.value) as snap:
        msgs, info = _build(cfg, results, snap, rels)
        lsn = snap.lsn
    if after_read is not None:
        after_read()
    return (request_repair(path, lsn, msgs) if msgs else 0), info


class RepairStale(VerifyError):
    """The capture refused a repair request: read it again at a newer snapshot."""


def await_repair(cfg: Config, request: int, info: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Wait until the capture appended the requested repair; cancel it on timeout."""
    path = Path(cfg.log.path)
    deadline = time.monotonic() + timeout
    while True:
        state, seq, dropped = repair_request_state(path, request)
        if state == "done":
            return {**info, "seq": seq, "dropped": dropped}
        if state == "stale":
            raise RepairStale(f"repair request {request} was read before changes the log has trimmed")
        if time.monotonic() >= deadline and cancel_repair(path, request):
            raise VerifyError(
                f"the capture did not take repair request {request} within {timeout:g}s "
                "(it takes requests between transactions, once it has received the source's "
                "changes up to the repair's snapshot): try again, or stop `run` and run "
                "`syncline verify --repair` again"
            )
        time.sleep(0.1)


def cancel_repair(path: Path, request: int) -> bool:
    """Withdraw a pending request; False if the capture took it meanwhile."""
    conn = connect(path)
    try:
        cur = conn.execute(
            "UPDATE repair_requests SET state = 'cancelled' WHERE id = ? AND state = 'pending'", (request,)
        )
        return cur.rowcount == 1
    finally:
        conn.close()


def catch_up(cfg: Config, vcfg: ViewConfig) -> Checkpoint:
    """Apply the log to a view whose worker is not running, through the view's normal
    apply path (the repair included); hold the view's lock meanwhile."""
    path = Path(cfg.log.path)
    lockf = open(path / f"view-{vcfg.name}.lock", "a+")  # noqa: SIM115
    try:
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VerifyError(f"view {vcfg.name} is being applied by `syncline run`") from None
        view = create_view(vcfg)
        cp: Checkpoint = view.open()
        reader = open_cursor(cfg.log)
        consumers = open_control(cfg.log)
        try:
            if cp.seq < reader.trimmed_seq():
                raise VerifyError(f"view {vcfg.name} is behind the trimmed log: run `syncline run`")
            log_id = reader.meta(LOG_ID)
            if cp.seq and cp.log and log_id and cp.log != log_id:
                raise VerifyError(
                    f"view {vcfg.name} was applied from another log than the one at {cfg.log.path} (the"
                    " log was reset or replaced): empty the view's store to rebuild it"
                )
            relations = reader.relations_at(cp.seq)
            events = 0
            while True:
                txns = reader.read(cp, vcfg.batch_events)
                if not txns:
                    break
                last = txns[-1]
                n = sum(len(t.items) for t in txns)
                cp = Checkpoint(last.seq, last.commit_lsn, log_id)
                batch = Batch(txns, relations, cp, n, commit=last.last)
                view.apply(batch)
                advance_relations(batch)
                events += n
            flush = getattr(view, "flush", None)
            if callable(flush):
                flush()
            consumers.add_applied(vcfg.name, vcfg.kind, events, cp.seq, cp.commit_lsn)
            consumers.update(vcfg.name, vcfg.kind, state="stopped")
        finally:
            reader.close()
            consumers.close()
            with contextlib.suppress(Exception):
                view.close()
        return cp
    finally:
        lockf.close()
