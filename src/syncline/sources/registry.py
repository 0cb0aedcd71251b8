"""Source kinds by name: one line per kind."""

from __future__ import annotations

from collections.abc import Callable

from syncline.core.config_models import Config
from syncline.core.errors import ConfigError
from syncline.core.position import Position, PositionFormat
from syncline.log.base import LogAppender
from syncline.sources.base import SourceAdmin, SourceCapture

OnTables = Callable[[list[str], dict[str, list[str]], list[str]], None]
"""Called with (every table, captured tables' columns, captured tables without a key) once
the tables are known: it warns about names that match nothing and may refuse the start."""


def open_capture(cfg: Config, writer: LogAppender, on_tables: OnTables | None = None) -> SourceCapture:
    from syncline.sources.postgres.capture import Capture

    return Capture(cfg.source, writer, on_tables)


def open_admin(cfg: Config, pool_size: int = 0) -> SourceAdmin:
    """The source's admin side (no connection is made until a method asks); ``pool_size``:
    the waits' checks borrow up to that many connections kept open (``close`` them), else
    each check opens its own."""
    from syncline.sources.postgres.admin import PostgresAdmin

    return PostgresAdmin(cfg, pool_size)


def position_format(kind: str = "postgres") -> PositionFormat:
    """How positions of source ``kind`` read and print (``wait --lsn``, status, errors)."""
    if kind != "postgres":
        raise ConfigError(f"source kind {kind!r} is not known (known: postgres)")
    from syncline.sources.postgres.lsn import LSN_FORMAT

    return LSN_FORMAT


def format_position(position: int) -> str:
    """A source position as users read it (the source's :class:`PositionFormat`)."""
    return position_format().format(position)


def parse_position(text: str) -> Position:
    """A source position from its text (ValueError naming the expected form)."""
    return position_format().parse(text)
