"""What a view worker tells the console (``stats.CONSUMER`` in the log's documents): its
stage times (:mod:`syncline.core.timing`) and the row changes it applied per table, counted
across restarts. Published every :data:`EVERY` seconds, best effort."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from syncline.core.events import Relation, RowChange, Transaction
from syncline.core.timing import Window
from syncline.log.base import LogControl

EVERY = 5.0
"""Seconds between two publications."""


def stats_key(consumer: str) -> str:
    return f"stats.{consumer}"


class ViewStats:
    def __init__(self, control: LogControl, consumer: str) -> None:
        self.control = control
        self.key = stats_key(consumer)
        prev = control.get_doc(self.key).get("tables")
        self.tables: Counter[str] = Counter(
            {str(k): int(v) for k, v in prev.items()} if isinstance(prev, dict) else {}
        )
        self.apply = Window()
        """Seconds per batch, applied and committed."""
        self.end_to_end = Window()
        """Source commit -> view commit, per committed batch (its last transaction)."""
        self._published = time.monotonic()

    def applied(self, txns: list[Transaction], relations: dict[int, Relation], seconds: float) -> None:
        """A batch of ``txns`` took ``seconds`` (``relations``: the tables as of its end)."""
        self.apply.add(time.time(), seconds)
        oids: Counter[int] = Counter()
        for t in txns:
            for it in t.items:
                if type(it) is RowChange:
                    oids[it.relid] += 1
        for oid, n in oids.items():
            rel = relations.get(oid)
            self.tables[rel.qualified if rel is not None else f"oid {oid}"] += n

    def committed(self, commit_time: int) -> None:
        """The view committed (and reported) up to a transaction that committed at
        ``commit_time`` (µs since the epoch) at the source."""
        now = time.time()
        self.end_to_end.add(now, now - commit_time / 1e6)

    def maybe_publish(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._published < EVERY:
            return
        self._published = time.monotonic()
        now = time.time()
        doc: dict[str, Any] = {
            "at": now,
            "apply_seconds": self.apply.summary(now),
            "end_to_end_seconds": self.end_to_end.summary(now),
            "tables": dict(self.tables),
        }
        self.control.put_doc(self.key, doc)
