""":class:`syncline.log.base.LogObserver` on ``log.db``: a read-only SQLite connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from syncline.core.errors import LogError
from syncline.core.position import Position
from syncline.log.base import ConsumerRow, ErrorRow, FailureRow, LogBusy
from syncline.log.embedded.store import connect, get_meta

P = ParamSpec("P")
R = TypeVar("R")


def _busy(fn: Callable[P, R]) -> Callable[P, R]:
    """sqlite3's "no such table" (the log is being created) and "locked" as LogBusy."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as e:
            raise LogBusy(f"the log cannot be read right now: {e}") from e

    return wrapper


class EmbeddedObserver:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = connect(path, readonly=True)
        except sqlite3.Error as e:
            raise LogBusy(f"the log cannot be opened right now: {e}") from e

    @_busy
    def meta(self, key: str, default: str = "") -> str:
        return get_meta(self.conn, key, default)

    @_busy
    def consumers(self) -> dict[str, ConsumerRow]:
        return {
            str(r[0]): ConsumerRow(
                str(r[0]),
                str(r[1]),
                int(r[2]),
                Position(int(r[3])),
                str(r[4]),
                str(r[5] or ""),
                int(r[6]),
                float(r[7]),
            )
            for r in self.conn.execute(
                "SELECT name, kind, seq, commit_lsn, state, error, applied_events, updated_at FROM consumers"
            )
        }

    @_busy
    def failures(self) -> dict[str, FailureRow]:
        if not self._has_table("view_control"):  # a log older than view_control
            return {}
        return {
            str(name): FailureRow(bool(fixable), str(action), float(next_retry))
            for name, fixable, action, next_retry in self.conn.execute(
                "SELECT name, fixable, action, next_retry FROM view_control"
            )
        }

    @_busy
    def errors(self) -> list[ErrorRow]:
        if not self._has_table("errors"):  # created with the first error
            return []
        return [
            ErrorRow(str(c), str(n), str(e), bool(t), int(k))
            for c, n, e, t, k in self.conn.execute("SELECT component, name, error, transient, n FROM errors")
        ]

    @_busy
    def held(self) -> tuple[int, int]:
        first, n = self.conn.execute("SELECT min(seq), count(*) FROM records").fetchone()
        return int(first or 0), int(n or 0)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.glob("log.db*") if f.is_file())

    @_busy
    def events_after(self, seq: int, upto: int) -> tuple[int, int | None]:
        n, oldest = self.conn.execute(
            "SELECT coalesce(sum(count), 0), min(commit_time) FROM records WHERE seq > ? AND seq <= ?",
            (seq, upto),
        ).fetchone()
        return int(n), (int(oldest) if oldest is not None else None)

    @_busy
    def holds_unapplied(self, seq: int, lsn: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM records WHERE seq > ? AND (commit_lsn <= ? OR snapshot = 1) LIMIT 1", (seq, lsn)
        ).fetchone()
        return row is not None

    @_busy
    def one_pass_snapshot_rows(self) -> int:
        end = "coalesce((SELECT min(seq) FROM records WHERE snapshot = 0), 9223372036854775807)"
        first, last, n = self.conn.execute(
            "SELECT min(seq), max(seq), coalesce(sum(count), 0) FROM records"  # noqa: S608 - fixed text
            f" WHERE snapshot = 1 AND seq < {end}"
        ).fetchone()
        if not n:
            return 0
        # each table's shape (a Relation message) is counted among the records' messages
        (shapes,) = self.conn.execute(
            "SELECT count(*) FROM relations WHERE seq BETWEEN ? AND ?", (first, last)
        ).fetchone()
        return max(0, int(n) - int(shapes))

    @_busy
    def copy_requests_pending(self) -> int:
        (n,) = self.conn.execute("SELECT count(*) FROM copy_requests").fetchone()
        return int(n)

    @contextmanager
    def consistent(self) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as e:
            raise LogBusy(str(e)) from e
        try:
            yield
        finally:
            with suppress(sqlite3.Error):
                self.conn.execute("COMMIT")

    @_busy
    def docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        if not self._has_table("docs"):  # a log older than the console's documents
            return {}
        out: dict[str, dict[str, Any]] = {}
        head = prefix + "."
        for key, doc in self.conn.execute(
            "SELECT key, doc FROM docs WHERE substr(key, 1, ?) = ?", (len(head), head)
        ):
            with suppress(ValueError):
                got = json.loads(doc)
                if isinstance(got, dict):
                    out[str(key)[len(head) :]] = got
        return out

    def _has_table(self, name: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error as e:
            raise LogError(str(e)) from e
