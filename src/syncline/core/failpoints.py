"""Named failpoints, for the fault suite: ``SYNCLINE_FAILPOINTS="name=N,other=M"`` makes
the process that reaches failpoint ``name`` for the N-th time kill itself (SIGKILL: no
cleanup, no flush, as a crash). With ``SYNCLINE_FAILPOINT_DIR`` each fires once per run (a
file per failpoint fired), so the process restarted after it goes on. Unset, as always
outside tests, :func:`hit` returns at once.

The failpoints sit between the durable steps, where a crash is most likely to lose or
repeat something (:data:`NAMES`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

NAMES = {
    "capture.logged_not_synced": "a committed source transaction is in the log's buffer, not yet fsynced",
    "capture.synced_not_confirmed": "the log is fsynced; the slot is not yet told",
    "capture.streamed_in_progress": "part of a transaction streamed in progress is spooled, no commit yet",
    "copy.chunk_logged": "a chunk of a table copy is logged; its window is not closed yet",
    "follow.joined_not_saved": "a new table is in the publication; its copy is not yet in the log's metadata",
    "follow.shape_logged": "a table's new shape is in the WAL (a message); the stream has not decoded it yet",
    "view.mid_transaction": "a view applied part of a large source transaction (nothing committed)",
    "view.committed_not_reported": "a view committed a batch (with its position); the log does not know",
    "retention.before_trim": "every view applied a range of the log; it is not trimmed yet",
}
"""Each failpoint and the moment it stands for."""


def _armed(text: str) -> dict[str, int]:
    out = {}
    for part in text.split(","):
        name, _, n = part.strip().partition("=")
        if name:
            out[name] = int(n or 1)
    return out


_ARMED = _armed(os.environ.get("SYNCLINE_FAILPOINTS", ""))
_HITS: dict[str, int] = {}


def hit(name: str) -> None:
    """Failpoint ``name``: kill this process if it is armed and this is its N-th hit."""
    if not _ARMED or name not in _ARMED:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] < _ARMED[name]:
        return
    where = os.environ.get("SYNCLINE_FAILPOINT_DIR")
    if where:
        try:
            os.close(os.open(Path(where) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired already in this run
    os.kill(os.getpid(), signal.SIGKILL)
