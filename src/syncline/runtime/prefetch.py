"""Read and decode the log in a thread while the view applies: decoding is Python work,
applying mostly waits on the store (PostgreSQL, DuckDB release the GIL), so the two overlap.

The thread does not read one batch ahead and hold it: while the view applies, it keeps
adding the records that arrive to the batch it is building, up to ``batch_events``, and
the view takes all of it when it asks. A transaction committed while the view was busy is
thus in the very next batch, not in the one after a batch read before it arrived."""

from __future__ import annotations

import threading

from syncline.core.config_models import LogConfig
from syncline.core.errors import TransientViewError
from syncline.core.events import Checkpoint, Transaction
from syncline.log import open_cursor
from syncline.log.base import LOG_ID

IDLE_POLL = 0.005
"""How often an idle reader looks for new records (a look reads one row of the log's meta
table): bounds the delay a new transaction waits before a view sees it."""


class Prefetcher:
    def __init__(
        self,
        log: LogConfig,
        start: Checkpoint,
        batch_events: int,
        part: tuple[int, int] | None = None,
        log_id: str = "",
    ) -> None:
        self.log = log
        self.log_id = log_id
        """The log's id when the view started: an embedded log is emptied in place (a first
        snapshot started over), so each read is followed by a look at the id (records read
        before an id that did not change are that log's; a NATS log's numbers never repeat)."""
        self._check_id = bool(log_id) and log.kind != "nats"
        self.part = part
        self.start = start
        self.batch_events = batch_events
        self._cond = threading.Condition()
        self._pending: list[Transaction] = []
        self._events = 0
        self._error: BaseException | None = None
        self._at_end = False
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            reader = open_cursor(self.log)
        except BaseException as e:
            self._fail(e)
            return
        pos = self.start
        try:
            while not self._halt.is_set():
                with self._cond:
                    room = self.batch_events - self._events
                    if room <= 0:  # a full batch waits for the view: read nothing more
                        self._cond.wait(0.1)
                        continue
                txns = reader.read(pos, room, self.part)
                with self._cond:
                    self._at_end = not txns
                if not txns:
                    self._halt.wait(IDLE_POLL)
                    continue
                if self._check_id and reader.meta(LOG_ID) != self.log_id:
                    raise TransientViewError("the log was emptied or replaced while the view read it")
                pos = Checkpoint(txns[-1].seq, txns[-1].commit_lsn)
                with self._cond:
                    self._pending.extend(txns)
                    self._events += sum(len(t.items) for t in txns)
                    self._cond.notify_all()
        except BaseException as e:  # handed to the consumer, which decides
            self._fail(e)
        finally:
            reader.close()

    def _fail(self, e: BaseException) -> None:
        with self._cond:
            self._error = e
            self._cond.notify_all()

    def get(self, timeout: float) -> list[Transaction] | None:
        """Every record read since the last call (about ``batch_events`` events at most,
        whole records), or None if none arrived within ``timeout``."""
        with self._cond:
            if not self._pending and self._error is None and timeout > 0:
                self._cond.wait(timeout)
            if self._pending:  # what was read before a failure is applied first
                out, self._pending, self._events = self._pending, [], 0
                self._cond.notify_all()
                return out
            if self._error is not None:
                raise self._error
            return None

    def at_end(self) -> bool:
        """Whether the last read found the log's end and every record read was taken."""
        with self._cond:
            return self._at_end and not self._pending

    def full(self) -> bool:
        """Whether a whole batch (``batch_events``) is waiting to be taken."""
        with self._cond:
            return self._events >= self.batch_events

    def close(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        self.thread.join(5)
