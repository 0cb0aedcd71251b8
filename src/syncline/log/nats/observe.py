""":class:`syncline.log.base.LogObserver` and retention for the NATS log: records from the
stream, positions and the control plane from the KV bucket (any host)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncline.core.config_models import LogConfig
from syncline.log.base import ConsumerRow, ErrorRow, FailureRow
from syncline.log.embedded.retention import Retention
from syncline.log.nats.client import Nats
from syncline.log.nats.compacted import publish, published_seq
from syncline.log.nats.control import consumer_rows, entries, error_rows, failure_rows, live_rebuilds
from syncline.log.nats.store import _events_upto, read_meta, record_header

log = logging.getLogger("syncline.retention")


class NatsObserver:
    def __init__(self, cfg: LogConfig) -> None:
        self.cfg = cfg
        self.nats = Nats(cfg.servers, name="syncline-observer")
        try:
            self.kv = self.nats.kv(cfg.stream)
        except BaseException:
            self.nats.close()
            raise

    def meta(self, key: str, default: str = "") -> str:
        return read_meta(self.nats, self.kv, key, default)

    def consumers(self) -> dict[str, ConsumerRow]:
        return consumer_rows(self.nats.run(entries(self.kv, "c")))

    def failures(self) -> dict[str, FailureRow]:
        return failure_rows(self.nats.run(entries(self.kv, "f")))

    def docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        return self.nats.run(entries(self.kv, f"d.{prefix}"))

    def errors(self) -> list[ErrorRow]:
        rows = error_rows(self.nats.run(entries(self.kv, "e")))
        return [
            ErrorRow(r.component, "" if r.name == "-" else r.name, r.error, r.transient, r.n) for r in rows
        ]

    def held(self) -> tuple[int, int]:
        st = self.nats.run(self.nats.js.stream_info(self.cfg.stream)).state
        n = int(st.messages or 0)
        return (int(st.first_seq or 0) if n else 0), n

    def size_bytes(self) -> int:
        return int(self.nats.run(self.nats.js.stream_info(self.cfg.stream)).state.bytes or 0)

    def events_after(self, seq: int, upto: int) -> tuple[int, int | None]:
        if upto <= seq:
            return 0, None
        first = self.nats.run(record_header(self.nats, self.cfg.stream, seq, after=True))
        if first is None or first[0] > upto:
            return 0, None
        before = first[1][8] - first[1][7]
        last = self.nats.run(_events_upto(self.nats, self.kv, self.cfg.stream, upto))
        return max(0, last - before), first[1][3]

    def holds_unapplied(self, seq: int, lsn: int) -> bool:
        hw = int(self.meta("hw", "0"))
        if hw <= seq:
            return False
        first = self.nats.run(record_header(self.nats, self.cfg.stream, seq, after=True))
        if first is None or first[0] > hw:
            return False
        return first[1][0] <= lsn or bool(first[1][5])

    def one_pass_snapshot_rows(self) -> int:
        """Not counted on this log (a PostgreSQL 13 one-pass snapshot shows no row count)."""
        return 0

    def copy_requests_pending(self) -> int:
        return len(self.nats.run(entries(self.kv, "copy")))

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        """Each read is one KV or stream read (positions move on between them; status
        reads the views before the log's end, so lag is never negative)."""
        yield

    def close(self) -> None:
        self.nats.close()


class NatsRetention(Retention):
    """Trims the stream (a purge below a seq) once every view and the compactor applied it."""

    def __init__(self, cfg: LogConfig, compactor: object, views: list[str], interval: float = 5.0) -> None:
        super().__init__(Path(cfg.path), compactor, views, interval)
        self.cfg = cfg
        self.nats = Nats(cfg.servers, name="syncline-retention")
        self.kv = self.nats.kv(cfg.stream)
        self._published_at = -1e9

    def limit(self, upto: int) -> int:
        """Never past the newest published compacted state: publish a new one first when
        the last is older than ``[log] compact_publish_interval``."""
        published = published_seq(self.nats, self.kv)
        if upto > published and time.monotonic() - self._published_at >= self.cfg.compact_publish_interval:
            self._published_at = time.monotonic()
            published = max(published, publish(self.cfg, self.nats, self.kv, self.path))
        return min(upto, published)

    def consumer_seqs(self) -> dict[str, int]:
        docs = self.nats.run(entries(self.kv, "c"))
        return {n: int(d.get("seq", 0)) for n, d in docs.items() if not n.startswith("_")}

    def rebuilding(self) -> bool:
        return bool(live_rebuilds(self.nats.run(entries(self.kv, "rebuild"))))

    def trimmed_seq(self) -> int:
        return int(read_meta(self.nats, self.kv, "trimmed_seq", "0"))

    def trim(self, upto: int) -> None:
        rec = self.nats.run(record_header(self.nats, self.cfg.stream, upto))
        if rec is None:
            return
        newest = max(rec[1][0], int(read_meta(self.nats, self.kv, "trimmed_commit_lsn", "0")))
        doc = {"trimmed_seq": upto, "trimmed_commit_lsn": newest, "trimmed_events": rec[1][8]}

        async def go() -> None:
            # the position first: a reader that finds records missing knows why
            await self.kv.put("trim", json.dumps(doc).encode())
            await self.nats.js._jsm.purge_stream(self.cfg.stream, seq=upto + 1)

        self.nats.run(go())
        log.info("trimmed the NATS stream %s up to record %d", self.cfg.stream, upto)
