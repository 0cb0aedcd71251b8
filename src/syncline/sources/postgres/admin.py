"""What the runtime asks of a PostgreSQL source outside the stream (``status``, ``wait``,
``/metrics``): the slot and retained WAL, the current position, which tables are not
followed yet, and the copies' progress the follower records in the log's metadata."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from syncline.core.config_models import Config
from syncline.core.errors import LogError, SynclineError, TablesNotFollowed, first_line
from syncline.log import open_observer
from syncline.log.base import LogObserver
from syncline.sources.postgres.lsn import parse_lsn


class PostgresAdmin:
    """:class:`syncline.sources.base.SourceAdmin` of a PostgreSQL source."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def status(self) -> dict[str, Any]:
        return source_status(self.cfg)

    def position(self) -> int:
        return source_position(self.cfg)

    def unfollowed_tables(self) -> list[str]:
        return unfollowed_tables(self.cfg)

    def followed_position(self, deadline: float = 0.0) -> int:
        return followed_position(self.cfg, deadline)

    def wait_followed(self, deadline: float, stop: threading.Event | None = None) -> list[str]:
        return wait_followed(self.cfg, deadline, stop)

    def copying(self, obs: LogObserver) -> dict[str, dict[str, Any]]:
        return copying_tables(obs)

    def first_copy_running(self, obs: LogObserver) -> bool:
        return first_copy_running(obs)

    def snapshot_rows(self, obs: LogObserver) -> int:
        return snapshot_rows(obs)


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
                    retained_wal_warning_bytes=cfg.source.retained_wal_warning,
                    retained_wal_over=row[3] is not None and int(row[3]) > cfg.source.retained_wal_warning,
                    wal_status=row[4],
                    current_lsn=row[5],
                )
    except Exception as e:  # the source may be down: status still answers
        first = first_line(e)
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
        first = first_line(e)
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
