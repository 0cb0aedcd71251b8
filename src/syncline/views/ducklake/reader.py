"""Reading the DuckLake view back for ``syncline verify``: the DuckDB view's reader on a
read-only attachment of the lake (which ``syncline run`` may be writing meanwhile)."""

from __future__ import annotations

from typing import Any

from syncline.core.config_models import ViewConfig
from syncline.verify.readers import VerifyError, option
from syncline.views.duckdb.reader import DuckdbReader


class DucklakeReader(DuckdbReader):
    def __init__(self, vcfg: ViewConfig, con: Any = None) -> None:
        """``con``: read through the open view's connection, inside its transaction (an
        in-place rebuild verifies what it has not committed yet); it is not closed."""
        import duckdb

        if con is not None:
            super().__init__(vcfg, con=con)
            return

        from syncline.views.ducklake import lake
        from syncline.views.ducklake.view import default_data_path

        catalog = option(vcfg, "catalog")
        if not lake.exists(catalog):
            raise VerifyError(
                f"view {vcfg.name} (ducklake): the lake ({lake.describe(catalog)}) does not exist yet"
            )
        try:
            con = lake.connect(
                catalog, option(vcfg, "data_path") or default_data_path(catalog), read_only=True
            )
        except duckdb.Error as e:
            raise VerifyError(
                f"view {vcfg.name} (ducklake): cannot open the lake ({str(e).splitlines()[0]})"
            ) from None
        super().__init__(vcfg, con=con)
        self.borrowed = False

    def _cursor(self) -> Any:
        from syncline.views.ducklake import lake

        if self.borrowed:
            return self.con  # a cursor would be another transaction
        cur = self.con.cursor()
        cur.execute(f"USE {lake.LAKE}")  # a cursor starts in the in-memory database
        return cur
