"""What the runtime asks of a PostgreSQL source outside the stream (``status``, ``wait``,
``/metrics``): the slot and retained WAL, the current position, which tables are not
followed yet, and the copies' progress the follower records in the log's metadata."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from syncline.core.config_models import Config
from syncline.core.errors import (
    CatalogueNotSeen,
    LogError,
    SourceUnreachable,
    SynclineError,
    TablesNotFollowed,
    first_line,
)
from syncline.log import open_observer
from syncline.log.base import LogObserver
from syncline.sources.postgres.lsn import parse_lsn


class PostgresAdmin:
    """:class:`syncline.sources.base.SourceAdmin` of a PostgreSQL source."""

    def __init__(self, cfg: Config, pool_size: int = 0) -> None:
        self.cfg = cfg
        self.sessions = SourceSessions(cfg, pool_size)

    def close(self) -> None:
        self.sessions.close()

    def status(self) -> dict[str, Any]:
        return source_status(self.cfg)

    def position(self) -> int:
        return source_position(self.cfg)

    def unfollowed_tables(self) -> list[str]:
        return unfollowed_tables(self.cfg)

    def followed_position(
        self, deadline: float = 0.0, at: int | None = None, stop: threading.Event | None = None
    ) -> int:
        return followed_position(self.cfg, deadline, at, stop, self.sessions)

    def wait_followed(self, deadline: float, stop: threading.Event | None = None) -> list[str]:
        return wait_followed(self.cfg, deadline, stop, self.sessions)

    def copying(self, obs: LogObserver) -> dict[str, dict[str, Any]]:
        return copying_tables(obs)

    def first_copy_running(self, obs: LogObserver) -> bool:
        return first_copy_running(obs)

    def snapshot_rows(self, obs: LogObserver) -> int:
        return snapshot_rows(obs)


class SourceSessions:
    """Where ``wait``'s checks get their source connections: a new one for each check (the
    CLI and the Python API wait once), or, with ``pool_size``, one borrowed from a pool that
    keeps up to that many open while waits come (the HTTP server: a new connection cost
    about 10 ms and a PostgreSQL backend per wait, so a burst of waits could take every
    connection the source allows). A pooled connection is checked before it is lent (the
    source may have restarted) and closed after a minute unused."""

    def __init__(self, cfg: Config, pool_size: int = 0, held: Any = None) -> None:
        self.cfg = cfg
        self.pool_size = pool_size
        self.held = held
        """One connection lent for every use (a check's steps, without a pool)."""
        self._pool: Any = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self, deadline: float) -> Iterator[Any]:
        """A source connection (autocommit, empty search_path) until the block ends; a
        pooled one is awaited until ``deadline`` (a ``time.monotonic()``), half a second
        at least."""
        from syncline.sources.postgres import catalog as cat

        if self.held is not None:
            with _lost_is_unreachable():
                yield self.held
            return
        if self.pool_size <= 0:
            conn = cat.connect(self.cfg.source.dsn.value)
            try:
                with _lost_is_unreachable():
                    yield conn
            finally:
                conn.close()
            return
        from psycopg_pool import PoolTimeout

        pool = self._open()
        try:
            conn = pool.getconn(timeout=max(0.5, deadline - time.monotonic()))
        except PoolTimeout:
            # a source that cannot be reached says why (SourceUnreachable); else all are busy
            cat.connect(self.cfg.source.dsn.value).close()
            raise SynclineError(
                f"all {self.pool_size} source connections for waits are busy; try again"
            ) from None
        try:
            with _lost_is_unreachable():
                yield conn
        finally:
            pool.putconn(conn)

    def _open(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                from syncline.sources.postgres.replication import session_conninfo

                self._pool = ConnectionPool(
                    session_conninfo(self.cfg.source.dsn.value),
                    kwargs={"autocommit": True},
                    min_size=0,
                    max_size=self.pool_size,
                    max_idle=60,
                    configure=_empty_search_path,
                    check=ConnectionPool.check_connection,
                    name="syncline-wait",
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2)


@contextlib.contextmanager
def _lost_is_unreachable() -> Iterator[None]:
    """A connection lost while in use (the source stopped) is the same clear error as one
    that could not be made."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as e:
        raise SourceUnreachable(f"lost the connection to the source database: {first_line(e)}") from e


def _empty_search_path(conn: Any) -> None:
    conn.execute("SET search_path = ''")


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


def _unfollowed(
    conn: Any, cfg: Config, obs: LogObserver | None = None, found: list[Any] | None = None
) -> list[str]:
    """``obs``: read the log through it (else one opened here); ``found``: the tables
    :func:`~syncline.sources.postgres.catalog.discover_tables` just found (else looked up)."""
    from syncline.sources.postgres import catalog as cat
    from syncline.sources.postgres.follow import usable

    published = cat.publication_tables(conn, cfg.source.publication)
    found = cat.discover_tables(conn, cfg.source.tables) if found is None else found
    tables = [t for t in found if usable(t)]
    copying: set[str] = set()
    state = None
    with contextlib.suppress(LogError):
        own = obs is None
        obs = open_observer(cfg.log) if obs is None else obs
        try:
            state = obs.meta("state")
            copying = set(copying_tables(obs))
        finally:
            if own:
                obs.close()
    if published is None or state != "streaming":
        # the first start has not queued its copies yet: no table is followed
        return sorted(t.qualified for t in tables)
    # tables without a key are never followed (the capture warns about them)
    return sorted(t.qualified for t in tables if t.qualified not in published or t.qualified in copying)


def wait_followed(
    cfg: Config,
    deadline: float,
    stop: threading.Event | None = None,
    sessions: SourceSessions | None = None,
    obs: LogObserver | None = None,
) -> list[str]:
    """Wait (until the ``time.monotonic()`` deadline) for the capture to follow every
    table matching ``source.tables`` (new tables are added and copied within seconds);
    return those still not followed. ``obs``: read the log through it (else one is opened
    at each look)."""
    sessions = sessions or SourceSessions(cfg)
    while True:
        with sessions.connection(deadline) as conn:
            missing = _unfollowed(conn, cfg, obs)
        if not missing or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return missing
        time.sleep(0.2)


def unfollowed_tables(cfg: Config) -> list[str]:
    """Tables of the source that match ``[source] tables`` and are not followed yet: not in
    the publication (created after ``syncline run`` started) or still being copied; every
    matching table until the first start has queued its copies."""
    with SourceSessions(cfg).connection(0.0) as conn:
        return _unfollowed(conn, cfg)


def followed_position(
    cfg: Config,
    deadline: float = 0.0,
    at: int | None = None,
    stop: threading.Event | None = None,
    sessions: SourceSessions | None = None,
) -> int:
    """For ``wait``: the position to wait for once the capture has acted on the catalogue
    as it is now (:func:`catalogue_seen`) and every table is followed: ``at`` (the source's
    position now when None), moved to the source's position now when the capture had DDL
    or new tables to act on first (what it logged for them comes after ``at``). Raises
    :class:`TablesNotFollowed` when some are still not followed at ``deadline``, else
    :class:`CatalogueNotSeen` when the capture has not acted on a DDL by then."""
    sessions = sessions or SourceSessions(cfg)
    if sessions.pool_size <= 0 and sessions.held is None:  # one connection for every step
        with sessions.connection(deadline) as conn:
            return followed_position(cfg, deadline, at, stop, SourceSessions(cfg, held=conn))
    obs = None
    with contextlib.suppress(LogError):  # no log yet: the rest of the wait tells
        obs = open_observer(cfg.log)
    try:
        try:
            moved, found = catalogue_seen(sessions, cfg, deadline, stop, obs)
        except CatalogueNotSeen:
            with sessions.connection(deadline) as conn:
                missing = _unfollowed(conn, cfg, obs)
            if missing:  # the likelier cause, and the one that names the tables
                raise TablesNotFollowed(missing) from None
            raise
        with sessions.connection(deadline) as conn:
            unfollowed = _unfollowed(conn, cfg, obs, found)
        if unfollowed:
            still = wait_followed(cfg, deadline, stop, sessions, obs)
            if still:
                raise TablesNotFollowed(still)
            moved = True
        if at is not None and not moved:
            return at
        with sessions.connection(deadline) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    finally:
        if obs is not None:
            obs.close()
    assert row is not None
    now = parse_lsn(str(row[0]))
    return now if at is None else max(at, now)


def catalogue_seen(
    sessions: SourceSessions,
    cfg: Config,
    deadline: float,
    stop: threading.Event | None,
    obs: LogObserver | None,
) -> tuple[bool, list[Any]]:
    """Wait (until the ``time.monotonic()`` deadline) for the capture to have acted on the
    catalogue as it is now: a DDL that committed before this call and rewrote rows (``ALTER
    COLUMN TYPE``, ``ADD COLUMN`` with a default), dropped or renamed a table or column is
    then in the stream or in a queued copy. The capture polls once a second, so a wait
    right after such a DDL takes up to a second more; without DDL it costs two catalogue
    queries. A capture from before this check publishes no mark, and without a log
    (``obs`` None) there is nothing to compare: nothing to wait for. Returns whether it had
    to wait, and the tables it found last; raises :class:`CatalogueNotSeen` at the deadline.
    A connection is held only while it looks, not while it waits."""
    from syncline.sources.postgres import catalog as cat
    from syncline.sources.postgres.follow import CATALOGUE_KEY

    waited = False
    while True:
        with sessions.connection(deadline) as conn:
            found = cat.discover_tables(conn, cfg.source.tables)
            if obs is None:
                return waited, found
            seen = None
            with contextlib.suppress(LogError):
                seen = obs.meta(CATALOGUE_KEY)
            if seen is None or seen == cat.catalogue_mark(conn, found):
                return waited, found
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            raise CatalogueNotSeen()
        waited = True
        time.sleep(0.1)


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
