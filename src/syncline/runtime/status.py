"""What ``syncline status`` and ``syncline wait`` read: the log database (capture state,
consumer positions) and the source (slot, retained WAL). Works whether or not ``run`` runs."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from syncline.core.config_models import Config
from syncline.core.errors import LogError, SynclineError, TablesNotFollowed, ViewFailed
from syncline.core.lsn import format_lsn, parse_lsn
from syncline.log.embedded.store import connect, get_meta


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
    with contextlib.suppress(LogError, sqlite3.Error):
        log_conn = connect(Path(cfg.log.path), readonly=True)
        try:
            state = get_meta(log_conn, "state")
            copying = set(copying_tables(log_conn))
        finally:
            log_conn.close()
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


def error_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, int]]:
    """(component, name) -> {"retries": transient errors, "errors": terminal ones}."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    try:
        rows = conn.execute(
            "SELECT component, name, transient, sum(n) FROM errors GROUP BY 1, 2, 3"
        ).fetchall()
    except sqlite3.OperationalError:  # no error recorded yet (the table is created lazily)
        return out
    for comp, name, transient, n in rows:
        c = out.setdefault((str(comp), str(name)), {"retries": 0, "errors": 0})
        c["retries" if transient else "errors"] += int(n)
    return out


def first_copy_running(conn: sqlite3.Connection) -> bool:
    """The first start's copy (the initial snapshot) is under way."""
    from syncline.sources.postgres.follow import META_KEY

    if get_meta(conn, "state") == "snapshotting":
        return True
    try:
        doc = json.loads(get_meta(conn, META_KEY) or "{}")
        return any(bool(c.get("first")) for c in doc.values())
    except (ValueError, AttributeError):
        return False


def snapshot_rows(conn: sqlite3.Connection) -> int:
    """Rows the initial snapshot has copied into the log (so far, while it runs): the first
    start's watermark copy, or (PostgreSQL 13) the one-pass snapshot while the log still
    holds it (its first records)."""
    from syncline.sources.postgres.follow import FIRST_ROWS_KEY

    counted = get_meta(conn, FIRST_ROWS_KEY)
    if counted:
        return int(counted)
    end = "coalesce((SELECT min(seq) FROM records WHERE snapshot = 0), 9223372036854775807)"
    first, last, n = conn.execute(
        "SELECT min(seq), max(seq), coalesce(sum(count), 0) FROM records"  # noqa: S608 - fixed text
        f" WHERE snapshot = 1 AND seq < {end}"
    ).fetchone()
    if not n:
        return 0
    # each table's shape (a Relation message) is counted among the records' messages
    (shapes,) = conn.execute(
        "SELECT count(*) FROM relations WHERE seq BETWEEN ? AND ?", (first, last)
    ).fetchone()
    return max(0, int(n) - int(shapes))


def capture_state(conn: sqlite3.Connection) -> str:
    """The capture's recorded state: ``starting`` (connecting, checking), ``snapshotting``,
    ``streaming``, ``retrying``, ``failed`` or ``stopped``. (A log written by an earlier
    version may lack the record: past ``new``, it was started and not stopped since.)"""
    got = get_meta(conn, "capture_state")
    if got:
        return got
    return "stopped" if (get_meta(conn, "state") or "new") == "new" else "starting"


def log_status(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    first, _last, n = conn.execute("SELECT min(seq), max(seq), count(*) FROM records").fetchone()
    size = sum(f.stat().st_size for f in path.glob("log.db*") if f.is_file())
    state = get_meta(conn, "state") or "new"
    errs = error_counts(conn).get(("capture", ""), {"retries": 0, "errors": 0})
    return {
        "kind": "embedded",
        "path": str(path),
        "state": state,
        "capture_state": capture_state(conn),
        "capture_error": get_meta(conn, "capture_error") or None,
        "first_seq": int(first or 0),
        "last_seq": int(get_meta(conn, "hw", "0")),
        "records": int(n or 0),
        "last_commit_lsn": _lsn(int(get_meta(conn, "last_commit_lsn", "0"))),
        "received_lsn": _lsn(int(get_meta(conn, "received_lsn", "0"))),
        "size_bytes": size,
        "trimmed_seq": int(get_meta(conn, "trimmed_seq", "0")),
        "repairs": int(get_meta(conn, "repairs", "0")),
        "last_repair_seq": int(get_meta(conn, "last_repair_seq", "0")) or None,
        "snapshot_rows": snapshot_rows(conn) if first_copy_running(conn) else None,
        "capture_retries": errs["retries"],
        "capture_errors": errs["errors"],
        "copying": copying_tables(conn),
    }


def copying_tables(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Tables being copied by watermark chunks (new, changed by DDL, or asked for by
    ``syncline snapshot``): rows copied so far, the table's estimated rows, rows/s and the
    seconds left at that rate (None until known)."""
    from syncline.sources.postgres.follow import META_KEY

    saved = get_meta(conn, META_KEY)
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


def view_status(conn: sqlite3.Connection, cfg: Config) -> dict[str, Any]:
    hw = int(get_meta(conn, "hw", "0"))
    rows = {
        str(r[0]): r
        for r in conn.execute(
            "SELECT name, kind, seq, commit_lsn, state, error, applied_events, updated_at FROM consumers"
        )
    }
    out: dict[str, Any] = {}
    now = time.time()
    errors = error_counts(conn)
    control: dict[str, tuple[bool, str, float]] = {}
    with contextlib.suppress(sqlite3.OperationalError):  # a log older than view_control
        for name, fixable, action, next_retry in conn.execute(
            "SELECT name, fixable, action, next_retry FROM view_control"
        ):
            control[str(name)] = (bool(fixable), str(action), float(next_retry))
    for v in cfg.views:
        r = rows.get(v.name)
        seq = int(r[2]) if r else 0
        lag_events, oldest = conn.execute(
            "SELECT coalesce(sum(count), 0), min(commit_time) FROM records WHERE seq > ? AND seq <= ?",
            (seq, hw),
        ).fetchone()
        lag_s = max(0.0, now - int(oldest) / 1e6) if lag_events and oldest else 0.0
        out[v.name] = {
            "kind": v.kind,
            "state": (str(r[4]) if r else "new"),
            "applied_lsn": _lsn(int(r[3])) if r else None,
            "applied_seq": seq,
            "lag_seconds": round(lag_s, 3),
            "lag_events": int(lag_events),
            "applied_events": int(r[6]) if r else 0,
            "error": (str(r[5]) or None) if r else None,
            **errors.get(("view", v.name), {"retries": 0, "errors": 0}),
        }
        c = control.get(v.name)
        if r and str(r[4]) == "failed" and c is not None:
            out[v.name]["action"] = c[1] or None
            out[v.name]["next_retry_seconds"] = round(max(0.0, c[2] - now), 1) if c[0] and c[2] else None
    return out


def status(cfg: Config, with_source: bool = True) -> dict[str, Any]:
    path = Path(cfg.log.path)
    result: dict[str, Any] = {}
    result["source"] = source_status(cfg) if with_source else {}
    if (path / "log.db").exists():
        conn = connect(path, readonly=True)
        try:
            result["log"] = log_status(conn, path)
            result["views"] = view_status(conn, cfg)
            return result
        except sqlite3.OperationalError:  # `run` is creating the log right now
            pass
        finally:
            conn.close()
    result["log"] = {"kind": cfg.log.kind, "path": str(path), "state": "new"}
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
    (False). One read-only connection for the whole wait. Raises :class:`ViewFailed` at once
    when one of ``views`` has failed."""
    names = list(views)
    path = Path(cfg.log.path)
    deadline = time.monotonic() + timeout
    conn: sqlite3.Connection | None = None
    try:
        while True:
            if conn is None and (path / "log.db").exists():
                with contextlib.suppress(LogError, sqlite3.Error):
                    conn = connect(path, readonly=True)
            if conn is not None:
                with contextlib.suppress(sqlite3.OperationalError):  # the log is being created
                    if _caught_up(conn, lsn, names):
                        return True
                    _raise_failed(conn, names)
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if stop is not None:
                stop.wait(min(interval, left))
            else:
                time.sleep(min(interval, left))
    finally:
        if conn is not None:
            conn.close()


def applied_positions(cfg: Config, views: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each named view's recorded state and applied position (for ``/wait``'s answer)."""
    names = list(views)
    out: dict[str, dict[str, Any]] = {n: {"state": "new", "applied_lsn": None} for n in names}
    path = Path(cfg.log.path)
    if not (path / "log.db").exists():
        return out
    with contextlib.suppress(LogError, sqlite3.Error):
        conn = connect(path, readonly=True)
        try:
            for name, state, clsn in conn.execute("SELECT name, state, commit_lsn FROM consumers"):
                if name in out:
                    out[name] = {"state": str(state), "applied_lsn": _lsn(int(clsn))}
        finally:
            conn.close()
    return out


def views_caught_up(cfg: Config, lsn: int, views: list[str]) -> bool:
    """True once the log has seen everything up to ``lsn`` and each view has applied every
    transaction that committed at or before it."""
    path = Path(cfg.log.path)
    if not (path / "log.db").exists():
        return False
    conn = connect(path, readonly=True)
    try:
        return _caught_up(conn, lsn, views)
    except sqlite3.OperationalError:  # the log is being created
        return False
    finally:
        conn.close()


def _raise_failed(conn: sqlite3.Connection, views: list[str]) -> None:
    """Raise :class:`ViewFailed` for the first of ``views`` recorded as failed."""
    for name in views:
        row = conn.execute("SELECT state, error FROM consumers WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] == "failed":
            raise ViewFailed(name, str(row[1] or ""))


def views_behind(cfg: Config, lsn: int, views: Iterable[str]) -> list[str]:
    """The views of ``views`` that have not applied everything committed up to ``lsn``
    (all of them when the log cannot be read)."""
    return [n for n in views if not views_caught_up(cfg, lsn, [n])]


def _caught_up(conn: sqlite3.Connection, lsn: int, views: list[str]) -> bool:
    if int(get_meta(conn, "received_lsn", "0")) < lsn:
        return False  # the log itself has not reached it (with no view at all, too)
    for name in views:
        row = conn.execute("SELECT seq FROM consumers WHERE name = ?", (name,)).fetchone()
        if row is None or not caught_up_seq(conn, lsn, int(row[0])):
            return False
    return True


def caught_up_seq(conn: sqlite3.Connection, lsn: int, seq: int) -> bool:
    """A consumer that has applied the log up to record ``seq`` holds every transaction the
    source committed before ``lsn``."""
    if int(get_meta(conn, "received_lsn", "0")) < lsn:
        return False
    if seq < int(get_meta(conn, "trimmed_seq", "0")):
        return False
    # an unapplied snapshot holds every transaction committed before its position
    pending = conn.execute(
        "SELECT 1 FROM records WHERE seq > ? AND (commit_lsn <= ? OR snapshot = 1) LIMIT 1",
        (seq, lsn),
    ).fetchone()
    return pending is None
