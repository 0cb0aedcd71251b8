"""The embedded log's control plane (:class:`syncline.log.base.LogControl`): consumer (view)
progress, failures and retry requests, and error counts, in tables of ``log.db``.

Advisory: the authoritative checkpoint of a view is the one stored with its data."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from syncline.core.errors import LogError
from syncline.core.position import Position
from syncline.core.procs import pid_alive
from syncline.log.embedded.store import connect, init_schema

REBUILDS_DDL = (
    "CREATE TABLE IF NOT EXISTS rebuild_requests (view TEXT PRIMARY KEY, pid INTEGER NOT NULL,"
    " pause INTEGER NOT NULL DEFAULT 0, started REAL NOT NULL)"
)


def live_rebuilds(conn: sqlite3.Connection) -> dict[str, tuple[int, bool]]:
    """view -> (pid, pause asked) of the rebuilds under way (a dead rebuild's row is ignored)."""
    try:
        rows = conn.execute("SELECT view, pid, pause FROM rebuild_requests").fetchall()
    except sqlite3.OperationalError:  # no rebuild ever ran on this log
        return {}
    return {str(v): (int(p), bool(pa)) for v, p, pa in rows if pid_alive(int(p))}


def rebuilds_under_way(conn: sqlite3.Connection) -> bool:
    """For retention, on its own connection: a rebuild reads the log from an older position,
    so nothing is trimmed while one runs."""
    return bool(live_rebuilds(conn))


ERRORS_SCHEMA = """
CREATE TABLE IF NOT EXISTS errors (
    component TEXT NOT NULL,
    name TEXT NOT NULL,
    error TEXT NOT NULL,
    transient INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (component, name, error, transient)
)
"""
"""Errors met by the capture (``component`` = "capture") and the view workers ("view",
``name`` = the view), by exception class; a transient one was followed by a retry."""


def count_error(
    conn: sqlite3.Connection, component: str, name: str, error: BaseException, transient: bool
) -> None:
    """Best effort: a busy log loses the count, never the worker."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute(ERRORS_SCHEMA)
        conn.execute(
            "INSERT INTO errors (component, name, error, transient, n) VALUES (?, ?, ?, ?, 1)"
            " ON CONFLICT (component, name, error, transient) DO UPDATE SET n = n + 1",
            (component, name, type(error).__name__, int(transient)),
        )


class EmbeddedControl:
    """:class:`syncline.log.base.LogControl` on ``log.db``."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        init_schema(self.conn)
        # states and counters need no sync of their own, but this connection may run the
        # WAL's checkpoint, which must sync (OFF would copy the log's pages into log.db
        # unsynced and let the WAL be overwritten: a power cut then loses the log)
        self.conn.execute("PRAGMA synchronous=NORMAL")
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

    def count_error(self, name: str, error: BaseException, transient: bool) -> None:
        count_error(self.conn, "view", name, error, transient)

    def count_capture_error(self, error: BaseException, transient: bool) -> None:
        count_error(self.conn, "capture", "", error, transient)

    def add_applied(self, name: str, kind: str, events: int, seq: int, commit_lsn: Position) -> bool:
        """Best effort: when the log is busy the progress is kept and written next time
        (False: not written)."""
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
            return True
        except sqlite3.OperationalError:
            return False

    # -- failed views: what to do, retries ------------------------------------------------

    def set_failure(self, name: str, fixable: bool, action: str) -> None:
        self.conn.execute(
            "INSERT INTO view_control (name, fixable, action, retry_requested, next_retry)"
            " VALUES (?, ?, ?, 0, 0) ON CONFLICT (name) DO UPDATE SET fixable = excluded.fixable,"
            " action = excluded.action, next_retry = 0",
            (name, int(fixable), action),
        )

    def set_next_retry(self, name: str, at: float) -> None:
        self.conn.execute("UPDATE view_control SET next_retry = ? WHERE name = ?", (at, name))

    def failure(self, name: str) -> tuple[bool, str, bool]:
        """(fixable, action, retry requested) of a failed view."""
        row = self.conn.execute(
            "SELECT fixable, action, retry_requested FROM view_control WHERE name = ?", (name,)
        ).fetchone()
        return (bool(row[0]), str(row[1]), bool(row[2])) if row else (False, "", False)

    def request_retry(self, name: str) -> None:
        """``syncline retry NAME``: the supervisor restarts the failed view."""
        self.conn.execute(
            "INSERT INTO view_control (name, retry_requested) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET retry_requested = 1",
            (name,),
        )

    def clear_retry_request(self, name: str) -> None:
        self.conn.execute(
            "UPDATE view_control SET retry_requested = 0, next_retry = 0 WHERE name = ?", (name,)
        )

    def put_doc(self, key: str, doc: dict[str, Any]) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(
                "INSERT INTO docs (key, doc, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                (key, json.dumps(doc, separators=(",", ":")), time.time()),
            )

    def get_doc(self, key: str) -> dict[str, Any]:
        try:
            row = self.conn.execute("SELECT doc FROM docs WHERE key = ?", (key,)).fetchone()
            got = json.loads(row[0]) if row else {}
        except (sqlite3.Error, ValueError):
            return {}
        return got if isinstance(got, dict) else {}

    def clear_failure(self, name: str) -> None:
        self.conn.execute("DELETE FROM view_control WHERE name = ?", (name,))

    def remove_others(self, keep: set[str]) -> list[str]:
        gone = [
            str(r[0])
            for r in self.conn.execute("SELECT name FROM consumers")
            if str(r[0]) not in keep and not str(r[0]).startswith("_")
        ]
        for n in gone:
            self.conn.execute("DELETE FROM consumers WHERE name = ?", (n,))
        return gone

    def lease_view(self, name: str) -> str | None:
        """One host: the worker's file lock (``view-NAME.lock``) is the lease."""
        return None

    def release_view(self, name: str) -> None:
        pass

    def request_copy(self, tables: list[str]) -> None:
        self.conn.execute(
            "INSERT INTO copy_requests (tables, requested_at) VALUES (?, ?)",
            (json.dumps(tables), time.time()),
        )

    # -- rebuilds (``syncline rebuild``): one row per view, owned by a live process --------------

    def rebuilds(self) -> dict[str, bool]:
        return {v: pause for v, (_pid, pause) in live_rebuilds(self.conn).items()}

    def start_rebuild(self, view: str) -> None:
        self.conn.execute(REBUILDS_DDL)
        held = live_rebuilds(self.conn).get(view)
        if held is not None and held[0] != os.getpid():
            raise LogError(f"view {view} is being rebuilt by process {held[0]}")
        self.conn.execute(
            "INSERT OR REPLACE INTO rebuild_requests (view, pid, pause, started) VALUES (?, ?, 0, ?)",
            (view, os.getpid(), time.time()),
        )

    def pause_for_rebuild(self, view: str) -> None:
        self.conn.execute("UPDATE rebuild_requests SET pause = 1 WHERE view = ?", (view,))

    def end_rebuild(self, view: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("DELETE FROM rebuild_requests WHERE view = ? AND pid = ?", (view, os.getpid()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
