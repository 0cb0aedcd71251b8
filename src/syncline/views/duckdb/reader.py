"""Reading the DuckDB view back for ``syncline verify`` (see :mod:`syncline.verify.readers`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from syncline.core.config_models import ViewConfig
from syncline.verify.chunks import TextRow, key_text
from syncline.verify.readers import VerifyError, _RowReader, option
from syncline.verify.source import TableSpec
from syncline.views.duckdb.session import open_duckdb


class DuckdbReader(_RowReader):
    def __init__(self, vcfg: ViewConfig, con: Any = None) -> None:
        """``con``: read through this connection (a rebuild's own); it is not closed."""
        import duckdb

        from syncline.core.codec import relation_from_json

        self.borrowed = con is not None
        try:
            self.con: Any = con if con is not None else open_duckdb(option(vcfg, "path"), read_only=True)
        except duckdb.Error as e:
            raise VerifyError(
                f"view {vcfg.name} (duckdb): cannot open the warehouse ({str(e).splitlines()[0]}). "
                "DuckDB allows one process per file and `syncline run` holds it: stop `run` to "
                "verify this view"
            ) from None
        self.rels = {}
        try:
            for (d,) in self.con.execute("SELECT relation FROM _syncline.relations").fetchall():
                rel = relation_from_json(d if isinstance(d, str | bytes) else str(d))
                self.rels[rel.qualified] = rel
        except duckdb.Error:
            pass  # an empty warehouse

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        from syncline.views.duckdb.compare import select_expr, table_types, to_pg_text
        from syncline.views.duckdb.values import quote_ident

        rel = self.rels.get(spec.qualified)
        if rel is None:
            return
        by_name = {c.name: c for c in rel.columns}
        missing = [c for c in spec.columns if c not in by_name]
        if missing:
            raise VerifyError(f"{spec.qualified}: the warehouse lacks columns {missing}")
        types = table_types(self.con, rel.schema, rel.name)
        cols = [by_name[c] for c in spec.columns]
        exprs = [select_expr(c, quote_ident(c.name), types.get(c.name)) for c in cols]
        kinds = [types.get(c.name) for c in cols]
        table = f"{quote_ident(rel.schema)}.{quote_ident(rel.name)}"
        cur = self._cursor()
        try:
            cur.execute(f"SELECT {', '.join(exprs)} FROM {table}")  # noqa: S608
            idx = spec.key_idx
            while True:
                batch = cur.fetchmany(10_000)
                if not batch:
                    break
                for r in batch:
                    row = tuple(to_pg_text(v, c, sql_type=t) for v, c, t in zip(r, cols, kinds, strict=True))
                    yield key_text(row, idx), row
        finally:
            if cur is not self.con:
                cur.close()

    def _cursor(self) -> Any:
        """A cursor of its own for a streamed read (a new connection to the same database)."""
        return self.con.cursor()

    def close(self) -> None:
        if not self.borrowed:
            self.con.close()
