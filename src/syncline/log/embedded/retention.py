"""Retention of the embedded log: trim records that every view and the compactor have
applied, nothing while a rebuild runs. The compacted log keeps the state a new view is
filled from."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path

from syncline.core import failpoints
from syncline.log.embedded.compact import CompactedView
from syncline.log.embedded.control import rebuilds_under_way
from syncline.log.embedded.store import connect, get_meta, set_meta

log = logging.getLogger("syncline.retention")


class Retention:
    def __init__(self, path: Path, compactor: object, views: list[str], interval: float = 5.0) -> None:
        self.path = path
        self.views = views
        self.compactor = compactor
        self.interval = interval
        self._last = 0.0
        self.conn = connect(path)

    def maybe_trim(self, compactor_seq: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        try:
            seqs = self.consumer_seqs()
            if any(v not in seqs for v in self.views):
                return  # a configured view has not registered yet: it may still need the log
            if self.rebuilding():
                return  # `syncline rebuild` reads the log from an older position
            # every registered view holds the log, configured here or not: a view added on
            # another host (its config newer than this process's) must not lose records
            views = list(seqs.values())
            upto = self.limit(min([compactor_seq, *views]))
            if views and isinstance(self.compactor, CompactedView):
                self.compactor.purge_tombstones(min(views))
            if upto > self.trimmed_seq():
                if isinstance(self.compactor, CompactedView) and not self.compactor.make_durable():
                    return  # the compacted log must hold what the trimmed records held, also
                    # after a power cut
                failpoints.hit("retention.before_trim")
                self.trim(upto)
        except sqlite3.OperationalError as e:  # busy: the capture holds a long write
            log.debug("retention skipped: %s", e)
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def limit(self, upto: int) -> int:
        """How far the log may be trimmed, given that every consumer applied ``upto``: all
        of it here, since the compacted log that fills a new view is on this host."""
        return upto

    def consumer_seqs(self) -> dict[str, int]:
        """The position each view reported (internal consumers left out)."""
        return {
            str(r[0]): int(r[1])
            for r in self.conn.execute(
                "SELECT name, seq FROM consumers WHERE name NOT LIKE '\\_%' ESCAPE '\\'"
            )
        }

    def rebuilding(self) -> bool:
        return rebuilds_under_way(self.conn)

    def trimmed_seq(self) -> int:
        return int(get_meta(self.conn, "trimmed_seq", "0"))

    def trim(self, upto: int) -> None:
        """Remove the records up to ``upto`` (every view and the compactor applied them)."""
        self.conn.execute("BEGIN IMMEDIATE")
        (events, newest) = self.conn.execute(
            "SELECT coalesce(sum(count), 0), max(commit_lsn) FROM records WHERE seq <= ?", (upto,)
        ).fetchone()
        if newest is not None:
            # a repair read at a snapshot older than this can no longer see every newer
            # change it must give way to: the capture refuses it (apply_repair_requests)
            set_meta(
                self.conn,
                "trimmed_commit_lsn",
                max(int(newest), int(get_meta(self.conn, "trimmed_commit_lsn", "0"))),
            )
        cur = self.conn.execute("DELETE FROM records WHERE seq <= ?", (upto,))
        set_meta(self.conn, "trimmed_seq", upto)
        # events ever captured = trimmed_events + those of the records kept (metrics)
        set_meta(self.conn, "trimmed_events", int(get_meta(self.conn, "trimmed_events", "0")) + events)
        self.conn.execute("COMMIT")
        if cur.rowcount:
            log.info("trimmed %d log records up to %d", cur.rowcount, upto)
