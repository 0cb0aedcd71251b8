"""The compacted state of a NATS log, readable from any host.

The compactor keeps the latest row per key in ``compact.db`` where the capture runs. Before
retention trims the stream, a consistent copy of that file (SQLite's online backup) goes to
a JetStream object store ``STREAM-compact`` (object ``state``, chunked, checked by digest),
and the KV key ``compact`` records its position: the stream is never trimmed past the
newest published copy, so a new view on another host fetches the copy, fills from it, and
follows the stream from its position (which the stream still holds)."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import nats.js.api
import nats.js.errors
from nats.js.kv import KeyValue

from syncline.core.config_models import LogConfig
from syncline.log.nats.client import Nats

log = logging.getLogger("syncline.compacted")

OBJECT = "state"


def bucket(stream: str) -> str:
    return f"{stream}-compact"


def published_seq(nats_: Nats, kv: KeyValue) -> int:
    """The position of the newest published copy (0: none)."""

    async def go() -> int:
        try:
            e = await kv.get("compact")
        except nats.js.errors.KeyNotFoundError:
            return 0
        return int(json.loads(e.value).get("seq", 0)) if e.value else 0

    return nats_.run(go())


def publish(cfg: LogConfig, nats_: Nats, kv: KeyValue, state_dir: Path) -> int:
    """Publish a consistent copy of ``state_dir/compact.db``; its position (0: nothing yet)."""
    src = state_dir / "compact.db"
    if not src.exists():
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=state_dir, prefix="compact-publish-") as tmp:
        copy = Path(tmp) / "compact.db"
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(str(copy))
            try:
                source.backup(target)  # one consistent state, the compactor going on meanwhile
                row = target.execute("SELECT seq, commit_lsn FROM position WHERE id = 1").fetchone()
            finally:
                target.close()
        finally:
            source.close()
        if row is None:
            return 0
        seq, clsn = int(row[0]), int(row[1])
        size = copy.stat().st_size

        async def go() -> None:
            js = nats_.js
            try:
                store = await js.object_store(bucket(cfg.stream))
            except nats.js.errors.BucketNotFoundError:
                store = await js.create_object_store(
                    bucket(cfg.stream),
                    config=nats.js.api.ObjectStoreConfig(
                        storage=nats.js.api.StorageType.FILE, replicas=cfg.replicas
                    ),
                )
            with open(copy, "rb") as f:
                await store.put(OBJECT, f)
            doc = {"seq": seq, "commit_lsn": clsn, "bytes": size, "at": time.time()}
            await kv.put("compact", json.dumps(doc).encode())

        nats_.run(go(), timeout=max(60.0, size / 2_000_000))
    log.info(
        "published the compacted state at log record %d (%d bytes) in %.1fs",
        seq,
        size,
        time.monotonic() - started,
    )
    return seq


def fetch(cfg: LogConfig, dest: Path) -> bool:
    """Fetch the newest published copy into ``dest/compact.db`` (False: none published)."""
    nats_ = Nats(cfg.servers, name="syncline-fetch-compacted")
    try:

        async def size() -> int | None:
            try:
                store = await nats_.js.object_store(bucket(cfg.stream))
                info = await store.get_info(OBJECT)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.ObjectNotFoundError):
                return None
            return int(info.size or 0)

        async def go() -> None:
            store = await nats_.js.object_store(bucket(cfg.stream))
            with open(dest / "compact.db", "wb") as f:
                await store.get(OBJECT, writeinto=f)

        n = nats_.run(size())
        if n is None:
            return False
        dest.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (dest / "compact.db").unlink()
        # a copy replaced while it is read loses its chunks: the read then times out (and
        # the view retries with the new copy)
        nats_.run(go(), timeout=60.0 + n / 1_000_000)
        log.info("fetched the compacted state (%d bytes)", n)
        return True
    finally:
        nats_.close()
