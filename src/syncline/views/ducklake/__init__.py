"""DuckLake warehouse view: the DuckDB view's typed tables in a DuckLake (Parquet files and a
catalog in SQLite or PostgreSQL), readable by any DuckDB while ``syncline run`` writes it,
and queryable as of any retained source position (``syncline sql VIEW --at LSN``).

See :mod:`syncline.views.ducklake.view` for the design and
:mod:`syncline.views.ducklake.lake` for how the extensions load offline. Light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError
from syncline.views.options import REQUIRED, OptionSpec, Store, secret_text

if TYPE_CHECKING:
    from syncline.core.config_models import Config
    from syncline.runtime.rebuild import Target
    from syncline.verify.readers import ViewReader
    from syncline.views.ducklake.view import DucklakeView

EXTRA = "ducklake"
BATCH_INTERVAL = 0.5
"""Default ``batch_interval`` (seconds): every batch is a lake snapshot with its own catalog
transaction and files: fewer, larger batches."""
OPTIONS: dict[str, OptionSpec] = {
    "catalog": (str, "a SQLite file or a PostgreSQL DSN", REQUIRED),
    "data_path": (str, "a directory (default: the SQLite catalog's path + .files)", None),
    "retention": ((int, float), "seconds of snapshots kept for --at", 86400),
    "maintenance_interval": ((int, float), "seconds between lake maintenance runs", 300),
    "keep_dropped_tables": (bool, "true or false", False),
}
CHOICES: dict[str, tuple[str, ...]] = {}


def check_options(view: str, options: dict[str, object]) -> None:
    """A PostgreSQL catalog needs a data path; times are positive."""
    check_catalog_options(options, "data_path")


def check_catalog_options(options: dict[str, object], files_key: str) -> None:
    """The checks of a lake kind (DuckLake, Iceberg): a PostgreSQL ``catalog`` needs the
    files' directory ``files_key``; ``retention`` and ``maintenance_interval`` are positive."""
    from syncline.views.ducklake.lake import is_postgres_catalog

    if is_postgres_catalog(secret_text(options.get("catalog"))) and not options.get(files_key):
        raise ConfigError(f"{files_key}: required with a PostgreSQL catalog (a directory for the data files)")
    for key in ("retention", "maintenance_interval"):
        got = options.get(key)
        if isinstance(got, int | float) and got <= 0:
            raise ConfigError(f"{key}: expected seconds > 0, got {got}")


def create_view(cfg: ViewConfig) -> DucklakeView:
    from syncline.views.ducklake.view import DucklakeView

    return DucklakeView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.ducklake.reader import DucklakeReader

    return DucklakeReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    """Read through an open view's connection, inside its open transaction (``rebuild``
    verifies its copy before committing it); other readers open the lake themselves."""
    from syncline.views.ducklake.reader import DucklakeReader
    from syncline.views.ducklake.view import DucklakeView

    return DucklakeReader(cfg, con=view.connection) if isinstance(view, DucklakeView) else None


def history(cfg: ViewConfig) -> dict[str, object]:
    """``syncline status``: the snapshots the view committed that the lake retains."""
    import duckdb

    from syncline.sources.postgres.lsn import format_lsn
    from syncline.views.ducklake import lake
    from syncline.views.ducklake.view import default_data_path

    catalog = secret_text(cfg.options.get("catalog"))
    out: dict[str, object] = {"retained": 0}
    if not lake.exists(catalog):
        return out
    try:
        con = lake.connect(
            catalog, str(cfg.options.get("data_path") or default_data_path(catalog)), read_only=True
        )
        try:
            snaps = lake.snapshots(con, cfg.name)
        finally:
            con.close()
    except (duckdb.Error, ConfigError) as e:
        return {**out, "error": f"cannot read the lake: {str(e).splitlines()[0]}"}
    out["retained"] = len(snaps)
    if snaps:
        out["oldest_lsn"] = format_lsn(snaps[0].checkpoint.commit_lsn)
        out["oldest_time"] = snaps[0].time
        out["newest_lsn"] = format_lsn(snaps[-1].checkpoint.commit_lsn)
        out["newest_time"] = snaps[-1].time
    return out


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: in place, in one lake transaction (readers keep the old rows
    until its snapshot commits)."""
    from syncline.runtime.rebuild import InPlaceTarget

    return InPlaceTarget(vcfg)


def store_of(options: dict[str, object]) -> Store | None:
    return catalog_store(options, "DuckLake")


def catalog_store(options: dict[str, object], what: str) -> Store | None:
    """The store of a lake kind: its SQLite catalog file, or its PostgreSQL database."""
    import os

    from syncline.views.ducklake.lake import is_postgres_catalog

    catalog = secret_text(options.get("catalog"))
    if not is_postgres_catalog(catalog):
        return ("path", os.path.realpath(catalog))
    from syncline.views.postgres import store_of as database_of

    db = database_of({"dsn": catalog})  # the same parsing as a replica's database
    return None if db is None else (f"{what} catalog database", f"{db[3]} on {db[1]}:{db[2]}")
