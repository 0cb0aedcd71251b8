"""Redis cache view: one hash per row (or key invalidation), atomically per batch.

See :mod:`syncline.views.redis.view` for the design and :mod:`syncline.core.textcast`
for the ``::text`` conversion of values. Light to import: the view and its verify reader
load when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError
from syncline.core.keytemplate import validate_template
from syncline.views.options import REQUIRED, OptionSpec, Store, secret_text
from syncline.views.redis.urls import redis_db, server_of

if TYPE_CHECKING:
    from syncline.core.config_models import Config
    from syncline.runtime.rebuild import Target
    from syncline.verify.readers import ViewReader
    from syncline.views.redis.view import RedisView

EXTRA = "redis"
BATCH_INTERVAL = 0.005
"""Default ``batch_interval`` (seconds): one MULTI/EXEC per batch."""
PARTITIONABLE = True
"""``partitions = N``: N appliers share the rows by key hash (each keeps its own position and
key sets in the same Redis)."""
OPTIONS: dict[str, OptionSpec] = {
    "url": (str, "a redis:// URL", REQUIRED),
    "key": (str, "a key template like {table}:{pk}", "{table}:{pk}"),
    "mode": (str, '"hash" or "invalidate"', "hash"),
    "ttl": (int, "seconds (0: none)", 0),
    "columns": (list, "a list of column names", None),
    "on_error": (str, '"stop" or "skip"', "stop"),
    "rebuild_db": (int, "a Redis database number (syncline rebuild's shadow)", None),
}
CHOICES: dict[str, tuple[str, ...]] = {"mode": ("hash", "invalidate"), "on_error": ("stop", "skip")}


def check_options(view: str, options: dict[str, object]) -> None:
    """The URL is one redis-py opens (``redis://``, ``rediss://``, ``unix://``), and the key
    template names only known placeholders (ConfigError, keyed by the option)."""
    url = secret_text(options.get("url"))
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"url: expected a redis://, rediss:// or unix:// URL, got {shown}")
    if isinstance(options.get("key"), str):
        try:
            validate_template(view, str(options["key"]))
        except ConfigError as e:
            raise ConfigError(f"key: {e}") from None


def create_view(cfg: ViewConfig) -> RedisView:
    from syncline.views.redis.view import RedisView

    return RedisView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.redis.reader import RedisReader

    return RedisReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    return None


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: a shadow database exchanged by SWAPDB."""
    from syncline.views.redis.rebuild import rebuild_target

    return rebuild_target(cfg, vcfg)


def store_of(options: dict[str, object]) -> Store:
    """The keys a view writes: its server and database, and its key template."""
    url = secret_text(options.get("url"))
    return ("redis", server_of(url), str(redis_db(url)), str(options.get("key", "{table}:{pk}")))
