"""What ``syncline status`` and ``syncline wait`` read: the log's control plane (capture
state, consumer positions, through :class:`syncline.log.base.LogObserver`) and the source
(slot, retained WAL). Works whether or not ``run`` runs."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from syncline.core.config_models import Config
from syncline.core.errors import LogError, SynclineError, TablesNotFollowed, ViewFailed
from syncline.core.lsn import format_lsn, parse_lsn
from syncline.log import log_exists, open_observer
from syncline.log.base import LogBusy, LogObserver


def _lsn(v: int) -> str | None:
    return format_lsn(v) if v else None


def source_status(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": cfg.source.kind,
        "slot": cfg.source.slot,
        "publication": cfg.source.publication,
    }
    try:
        import psycopg

        from syncline.sources.postgres.replication import session_conninfo

        with psycopg.connect(
            session_conninfo(cfg.source.dsn.value, connect_timeout="5"), autocommit=True
        ) as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text, active, active_pid,"
                " (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status,"
                " pg_current_wal_lsn()::text"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (cfg.source.slot,),
            ).fetchone()
            if row is None:
                cur = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                out.update(reachable=True, slot_exists=False, current_lsn=cur[0] if cur else None)
            else:
                out.update(
                    reachable=True,
                    slot_exists=True,
                    confirmed_lsn=row[0],
                    active=row[1],
                    active_pid=row[2],
                    retained_wal_bytes=row[3],
                    wal_status=row[4],
                    current_lsn=row[5],
                )
    except Exception as e:  # the source may be down: status still answers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        from syncline.core.errors import redact

        out.update(reachable=False, error=redact(first, cfg.secrets()))
    return out


def source_position(cfg: Config) -> int:
    """The source's current WAL insert position: it covers every transaction that has
    committed, also one whose commit record is not flushed yet (synchronous_commit = off)."""
    import psycopg

    from syncline.sources.postgres.replication import session_conninfo

    try:
        with psycopg.connect(
            session_conninfo(cfg.source.dsn.value, connect_timeout="5"), autocommit=True
        ) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SynclineError(f"cannot reach the source to read its WAL position: {first}") from e
    assert row is not None
    return parse_lsn(str(row[0]))


def _unfollowed(conn: Any, cfg: Config) -> list[str]:
    from syncline.sources.postgres import catalog as cat
    from syncline.sources.postgres.follow import usable

    published = cat.publication_tables(conn, cfg.source.publication)
    tables = [t for t in cat.discover_tables(conn, cfg.source.tables) if usable(t)]
    copying: set[str] = set()
    state = None
    with contextlib.suppress(LogError):
        obs = open_observer(cfg.log)
        try:
            state = obs.meta("state")
            copying = set(copying_tables(obs))
        finally:
            obs.close()
    if published is None or state != "streaming":
        # the first start has not queued its copies yet: no table is followed
        return sorted(t.qualified for t in tables)
    # tables without a key are never followed (the capture warns about them)
    return sorted(t.qualified for t in tables if t.qualified not in published or t.qualified in copying)


def wait_followed(cfg: Config, deadline: float, stop: threading.Event | None = None) -> list[str]:
    """Wait (until the ``time.monotonic()`` deadline) for the capture to follow every
    table matching ``source.tables`` (new tables are added and copied within seconds);
    return those still not followed."""
    while True:
        missing = unfollowed_tables(cfg)
        if not missing or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return missing
        time.sleep(0.2)


def unfollowed_tables(cfg: Config) -> list[str]:
    """Tables of the source that match ``[source] tables`` and are not followed yet: not in
    the publication (created after ``syncline run`` started) or still being copied; every
    matching table until the first start has queued its copies."""
    from syncline.sources.postgres import catalog as cat

    conn = cat.connect(cfg.source.dsn.value)
    try:
        return _unfollowed(conn, cfg)
    finally:
        conn.close()


def followed_position(cfg: Config, deadline: float = 0.0) -> int:
    """For ``wait``: the source's position once every table is followed; raise
    :class:`TablesNotFollowed` when some are still not followed at ``deadline``."""
    from syncline.sources.postgres import catalog as cat

    conn = cat.connect(cfg.source.dsn.value)
    try:
        missing = _unfollowed(conn, cfg)
        if missing:
            conn.close()
            still = wait_followed(cfg, deadline)
            if still:
                raise TablesNotFollowed(still)
            conn = cat.connect(cfg.source.dsn.value)
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    finally:
        conn.close()
    assert row is not None
    return parse_lsn(str(row[0]))


def error_counts(obs: LogObserver) -> dict[tuple[str, str], dict[str, int]]:
    """(component, name) -> {"retries": transient errors, "errors": terminal ones}."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for e in obs.errors():
        c = out.setdefault((e.component, e.name), {"retries": 0, "errors": 0})
        c["retries" if e.transient else "errors"] += e.n
    return out


def first_copy_running(obs: LogObserver) -> bool:
    """The first start's copy (the initial snapshot) is under way."""
    from syncline.sources.postgres.follow import META_KEY

    if obs.meta("state") == "snapshotting":
        return True
    try:
        doc = json.loads(obs.meta(META_KEY) or "{}")
        return any(bool(c.get("first")) for c in doc.values())
    except (ValueError, AttributeError):
        return False


def snapshot_rows(obs: LogObserver) -> int:
    """Rows the initial snapshot has copied into the log (so far, while it runs): the first
    start's watermark copy, or (PostgreSQL 13) the one-pass snapshot while the log still
    holds it (its first records)."""
    from syncline.sources.postgres.follow import FIRST_ROWS_KEY

    counted = obs.meta(FIRST_ROWS_KEY)
    if counted:
        return int(counted)
    return obs.one_pass_snapshot_rows()


def capture_state(obs: LogObserver) -> str:
    """The capture's recorded state: ``starting`` (connecting, checking), ``snapshotting``,
    ``streaming``, ``retrying``, ``failed`` or ``stopped``. (A log written by an earlier
    version may lack the record: past ``new``, it was started and not stopped since.)"""
    got = obs.meta("capture_state")
    if got:
        return got
    return "stopped" if (obs.meta("state") or "new") == "new" else "starting"


def log_status(obs: LogObserver, cfg: Config) -> dict[str, Any]:
    first, n = obs.held()
    errs = error_counts(obs).get(("capture", ""), {"retries": 0, "errors": 0})
    return {
        "kind": cfg.log.kind,
        "path": str(cfg.log.path),
        "state": obs.meta("state") or "new",
        "capture_state": capture_state(obs),
        "capture_error": obs.meta("capture_error") or None,
        "first_seq": first,
        "last_seq": int(obs.meta("hw", "0")),
        "records": n,
        "last_commit_lsn": _lsn(int(obs.meta("last_commit_lsn", "0"))),
        "received_lsn": _lsn(int(obs.meta("received_lsn", "0"))),
        "size_bytes": obs.size_bytes(),
        "trimmed_seq": int(obs.meta("trimmed_seq", "0")),
        "repairs": int(obs.meta("repairs", "0")),
        "last_repair_seq": int(obs.meta("last_repair_seq", "0")) or None,
        "snapshot_rows": snapshot_rows(obs) if first_copy_running(obs) else None,
        "capture_retries": errs["retries"],
        "capture_errors": errs["errors"],
        "copying": copying_tables(obs),
    }


def copying_tables(obs: LogObserver) -> dict[str, dict[str, Any]]:
    """Tables being copied by watermark chunks (new, changed by DDL, or asked for by
    ``syncline snapshot``): rows copied so far, the table's estimated rows, rows/s and the
    seconds left at that rate (None until known)."""
    from syncline.sources.postgres.follow import META_KEY

    saved = obs.meta(META_KEY)
    out: dict[str, dict[str, Any]] = {}
    try:
        doc = json.loads(saved) if saved else {}
        for c in doc.values():
            rows, est = int(c.get("rows", 0)), int(c.get("estimate", 0))
            took = time.time() - float(c.get("started", time.time()))
            rate = rows / took if rows and took > 0 else None
            eta = max(0.0, (est - rows) / rate) if rate and est > rows else None
            out[str(c["table"])] = {
                "rows": rows,
                "estimate": est or None,
                "rows_per_second": round(rate) if rate else None,
                "eta_seconds": round(eta, 1) if eta is not None else None,
            }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return out


def view_status(obs: LogObserver, cfg: Config) -> dict[str, Any]:
    hw = int(obs.meta("hw", "0"))
    rows = obs.consumers()
    out: dict[str, Any] = {}
    now = time.time()
    errors = error_counts(obs)
    failures = obs.failures()
    for v in cfg.views:
        r = rows.get(v.name)
        seq = r.seq if r else 0
        lag_events, oldest = obs.events_after(seq, hw)
        lag_s = max(0.0, now - oldest / 1e6) if lag_events and oldest else 0.0
        out[v.name] = {
            "kind": v.kind,
            "state": r.state if r else "new",
            "applied_lsn": _lsn(r.commit_lsn) if r else None,
            "applied_seq": seq,
            "lag_seconds": round(lag_s, 3),
            "lag_events": lag_events,
            "applied_events": r.applied_events if r else 0,
            "error": (r.error or None) if r else None,
            **errors.get(("view", v.name), {"retries": 0, "errors": 0}),
        }
        f = failures.get(v.name)
        if r and r.state == "failed" and f is not None:
            out[v.name]["action"] = f.action or None
            out[v.name]["next_retry_seconds"] = (
                round(max(0.0, f.next_retry - now), 1) if f.fixable and f.next_retry else None
            )
    return out


def status(cfg: Config, with_source: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result["source"] = source_status(cfg) if with_source else {}
    if log_exists(cfg.log):
        with contextlib.suppress(LogBusy):  # `run` is creating the log right now
            obs = open_observer(cfg.log)
            try:
                result["log"] = log_status(obs, cfg)
                result["views"] = view_status(obs, cfg)
                return result
            finally:
                obs.close()
    result["log"] = {"kind": cfg.log.kind, "path": str(cfg.log.path), "state": "new"}
    result["views"] = {
        v.name: {"kind": v.kind, "state": "new", "applied_lsn": None, "lag_seconds": 0.0, "lag_events": 0}
        for v in cfg.views
    }
    return result


def wait_caught_up(
    cfg: Config,
    lsn: int,
    views: Iterable[str],
    timeout: float,
    stop: threading.Event | None = None,
    interval: float = 0.02,
) -> bool:
    """Poll the log until :func:`views_caught_up` (True) or ``timeout`` seconds or ``stop``
    (False). One read-only look for the whole wait. Raises :class:`ViewFailed` at once when
    one of ``views`` has failed."""
    names = list(views)
    deadline = time.monotonic() + timeout
    obs: LogObserver | None = None
    try:
        while True:
            if obs is None and log_exists(cfg.log):
                with contextlib.suppress(LogError):
                    obs = open_observer(cfg.log)
            if obs is not None:
                with contextlib.suppress(LogBusy):  # the log is being created
                    if _caught_up(obs, lsn, names):
                        return True
                    _raise_failed(obs, names)
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if stop is not None:
                stop.wait(min(interval, left))
            else:
                time.sleep(min(interval, left))
    finally:
        if obs is not None:
            obs.close()


def applied_positions(cfg: Config, views: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each named view's recorded state and applied position (for ``/wait``'s answer)."""
    names = list(views)
    out: dict[str, dict[str, Any]] = {n: {"state": "new", "applied_lsn": None} for n in names}
    if not log_exists(cfg.log):
        return out
    with contextlib.suppress(LogError):
        obs = open_observer(cfg.log)
        try:
            for name, r in obs.consumers().items():
                if name in out:
                    out[name] = {"state": r.state, "applied_lsn": _lsn(r.commit_lsn)}
        finally:
            obs.close()
    return out


def views_caught_up(cfg: Config, lsn: int, views: list[str]) -> bool:
    """True once the log has seen everything up to ``lsn`` and each view has applied every
    transaction that committed at or before it."""
    if not log_exists(cfg.log):
        return False
    try:
        obs = open_observer(cfg.log)
    except LogBusy:
        return False
    try:
        return _caught_up(obs, lsn, views)
    except LogBusy:  # the log is being created
        return False
    finally:
        obs.close()


def _raise_failed(obs: LogObserver, views: list[str]) -> None:
    """Raise :class:`ViewFailed` for the first of ``views`` recorded as failed."""
    rows = obs.consumers()
    for name in views:
        r = rows.get(name)
        if r is not None and r.state == "failed":
            raise ViewFailed(name, r.error)


def views_behind(cfg: Config, lsn: int, views: Iterable[str]) -> list[str]:
    """The views of ``views`` that have not applied everything committed up to ``lsn``
    (all of them when the log cannot be read)."""
    return [n for n in views if not views_caught_up(cfg, lsn, [n])]


def _caught_up(obs: LogObserver, lsn: int, views: list[str]) -> bool:
    if int(obs.meta("received_lsn", "0")) < lsn:
        return False  # the log itself has not reached it (with no view at all, too)
    rows = obs.consumers()
    for name in views:
        r = rows.get(name)
        if r is None or not caught_up_seq(obs, lsn, r.seq):
            return False
    return True


def caught_up_seq(obs: LogObserver, lsn: int, seq: int) -> bool:
    """A consumer that has applied the log up to record ``seq`` holds every transaction the
    source committed before ``lsn``."""
    if int(obs.meta("received_lsn", "0")) < lsn:
        return False
    if seq < int(obs.meta("trimmed_seq", "0")):
        return False
    return not obs.holds_unapplied(seq, lsn)
