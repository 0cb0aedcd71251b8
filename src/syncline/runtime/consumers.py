"""Consumer (view) progress recorded in the log database, for status, wait and retention.

Advisory: the authoritative checkpoint of a view is the one stored with its data."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from syncline.log.embedded.store import connect, init_schema


class ConsumerTable:
    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        init_schema(self.conn)
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA busy_timeout=2000")
        self._unreported = 0

    def update(self, name: str, kind: str, **fields: object) -> None:
        cols = {"kind": kind, "updated_at": time.time(), **fields}
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        sets = ", ".join(f"{k} = excluded.{k}" for k in cols)
        for attempt in range(5):
            try:
                self.conn.execute(
                    f"INSERT INTO consumers (name, {names}) VALUES (?, {marks})"  # noqa: S608
                    f" ON CONFLICT (name) DO UPDATE SET {sets}",
                    (name, *cols.values()),
                )
                return
            except sqlite3.OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.05)

    def add_applied(self, name: str, kind: str, events: int, seq: int, commit_lsn: int) -> None:
        """Best effort: when the log is busy the progress is kept and written next time."""
        self._unreported += events
        try:
            self.conn.execute(
                "INSERT INTO consumers (name, kind, seq, commit_lsn, state, error, applied_events,"
                " updated_at) VALUES (?, ?, ?, ?, 'running', '', ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET applied_events = applied_events + excluded.applied_events,"
                " seq = excluded.seq, commit_lsn = excluded.commit_lsn, state = 'running',"
                " error = '', updated_at = excluded.updated_at",
                (name, kind, seq, commit_lsn, self._unreported, time.time()),
            )
            self._unreported = 0
        except sqlite3.OperationalError:
            pass

    def remove_others(self, keep: set[str]) -> list[str]:
        gone = [
            str(r[0])
            for r in self.conn.execute("SELECT name FROM consumers")
            if str(r[0]) not in keep and not str(r[0]).startswith("_")
        ]
        for n in gone:
            self.conn.execute("DELETE FROM consumers WHERE name = ?", (n,))
        return gone

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
