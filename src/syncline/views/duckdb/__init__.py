"""DuckDB warehouse view: typed tables named ``schema.table`` kept in sync with the source.

See :mod:`syncline.views.duckdb.view` for the design and :mod:`syncline.views.duckdb.values`
for the PostgreSQL -> DuckDB type mapping; :mod:`syncline.views.duckdb.compare` renders
stored values back into PostgreSQL text for verification.
"""

from __future__ import annotations

from syncline.core.config_models import ViewConfig
from syncline.views.duckdb.view import DuckdbView


def create_view(cfg: ViewConfig) -> DuckdbView:
    return DuckdbView(cfg)


__all__ = ["DuckdbView", "create_view"]
