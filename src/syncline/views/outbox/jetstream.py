"""The outbox on a NATS JetStream subject (``servers`` and ``subject`` instead of ``url``).

Each committed source transaction's inserts into the outbox table become messages on the
subject, in commit order: a JSON object of the row's columns as text (NULL absent) plus
``_lsn``; headers ``Syncline-Lsn`` (the transaction's commit position) and ``Nats-Msg-Id``
(``VIEW:LSN:N``, the N-th insert of that transaction).

Exactly once in effect, without a transaction across messages:

- every message of a batch names the position before the batch (``Syncline-Prev``) and the
  batch's last one is marked (``Syncline-Last``) with the position it completes;
- after each batch the position goes to a KV bucket (``syncline-outbox``, key VIEW) too
  (batches without entries move it as well);
- at start the view takes the later of the KV's position and the last message's: the
  batch's own if that message is marked last, else the one before its batch, which is then
  published again: JetStream drops the repeated ``Nats-Msg-Id`` (the stream is created with a
  10-minute duplicate window).

A reader may see the first messages of a batch before its last one (JetStream has no
transaction across messages); it never sees one twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from syncline.core.config_models import Secret, ViewConfig
from syncline.core.errors import LogError, TransientViewError, ViewError
from syncline.core.events import Checkpoint
from syncline.core.position import Position

log = logging.getLogger(__name__)

BUCKET = "syncline-outbox"
DUPLICATE_WINDOW = 600.0
"""Seconds JetStream remembers a message id (a batch published again within them is dropped)."""


def _pos(cp: Checkpoint) -> str:
    return f"{cp.seq}:{int(cp.commit_lsn)}:{cp.log}"


def _cp(text: str) -> Checkpoint:
    seq, lsn, log_id = text.split(":", 2)
    return Checkpoint(int(seq), Position(int(lsn)), log_id)


class JetStreamPublisher:
    """Publishes a batch's entries and keeps the position (see the module docstring)."""

    def __init__(self, cfg: ViewConfig, subject: str, stream: str) -> None:
        servers = cfg.options.get("servers") or ()
        self.servers = tuple(s.value if isinstance(s, Secret) else str(s) for s in servers)  # type: ignore[attr-defined]
        self.subject = subject
        self.stream = stream
        self.view = cfg.consumer
        self._nats: Any = None
        self._kv: Any = None

    def open(self) -> Checkpoint:
        import nats.js.api as api
        import nats.js.errors as jse

        from syncline.log.nats.client import Nats

        try:
            self._nats = Nats(self.servers, name=f"syncline-outbox-{self.view}")
        except LogError as e:
            raise TransientViewError(f"view {self.view}: {e}") from e
        n = self._nats

        async def setup() -> tuple[Any, Checkpoint | None, Checkpoint | None]:
            try:
                info = await n.js.stream_info(self.stream)
                if self.subject not in (info.config.subjects or []):
                    raise ViewError(
                        f"view {self.view}: JetStream stream {self.stream!r} does not take subject "
                        f"{self.subject!r} (its subjects: {', '.join(info.config.subjects or [])})",
                        action=f"add {self.subject} to the stream's subjects, or name another stream",
                    )
            except jse.NotFoundError:
                await n.js.add_stream(
                    api.StreamConfig(
                        name=self.stream, subjects=[self.subject], duplicate_window=DUPLICATE_WINDOW
                    )
                )
            try:
                kv = await n.js.key_value(BUCKET)
            except jse.BucketNotFoundError:
                kv = await n.js.create_key_value(bucket=BUCKET, history=1)
            stored = None
            try:
                e = await kv.get(self.view)
                stored = _cp(e.value.decode()) if e.value else None
            except jse.KeyNotFoundError:
                pass
            last = None
            try:
                m = await n.js.get_last_msg(self.stream, self.subject)
                h = m.headers or {}
                if h.get("Syncline-View") == self.view:
                    last = _cp(h["Syncline-Done"] if h.get("Syncline-Last") == "1" else h["Syncline-Prev"])
            except jse.NotFoundError:
                pass
            return kv, stored, last

        try:
            self._kv, stored, last = n.run(setup())
        except LogError as e:
            raise TransientViewError(f"view {self.view}: {e}") from e
        got = [c for c in (stored, last) if c is not None]
        return max(got, key=lambda c: c.seq) if got else Checkpoint()

    def publish(
        self, entries: list[tuple[str, int, dict[str, str]]], before: Checkpoint, done: Checkpoint
    ) -> None:
        """``entries``: (commit position text, index in its transaction, fields)."""
        n = self._nats

        async def go() -> None:
            for i, (lsn, k, fields) in enumerate(entries):
                headers = {
                    "Nats-Msg-Id": f"{self.view}:{lsn}:{k}",
                    "Syncline-Lsn": lsn,
                    "Syncline-View": self.view,
                    "Syncline-Prev": _pos(before),
                    "Syncline-Last": "1" if i == len(entries) - 1 else "0",
                    "Syncline-Done": _pos(done),
                }
                await n.js.publish(self.subject, json.dumps(fields).encode(), headers=headers)
            await self._kv.put(self.view, _pos(done).encode())

        try:
            n.run(go(), timeout=60.0)
        except LogError as e:
            raise TransientViewError(f"view {self.view}: publishing to {self.subject}: {e}") from e

    def close(self) -> None:
        if self._nats is not None:
            self._nats.close()
            self._nats = None
