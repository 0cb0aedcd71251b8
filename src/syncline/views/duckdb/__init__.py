"""DuckDB warehouse view: typed tables named ``schema.table`` kept in sync with the source.

See :mod:`syncline.views.duckdb.view` for the design and :mod:`syncline.views.duckdb.values`
for the PostgreSQL -> DuckDB type mapping; :mod:`syncline.views.duckdb.compare` renders
stored values back into PostgreSQL text for verification. Light to import: the view and its
verify reader load when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.views.duckdb.session import open_duckdb
from syncline.views.options import REQUIRED, OptionSpec, Store, path_store

if TYPE_CHECKING:
    from syncline.core.config_models import Config
    from syncline.runtime.rebuild import Target
    from syncline.verify.readers import ViewReader
    from syncline.views.duckdb.view import DuckdbView

EXTRA = "duckdb"
BATCH_INTERVAL = 0.1
"""Default ``batch_interval`` (seconds): a DuckDB commit writes and syncs its WAL: fewer, larger batches."""
OPTIONS: dict[str, OptionSpec] = {
    "path": (str, "a file path", REQUIRED),
    "keep_dropped_tables": (bool, "true or false", False),
}
CHOICES: dict[str, tuple[str, ...]] = {}
ONE_PROCESS = True
"""A DuckDB file admits one process: while ``run`` holds it, ``verify`` and ``sql`` borrow it
from the view's worker for each read (:mod:`syncline.runtime.borrow`)."""


def check_options(view: str, options: dict[str, object]) -> None:
    """Checks beyond types (none for this kind)."""


def create_view(cfg: ViewConfig) -> DuckdbView:
    from syncline.views.duckdb.view import DuckdbView

    return DuckdbView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.duckdb.reader import DuckdbReader

    return DuckdbReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    """Read through the open view's connection (DuckDB allows one process per file)."""
    from syncline.views.duckdb.reader import DuckdbReader
    from syncline.views.duckdb.view import DuckdbView

    return DuckdbReader(cfg, con=view.connection) if isinstance(view, DuckdbView) else None


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: a shadow file beside the view's, exchanged with it."""
    from syncline.runtime.rebuild import PathTarget

    return PathTarget.beside(vcfg, _fold_wal)


def _fold_wal(paths: tuple[str, ...]) -> None:
    """A DuckDB file's WAL is found by name: fold each into its file before the exchange."""
    import os

    for p in paths:
        if os.path.exists(p + ".wal"):
            con = open_duckdb(p)
            con.execute("CHECKPOINT")
            con.close()


def store_of(options: dict[str, object]) -> Store:
    return path_store(options)
