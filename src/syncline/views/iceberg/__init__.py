"""Iceberg warehouse view: the DuckDB view's typed tables published as Apache Iceberg tables
(pyiceberg's SQL catalog on a SQLite file or PostgreSQL, Parquet files under ``warehouse``),
read by DuckDB, pyiceberg, Spark or Trino while ``syncline run`` writes them, and queryable
as of any retained source position (``syncline sql VIEW --at LSN``).

See :mod:`syncline.views.iceberg.view` for the design. Light to import.
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
    from syncline.views.iceberg.view import IcebergView

EXTRA = "iceberg"
BATCH_INTERVAL = 1.0
"""Default ``batch_interval`` (seconds): every batch is one Iceberg commit per changed table
(metadata files, a manifest list, Parquet files): fewer, larger batches."""
OPTIONS: dict[str, OptionSpec] = {
    "catalog": (str, "a SQLite file or a PostgreSQL DSN", REQUIRED),
    "warehouse": (str, "a directory (default: the SQLite catalog's path + .files)", None),
    "retention": ((int, float), "seconds of snapshots kept for --at", 86400),
    "maintenance_interval": ((int, float), "seconds between maintenance runs", 300),
    "compact_files": (int, "a number of data files (>= 2)", 16),
    "keep_dropped_tables": (bool, "true or false", False),
}
CHOICES: dict[str, tuple[str, ...]] = {}


def check_options(view: str, options: dict[str, object]) -> None:
    """A PostgreSQL catalog needs a warehouse directory; times are positive."""
    from syncline.views.ducklake import check_catalog_options

    check_catalog_options(options, "warehouse")
    got = options.get("compact_files")
    if isinstance(got, int) and got < 2:
        raise ConfigError(f"compact_files: expected a number of data files >= 2, got {got}")


def create_view(cfg: ViewConfig) -> IcebergView:
    from syncline.views.iceberg.view import IcebergView

    return IcebergView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.iceberg.reader import IcebergReader

    return IcebergReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    """A rebuild verifies its working copy before it publishes (inside its transaction)."""
    from syncline.views.iceberg.reader import WorkingCopyReader
    from syncline.views.iceberg.view import IcebergView

    return WorkingCopyReader(cfg, con=view.connection) if isinstance(view, IcebergView) else None


def warehouse_of(cfg: ViewConfig) -> tuple[str, str]:
    """(catalog, warehouse directory) of an iceberg view's config."""
    import os

    from syncline.views.iceberg.lake import default_warehouse

    catalog = secret_text(cfg.options.get("catalog"))
    return catalog, os.path.abspath(str(cfg.options.get("warehouse") or default_warehouse(catalog)))


def history(cfg: ViewConfig) -> dict[str, object]:
    """``syncline status``: the batches the view committed that the warehouse retains."""
    from syncline.sources.postgres.lsn import format_lsn
    from syncline.views.iceberg import lake

    catalog, warehouse = warehouse_of(cfg)
    out: dict[str, object] = {"retained": 0}
    if not lake.exists(catalog):
        return out
    try:
        snaps = lake.batches(lake.open_catalog(catalog, warehouse), cfg.name)
    except Exception as e:
        return {**out, "error": f"cannot read the catalog: {lake.scrub(str(e).splitlines()[0], catalog)}"}
    out["retained"] = len(snaps)
    if snaps:
        out["oldest_lsn"] = format_lsn(snaps[0].checkpoint.commit_lsn)
        out["oldest_time"] = snaps[0].time
        out["newest_lsn"] = format_lsn(snaps[-1].checkpoint.commit_lsn)
        out["newest_time"] = snaps[-1].time
    return out


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: in place (the working copy in one transaction; each table
    published whole when it commits)."""
    from syncline.runtime.rebuild import InPlaceTarget

    return InPlaceTarget(vcfg)


def store_of(options: dict[str, object]) -> Store | None:
    from syncline.views.ducklake import catalog_store

    return catalog_store(options, "Iceberg")
