"""Read and decode the next batches of the log in a thread while the view applies the
current one: decoding is Python work, applying mostly waits on the store (PostgreSQL,
DuckDB release the GIL), so the two overlap."""

from __future__ import annotations

import queue
import threading

from syncline.core.config_models import LogConfig
from syncline.core.events import Checkpoint, Transaction
from syncline.log import open_cursor


class Prefetcher:
    def __init__(
        self,
        log: LogConfig,
        start: Checkpoint,
        batch_events: int,
        depth: int = 1,
        part: tuple[int, int] | None = None,
    ) -> None:
        self.log = log
        self.part = part
        self.start = start
        self.batch_events = batch_events
        self.q: queue.Queue[list[Transaction] | BaseException] = queue.Queue(maxsize=depth)
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            reader = open_cursor(self.log)
        except BaseException as e:
            self.q.put(e)
            return
        pos = self.start
        try:
            while not self._halt.is_set():
                txns = reader.read(pos, self.batch_events, self.part)
                if not txns:
                    self._halt.wait(0.02)
                    continue
                pos = Checkpoint(txns[-1].seq, txns[-1].commit_lsn)
                while not self._halt.is_set():
                    try:
                        self.q.put(txns, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the consumer, which decides
            self.q.put(e)
        finally:
            reader.close()

    def get(self, timeout: float) -> list[Transaction] | None:
        """The next batch, or None if none arrived within ``timeout``."""
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._halt.set()
        self.thread.join(5)
