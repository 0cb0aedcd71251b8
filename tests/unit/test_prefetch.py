"""The view's reader thread (runtime/prefetch.py) on a real embedded log: a transaction
committed while the view was busy is in the very next batch, batches stay within
``batch_events`` (plus the record that crosses it), and nothing is skipped or repeated."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.core.config_models import LogConfig
from syncline.core.events import Checkpoint, Position, RowChange, Transaction
from syncline.log.embedded.store import EmbeddedLogWriter
from syncline.runtime.prefetch import Prefetcher
from syncline.sources.postgres.pgoutput import encode_insert


def commit(w: EmbeddedLogWriter, lsn: int, rows: int) -> None:
    w.begin(lsn, Position(lsn), 0)
    for i in range(rows):
        w.add(encode_insert(1, (f"{lsn}-{i}",)))
    w.commit(Position(lsn), Position(lsn + 1), 0)
    w.sync()


def values(txns: list[Transaction]) -> list[str]:
    return [str(it.new[0]) for t in txns for it in t.items if isinstance(it, RowChange) and it.new]


def take(p: Prefetcher, want: int, timeout: float = 10.0) -> list[Transaction]:
    got: list[Transaction] = []
    deadline = time.monotonic() + timeout
    while sum(len(t.items) for t in got) < want and time.monotonic() < deadline:
        got += p.get(0.1) or []
    return got


def test_what_arrives_while_the_view_is_busy_is_in_the_next_batch(tmp_path: Path) -> None:
    w = EmbeddedLogWriter(tmp_path)
    commit(w, 100, 3)
    p = Prefetcher(LogConfig(path=str(tmp_path)), Checkpoint(), batch_events=6)
    try:
        first = take(p, 3)
        assert values(first) == ["100-0", "100-1", "100-2"]
        # the view is busy: three transactions commit meanwhile, one after the other
        for lsn in (200, 300, 400):
            commit(w, lsn, 2)
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while not p.full() and time.monotonic() < deadline:  # all 6 events read, none taken
            time.sleep(0.01)
        nxt = p.get(0.0)  # no waiting: all three were read while the view was busy
        assert nxt is not None and [t.commit_lsn for t in nxt] == [200, 300, 400]
        assert p.get(0.05) is None
    finally:
        p.close()
        w.close()


def test_batches_stay_within_batch_events_and_nothing_is_lost_or_repeated(tmp_path: Path) -> None:
    w = EmbeddedLogWriter(tmp_path)
    for lsn in range(1, 41):
        commit(w, lsn * 10, 5)
    p = Prefetcher(LogConfig(path=str(tmp_path)), Checkpoint(), batch_events=12)
    try:
        batches: list[list[Transaction]] = []
        deadline = time.monotonic() + 10
        while sum(len(t.items) for b in batches for t in b) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)  # a slow view: the reader fills the batch up to its bound
            got = p.get(0.1)
            if got:
                batches.append(got)
        assert all(sum(len(t.items) for t in b) <= 12 + 5 for b in batches)
        assert [t.seq for b in batches for t in b] == list(range(1, 41))
        assert values([t for b in batches for t in b]) == [
            f"{lsn * 10}-{i}" for lsn in range(1, 41) for i in range(5)
        ]
    finally:
        p.close()
        w.close()
