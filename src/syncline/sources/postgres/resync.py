"""``syncline resync``: after a lost or invalidated slot, a new slot and an online copy.

The changes between the old slot's last confirmed position and the new slot are gone from
the WAL, so every followed table is copied again by watermark chunks (emptied in each view
with its first chunk, since rows deleted meanwhile must go). The views keep their data
until then. It only ever happens when the operator asks; ``run`` refuses a lost slot.
"""

from __future__ import annotations

import logging
from pathlib import Path

from syncline.core.config_models import Config
from syncline.core.errors import SourceError
from syncline.log import open_appender
from syncline.log.base import LogLocked
from syncline.sources.postgres import catalog as cat
from syncline.sources.postgres.follow import queued_copies, usable
from syncline.sources.postgres.lsn import format_lsn
from syncline.sources.postgres.replication import ReplicationConnection

log = logging.getLogger("syncline.resync")


def resync(cfg: Config, force: bool = False) -> str:
    """Replace the slot and queue a copy of every followed table; return a summary."""
    path = Path(cfg.log.path)
    try:
        writer = open_appender(cfg.log)
    except LogLocked:
        raise SourceError(f"`syncline run` holds the log at {path}: stop it, then resync") from None
    try:
        if writer.meta("state") != "streaming":
            raise SourceError("nothing to resync: this log never streamed (`syncline run` takes a snapshot)")
        name = cfg.source.slot
        conn = cat.connect(cfg.source.dsn.value)
        try:
            info = cat.server_info(conn)
            cat.check_server(info, cfg.source.allow_superuser)
            slot = cat.slot_info(conn, name)
            if slot is not None and slot.wal_status != "lost" and not force:
                raise SourceError(
                    f"replication slot {name!r} is healthy (wal_status = {slot.wal_status}): resync is "
                    "for a lost or invalidated slot; --force resyncs anyway"
                )
            if slot is not None and slot.active_pid is not None:
                raise SourceError(f"replication slot {name!r} is in use (pid {slot.active_pid})")
            tables = [t for t in cat.discover_tables(conn, cfg.source.tables) if usable(t)]
            if cat.publication_tables(conn, cfg.source.publication) is None:
                cat.ensure_publication(conn, cfg.source.publication, tables, info.version)
            repl = ReplicationConnection(cfg.source.dsn.value)
            try:
                if slot is not None:
                    repl.drop_slot(name)
                created = repl.create_slot(name, failover=cfg.source.failover)
            finally:
                repl.close()
        finally:
            conn.close()
        writer.set_meta_now(consistent_lsn=created.consistent_point, **queued_copies(tables, reset=True))
    finally:
        writer.close()
    return (
        f"new slot {name!r} at {format_lsn(created.consistent_point)}; {len(tables)} tables are copied "
        "again by the next `syncline run` (each view keeps its data until its table is refilled)"
    )
