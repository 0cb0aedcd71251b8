"""The outbox (``kind = "outbox"``): rows the application inserts into an outbox table
become entries of a Redis stream (``url``) or messages on a NATS JetStream subject
(``servers``, ``subject``), in commit order, exactly once in effect.

The transactional outbox pattern: the application writes its business rows *and* an event
row in one transaction; syncline reads the event from the WAL and publishes it, so an event
exists exactly when its transaction committed (no dual write). Only inserts are published:
the application may delete (prune) published rows, and updates, deletes and truncates of
the outbox table are not events. See :mod:`syncline.views.outbox.view` for the design.
Light to import: redis-py loads with the view.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError
from syncline.views.options import REQUIRED, OptionSpec, Store, secret_text
from syncline.views.redis.urls import redis_db, server_of

if TYPE_CHECKING:
    from syncline.verify.readers import ViewReader
    from syncline.views.outbox.view import OutboxView

EXTRA = "redis"
BATCH_INTERVAL = 0.005
"""Default ``batch_interval`` (seconds): one MULTI/EXEC per batch."""
VERIFIABLE = False
"""``syncline verify`` has nothing to compare: a stream of events is not a copy of tables."""
OPTIONS: dict[str, OptionSpec] = {
    "url": (str, "a redis:// URL", None),
    "servers": (list, "NATS server URLs", None),
    "subject": (str, "a NATS subject", None),
    "table": (str, "the outbox table as schema.table", REQUIRED),
    "stream": (str, "a Redis stream key, or a JetStream stream's name", None),
    "maxlen": (int, "entries the stream keeps at most, about (0: all)", 0),
}
CHOICES: dict[str, tuple[str, ...]] = {}

_TABLE = re.compile(r"^[^.*?\[\]!]+\.[^.*?\[\]!]+$")


def check_options(view: str, options: dict[str, object]) -> None:
    if (options.get("url") is None) == (options.get("servers") is None):
        raise ConfigError("url: give url (a Redis stream) or servers and subject (a JetStream subject)")
    if options.get("servers") is not None:
        subject = str(options.get("subject") or "")
        if not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", subject):
            raise ConfigError(f"subject: expected a NATS subject without wildcards, got {subject!r}")
        if options.get("maxlen"):
            raise ConfigError("maxlen: a JetStream stream keeps what its own limits say")
    else:
        _check_redis(options)
    table = str(options.get("table", ""))
    if not _TABLE.match(table):
        raise ConfigError(f"table: expected one table as schema.table (no patterns), got {table!r}")


def _check_redis(options: dict[str, object]) -> None:
    url = secret_text(options.get("url"))
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"url: expected a redis://, rediss:// or unix:// URL, got {shown}")
    if options.get("stream") is not None and not str(options["stream"]).strip():
        raise ConfigError("stream: expected a Redis key, not an empty one")
    maxlen = options.get("maxlen", 0)
    if isinstance(maxlen, int) and maxlen < 0:
        raise ConfigError(f"maxlen: expected 0 (keep all) or a positive count, got {maxlen}")


def stream_of(options: dict[str, object]) -> str:
    """The Redis stream's key (``stream``, or the table's name), or the JetStream stream's name
    (``stream``, or the subject's, upper case with ``_`` for dots)."""
    got = options.get("stream")
    if got:
        return str(got)
    if options.get("subject"):
        return re.sub(r"[^A-Za-z0-9_-]", "_", str(options["subject"])).upper()
    return str(options.get("table", ""))


def create_view(cfg: ViewConfig) -> OutboxView:
    from syncline.views.outbox.view import OutboxView

    return OutboxView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.verify.readers import VerifyError

    raise VerifyError(f"view {cfg.name} is an outbox: it holds events, not a copy of tables to compare")


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    return None


def store_of(options: dict[str, object]) -> Store:
    """Two outboxes may not write one stream."""
    if options.get("servers") is not None:
        return ("nats-subject", str(options.get("subject")))
    url = secret_text(options.get("url"))
    return ("redis-stream", server_of(url), str(redis_db(url)), stream_of(options))
