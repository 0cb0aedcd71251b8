"""The ``postgres`` view: a SQL replica of the captured tables. Light to import: the view
and its verify reader load when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.views.options import REQUIRED, OptionSpec, Store, secret_text

if TYPE_CHECKING:
    from syncline.core.config_models import Config
    from syncline.runtime.rebuild import Target
    from syncline.verify.readers import ViewReader
    from syncline.views.postgres.view import PostgresView

EXTRA = "postgres"
BATCH_INTERVAL = 0.01
"""Default ``batch_interval`` (seconds): a few statements per batch, in one round trip each."""
SEQUENCES = True
"""Batches carry the source's sequences (``Batch.meta["sequences"]``): the replica sets its own."""
OPTIONS: dict[str, OptionSpec] = {
    "dsn": (str, "a libpq URI or key=value string", REQUIRED),
    "keep_dropped_tables": (bool, "true or false", False),
}
CHOICES: dict[str, tuple[str, ...]] = {}


def check_options(view: str, options: dict[str, object]) -> None:
    """Checks beyond types (none for this kind)."""


def create_view(cfg: ViewConfig) -> PostgresView:
    from syncline.views.postgres.view import PostgresView

    return PostgresView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.postgres.reader import PostgresReader

    return PostgresReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    """Read through the open view's connection, inside its transaction."""
    from syncline.views.postgres.reader import PostgresReader
    from syncline.views.postgres.view import PostgresView

    return PostgresReader(cfg, conn=view.connection) if isinstance(view, PostgresView) else None


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: in place, inside one replica transaction."""
    from syncline.runtime.rebuild import InPlaceTarget

    return InPlaceTarget(vcfg)


def store_of(options: dict[str, object]) -> Store | None:
    """The replica database (None for a DSN libpq cannot read: the view says so when it starts)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(secret_text(options.get("dsn")))
    except Exception:
        return None
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    return ("postgres", host, str(d.get("port") or "5432"), str(d.get("dbname") or d.get("user") or ""))
