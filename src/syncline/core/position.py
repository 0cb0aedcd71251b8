"""Source positions, neutral of the source.

A :data:`Position` is where a transaction committed in the source's own log, as an integer
that orders commits: PostgreSQL's commit LSN; for a MySQL binlog it will be the binlog file's
number and the event's offset packed into one integer (``file << 40 | offset``). The log,
the checkpoints and the views only store and compare positions; what one looks like to a
user (``0/16B3748`` for PostgreSQL) belongs to the source, through its
:class:`PositionFormat` (``syncline.sources.registry.position_format``).
"""

from __future__ import annotations

from typing import NewType, Protocol

Position = NewType("Position", int)
"""An ordered source position (0: none yet)."""

NO_POSITION = Position(0)


class PositionFormat(Protocol):
    """How a source's positions read and print (``wait --lsn``, ``/wait?lsn=``, status)."""

    name: str
    """What users call a position of this source (``LSN``)."""

    def format(self, position: int) -> str: ...

    def parse(self, text: str) -> Position:
        """A position from its text (ValueError with the expected form when it is not)."""
        ...
