"""The durable log: its interface (:mod:`syncline.log.base`) and its backends, one folder
each (``embedded``: SQLite files in ``log.path``). Everything outside a backend's folder opens
the log through the functions here."""

from __future__ import annotations

import fcntl
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from syncline.core.config_models import LogConfig
from syncline.core.errors import LogError
from syncline.log.base import LogAppender, LogControl, LogCursor, LogObserver

if TYPE_CHECKING:
    from syncline.log.embedded.retention import Retention


NATS = "nats"


def log_exists(log: LogConfig) -> bool:
    """Whether a ``syncline run`` (or ``capture``) has created this log yet."""
    if log.kind == NATS:
        from syncline.log.nats.store import nats_log_exists

        return nats_log_exists(log)
    return (Path(log.path) / "log.db").exists()


def log_ready(log: LogConfig) -> bool:
    """:func:`log_exists`, and False while the log cannot be reached (for polling)."""
    try:
        return log_exists(log)
    except LogError:
        return False


def capture_running(log: LogConfig) -> bool:
    """Whether a capture appends to this log now (``run`` or ``capture``, on any host the
    log can tell)."""
    if log.kind == NATS:
        from syncline.log.nats.store import nats_capture_running

        return nats_capture_running(log)
    return _lock_held(Path(log.path) / "writer.lock")


def view_running(log: LogConfig, view: str) -> bool:
    """Whether the worker of ``view`` runs (on a NATS log: here, or by its last report)."""
    if _lock_held(Path(log.path) / f"view-{view}.lock"):
        return True
    if log.kind == NATS:
        obs = open_observer(log)
        try:
            row = obs.consumers().get(view)
        finally:
            obs.close()
        return row is not None and row.state == "running"
    return False


def _lock_held(lockfile: Path) -> bool:
    """Whether another process holds ``lockfile`` (flock)."""
    if not lockfile.exists():
        return False
    with open(lockfile, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def open_appender(log: LogConfig) -> LogAppender:
    """The log's single appender (:class:`syncline.log.base.LogLocked` while another
    process holds it)."""
    if log.kind == NATS:
        from syncline.log.nats.store import NatsLogWriter

        return NatsLogWriter(log)
    from syncline.log.embedded.store import EmbeddedLogWriter

    return EmbeddedLogWriter(Path(log.path))


def open_cursor(log: LogConfig) -> LogCursor:
    """A reader of the log's records (one per view; not shared between threads)."""
    if log.kind == NATS:
        from syncline.log.nats.store import NatsLogReader

        return NatsLogReader(log)
    from syncline.log.embedded.store import EmbeddedLogReader

    return EmbeddedLogReader(Path(log.path))


def open_control(log: LogConfig) -> LogControl:
    """The log's control plane (creates the log's bookkeeping when missing)."""
    if log.kind == NATS:
        from syncline.log.nats.control import NatsControl

        return NatsControl(log)
    from syncline.log.embedded.control import EmbeddedControl

    return EmbeddedControl(Path(log.path))


def open_observer(log: LogConfig) -> LogObserver:
    """A read-only look at the log (:class:`syncline.log.base.LogBusy` while it is being
    created; :class:`LogError` when there is none)."""
    if log.kind == NATS:
        from syncline.log.nats.observe import NatsObserver

        return NatsObserver(log)
    from syncline.log.embedded.observe import EmbeddedObserver

    return EmbeddedObserver(Path(log.path))


def open_retention(log: LogConfig, compactor: object, views: list[str]) -> Retention:
    """Trims what every view and the compactor applied (``retention = "applied"``)."""
    if log.kind == NATS:
        from syncline.log.nats.observe import NatsRetention

        return NatsRetention(log, compactor, views)
    from syncline.log.embedded.retention import Retention

    return Retention(Path(log.path), compactor, views)


def count_capture_error(log: LogConfig, error: BaseException, transient: bool) -> None:
    """Best effort, for the capture: count ``error`` when the log exists (and answers)."""
    if not log_ready(log):
        return
    with suppress(Exception):
        control = open_control(log)
        try:
            control.count_capture_error(error, transient)
        finally:
            control.close()
