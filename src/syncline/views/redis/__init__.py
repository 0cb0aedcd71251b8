"""Redis cache view: one hash per row (or key invalidation), atomically per batch.

See :mod:`syncline.views.redis.view` for the design and :mod:`syncline.core.textcast`
for the ``::text`` conversion of values.
"""

from __future__ import annotations

from syncline.core.config_models import ViewConfig
from syncline.views.redis.view import RedisView


def create_view(cfg: ViewConfig) -> RedisView:
    return RedisView(cfg)


__all__ = ["RedisView", "create_view"]
