"""What the capture logs at one of its WAL markers (a watermark, a dropped table) commits
just before the marker's LSN. pgoutput gives a logical message the *end* of its record, which
is where the next record starts: a source transaction whose commit record comes right after
the marker has that very LSN as its commit LSN and must not be skipped as already held."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from syncline.core.config_models import Secret, SourceConfig
from syncline.log.embedded.store import EmbeddedLogWriter
from syncline.sources.postgres.follow import PREFIX, TableFollower
from syncline.sources.postgres.machine import StreamMachine
from syncline.sources.postgres.pgoutput import encode_begin


def marker(content: str, lsn: int) -> bytes:
    body = content.encode()
    return (
        b"M"
        + bytes([0])
        + struct.pack("!Q", lsn)
        + PREFIX.encode()
        + b"\0"
        + struct.pack("!I", len(body))
        + body
    )


def test_a_transaction_committed_right_after_a_marker_is_not_a_replay(tmp_path: Path) -> None:
    writer = EmbeddedLogWriter(tmp_path)
    try:
        conn: Any = None  # the gone marker needs no source connection
        follower = TableFollower(SourceConfig(Secret("postgresql://x")), writer, conn, lambda t: (b"", None))
        follower.followed[16384] = "public.t"
        at = 0x1F2B178
        assert follower.on_message(marker("gone:16384", at))
        assert writer.last_commit_lsn() < at
        machine = StreamMachine(writer.last_commit_lsn)
        begin = machine.feed(b"w" + struct.pack("!QQq", 0, 0, 0) + encode_begin(at, 0, 99))
        assert begin is not None and not begin.replay
    finally:
        writer.close()
