"""PostgreSQL log sequence numbers: parsing and formatting of the ``X/Y`` text form (the
PostgreSQL source's :class:`~syncline.core.position.PositionFormat`)."""

from __future__ import annotations

import re

from syncline.core.position import Position

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Parse ``X/Y`` (hexadecimal high and low 32-bit halves) into an integer."""
    m = _LSN_RE.match(text.strip())
    if m is None:
        raise ValueError(f"not an LSN (expected X/Y in hexadecimal): {text!r}")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """Format an integer LSN as PostgreSQL does: upper-case hex halves."""
    if lsn < 0 or lsn >= 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class LsnFormat:
    """PostgreSQL's positions as users read and type them (:class:`PositionFormat`)."""

    name = "LSN"

    def format(self, position: int) -> str:
        return format_lsn(position)

    def parse(self, text: str) -> Position:
        return Position(parse_lsn(text))


LSN_FORMAT = LsnFormat()
