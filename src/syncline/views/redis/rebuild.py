"""``syncline rebuild`` of a Redis view: the copy is built in a shadow database of the same
server and exchanged with the view's by ``SWAPDB`` (every client sees the new keys at once)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from syncline.core.config_models import Config, Secret, ViewConfig
from syncline.runtime.rebuild import RebuildError
from syncline.views.redis.urls import redis_db, server_of, url_with_db

MARKER = "_syncline:rebuild"
"""Set in a Redis shadow database while it is built: a database holding it may be emptied."""


@dataclass
class RedisTarget:
    """A shadow database of the same server (``rebuild_db``), exchanged by ``SWAPDB``."""

    shadow: ViewConfig
    url: str
    db: int
    shadow_db: int
    in_place: bool = False

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=10)

    def prepare(self) -> None:
        c = self._client()
        try:
            c.execute_command("SELECT", self.shadow_db)
            if c.dbsize() and not c.exists(MARKER):
                raise RebuildError(
                    f"view {self.shadow.name}: Redis database {self.shadow_db} (the rebuild's shadow, "
                    "option rebuild_db) is not empty: point rebuild_db at an empty database"
                )
            c.flushdb()
            c.set(MARKER, str(os.getpid()))
        finally:
            c.close()

    def swap(self) -> None:
        c = self._client()
        try:
            c.swapdb(self.db, self.shadow_db)
            c.execute_command("SELECT", self.db)
            c.delete(MARKER)
        finally:
            c.close()

    def discard(self) -> None:
        c = self._client()
        try:
            c.execute_command("SELECT", self.shadow_db)
            c.flushdb()
        finally:
            c.close()


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> RedisTarget:
    opts = dict(vcfg.options)
    if opts.get("mode", "hash") != "hash":
        raise RebuildError(
            f"view {vcfg.name} (redis, mode invalidate) stores no rows: there is nothing to rebuild"
        )
    raw = opts["url"]
    url = raw.value if isinstance(raw, Secret) else str(raw)
    db = redis_db(url)
    shadow_db = int(str(opts.get("rebuild_db", db + 1)))
    if shadow_db == db:
        raise RebuildError(f"view {vcfg.name}: rebuild_db must differ from the view's database {db}")
    for other in cfg.views:
        if other.name != vcfg.name and other.kind == "redis":
            o = other.options["url"]
            ourl = o.value if isinstance(o, Secret) else str(o)
            same_server = server_of(ourl) == server_of(url)
            if same_server and redis_db(ourl) in (db, shadow_db):
                raise RebuildError(
                    f"view {vcfg.name}: view {other.name} uses Redis database {redis_db(ourl)} of the "
                    "same server; a rebuild swaps whole databases (SWAPDB): give each view its own"
                )
    opts["url"] = Secret(url_with_db(url, shadow_db))
    return RedisTarget(replace(vcfg, options=opts), url, db, shadow_db)
