"""Reading the Iceberg view back for ``syncline verify``: the DuckDB view's reader on an
in-memory DuckDB whose tables are ``iceberg_scan`` views at one consistent position
(:func:`~syncline.views.iceberg.lake.reading_connection`), while ``run`` may be writing."""

from __future__ import annotations

from typing import Any

from syncline.core.config_models import ViewConfig
from syncline.verify.readers import VerifyError
from syncline.views.duckdb.reader import DuckdbReader


class IcebergReader(DuckdbReader):
    def __init__(self, vcfg: ViewConfig) -> None:
        from syncline.views.iceberg import lake, warehouse_of

        catalog, warehouse = warehouse_of(vcfg)
        if not lake.exists(catalog):
            raise VerifyError(
                f"view {vcfg.name} (iceberg): the catalog ({lake.describe(catalog)}) does not exist yet"
            )
        try:
            con, _read = lake.reading_connection(lake.open_catalog(catalog, warehouse), vcfg.name)
        except Exception as e:
            text = lake.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, catalog)
            raise VerifyError(f"view {vcfg.name} (iceberg): cannot read the warehouse ({text})") from None
        super().__init__(vcfg, con=con)
        self.borrowed = False

    def _cursor(self) -> Any:
        return self.con  # the views live in this connection's in-memory database


class WorkingCopyReader(DuckdbReader):
    """``syncline rebuild`` verifies the working copy inside its open transaction: read
    through that connection itself (a cursor would be another transaction)."""

    def _cursor(self) -> Any:
        return self.con
