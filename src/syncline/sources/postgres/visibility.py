"""Which transactions a PostgreSQL snapshot sees (pure; no I/O).

A watermark chunk is exact only if every transaction whose commit reached the stream before
the low watermark is visible to the chunk's snapshot. PostgreSQL writes a commit record
before the transaction leaves the list of running transactions: in between (the WAL flush,
and for as long as synchronous replication waits for a standby) the commit is already in the
WAL, and decoded, while new snapshots still see the transaction as running. Those
transactions are *invisible* to a snapshot: listed in its ``xip``, or at or above its
``xmax`` (``xmax`` is one past the latest transaction that had *finished*, not the next to be
assigned).

Logical decoding gives 32-bit transaction ids; snapshots give 64-bit ones (epoch and id).
"""

from __future__ import annotations

from dataclasses import dataclass

MASK = 0xFFFF_FFFF
HALF = 0x8000_0000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ``pg_snapshot``: ``xmin:xmax:xip,...`` (64-bit ids)."""

    xmin: int
    xmax: int
    xip: frozenset[int]
    xip32: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From ``pg_current_snapshot()::text``."""
        xmin, xmax, xip = text.split(":")
        running = frozenset(int(x) for x in xip.split(",") if x)
        return cls(int(xmin), int(xmax), running, frozenset(x & MASK for x in running))

    def invisible(self, xid: int) -> bool:
        """True when the 64-bit ``xid`` was running (or not yet started) for this snapshot."""
        return xid >= self.xmax or xid in self.xip

    def invisible32(self, xid: int) -> bool:
        """As :meth:`invisible` for a 32-bit id from logical decoding (compared modulo 2^32,
        as PostgreSQL compares them: ids within 2^31 after ``xmax`` count as later)."""
        xid &= MASK
        return ((xid - self.xmax) & MASK) < HALF or xid in self.xip32
