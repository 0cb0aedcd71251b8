"""The source interface, as the runtime sees a source outside its stream (``status``,
``wait``, ``/metrics``, ``/wait``). The stream itself is the capture of each source's folder
(``sources/postgres/capture.py``)."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from syncline.log.base import LogObserver


class SourceAdmin(Protocol):
    def status(self) -> dict[str, Any]:
        """The source's side for ``syncline status``: reachable, slot, retained WAL,
        positions (never raises: an unreachable source is a status)."""
        ...

    def position(self) -> int:
        """The source's current position: it covers every transaction committed so far."""
        ...

    def unfollowed_tables(self) -> list[str]:
        """Tables matching ``[source] tables`` whose changes are not all in the log yet
        (appeared since, or still being copied)."""
        ...

    def followed_position(
        self, deadline: float = 0.0, at: int | None = None, stop: threading.Event | None = None
    ) -> int:
        """The position ``wait`` waits for: ``at`` (:meth:`position` when None), once the
        capture has acted on every DDL committed so far and every table is followed (moved
        to :meth:`position` when it had to wait for either). Waits until ``deadline``, a
        ``time.monotonic()``; raises :class:`TablesNotFollowed` or
        :class:`CatalogueNotSeen` after it."""
        ...

    def wait_followed(self, deadline: float, stop: threading.Event | None = None) -> list[str]:
        """Wait for every table to be followed; those still not followed at ``deadline``."""
        ...

    def copying(self, obs: LogObserver) -> dict[str, dict[str, Any]]:
        """Tables being copied online: rows so far, estimate, rows/s, seconds left."""
        ...

    def first_copy_running(self, obs: LogObserver) -> bool:
        """The first start's copy (the initial snapshot) is under way."""
        ...

    def snapshot_rows(self, obs: LogObserver) -> int:
        """Rows the initial snapshot has copied so far."""
        ...

    def close(self) -> None:
        """Close the connections it keeps (a pooled admin's), if any."""
        ...


class SourceCapture(Protocol):
    """The stream of one source into the log: checks, slot and first copy, then changes in
    commit order until ``stop``. Raises a transient :class:`SourceError` for what a retry
    may cure (the caller backs off), a terminal one for what needs the operator."""

    def run(self, stop: threading.Event) -> None: ...
