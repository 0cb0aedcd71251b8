"""The ``postgres`` view: a SQL replica of the captured tables."""

from __future__ import annotations

from syncline.views.postgres.view import PostgresView, create_view

__all__ = ["PostgresView", "create_view"]
