"""Source kinds by name: one line per kind."""

from __future__ import annotations

from syncline.core.config_models import Config
from syncline.sources.base import SourceAdmin


def open_admin(cfg: Config) -> SourceAdmin:
    """The source's admin side (no connection is made until a method asks)."""
    from syncline.sources.postgres.admin import PostgresAdmin

    return PostgresAdmin(cfg)
