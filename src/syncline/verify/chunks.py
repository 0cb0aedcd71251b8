"""Pure checksum and diff logic of ``syncline verify`` (no I/O).

A table's rows are spread over ``n`` chunks by a hash of their key text (the key columns'
``col::text`` joined by ':'), so that the source (in SQL, :data:`SQL_BUCKET`) and every
view kind (in Python, :func:`bucket`) put a row in the same chunk without comparing keys
by PostgreSQL's collation rules. A chunk's checksum is the row count and the sum modulo
2**64 of a 64-bit digest of each row's text: independent of row order, so each side
streams its rows once in any order with memory proportional to the number of chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

TextRow = tuple[str | None, ...]
MASK = (1 << 64) - 1

FUNC_MAX_ARGS = 100
"""PostgreSQL's limit on a function's arguments (``concat`` included)."""


def sql_row_text(exprs: list[str]) -> str:
    """SQL expression: the row text of ``col::text`` expressions, as :func:`row_text` makes
    it (per column ``'N'`` for NULL, else ``'T' || length(v) || ':' || v``). Tables wider
    than :data:`FUNC_MAX_ARGS` columns concatenate groups of columns (up to 1,600 columns,
    PostgreSQL's own limit, in two levels)."""
    values = [sql_value(e) for e in exprs]
    if not values:
        return "''"
    if len(values) <= FUNC_MAX_ARGS:
        return "concat(" + ", ".join(values) + ")"
    groups = [values[i : i + FUNC_MAX_ARGS] for i in range(0, len(values), FUNC_MAX_ARGS)]
    return "concat(" + ", ".join("concat(" + ", ".join(g) + ")" for g in groups) + ")"


def sql_value(expr: str) -> str:
    """SQL encoding of one ``col::text`` expression, as :func:`row_text` encodes it."""
    return f"CASE WHEN ({expr}) IS NULL THEN 'N' ELSE 'T' || length({expr}) || ':' || ({expr}) END"


def sql_digest(row_text_sql: str) -> str:
    """SQL expression: the signed 64-bit digest of a row text (first 16 hex digits of md5)."""
    return f"('x' || substr(md5({row_text_sql}), 1, 16))::bit(64)::bigint"


def sql_bucket(key_text_sql: str, n: int) -> str:
    """SQL expression: the chunk (0..n-1) of a key text, as :func:`bucket` computes it."""
    return f"mod(('x' || substr(md5({key_text_sql}), 1, 8))::bit(32)::bigint, {int(n)})"


def row_text(row: TextRow) -> str:
    return "".join("N" if v is None else f"T{len(v)}:{v}" for v in row)


def digest(row: TextRow) -> int:
    """Unsigned 64-bit digest of a row (equal to the SQL digest modulo 2**64)."""
    return int(hashlib.md5(row_text(row).encode(), usedforsecurity=False).hexdigest()[:16], 16)


def key_text(row: TextRow, key_idx: tuple[int, ...]) -> str:
    return ":".join("" if row[i] is None else str(row[i]) for i in key_idx)


def put_row(out: dict[str, TextRow], key: str, row: TextRow) -> None:
    """Add ``row`` under ``key``; a second row with the same key text (a duplicate row of a
    table without a primary key, or a collision in a view) goes under a numbered copy,
    so that a multiset with a duplicate never compares equal to one without. The suffix
    follows a NUL, which no PostgreSQL text holds (see :func:`display_key`)."""
    if key in out:
        n = 2
        while f"{key}{DUP}{n}" in out:
            n += 1
        key = f"{key}{DUP}{n}"
    out[key] = row


DUP = "\x00"
"""Separates a key text from the copy number of a duplicate row (see :func:`put_row`)."""


def display_key(key: str) -> str:
    base, _, n = key.partition(DUP)
    return f"{base} (copy {n})" if n else base


def bucket(key: str, n: int) -> int:
    key = key.partition(DUP)[0]
    return int(hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()[:8], 16) % n


def chunk_count(rows: int, chunk_rows: int) -> int:
    """Chunks for a table of ``rows`` rows, about ``chunk_rows`` each."""
    return max(1, -(-rows // max(1, chunk_rows)))


@dataclass
class ChunkSums:
    """Row count and digest sum per chunk (absent chunks are empty)."""

    n: int
    sums: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, key: str, row: TextRow) -> None:
        b = bucket(key, self.n)
        c, s = self.sums.get(b, (0, 0))
        self.sums[b] = (c + 1, (s + digest(row)) & MASK)

    def put(self, b: int, count: int, total: int) -> None:
        """A chunk summed elsewhere (SQL); ``total`` any integer, taken modulo 2**64."""
        self.sums[b] = (count, total & MASK)

    @property
    def rows(self) -> int:
        return sum(c for c, _ in self.sums.values())


def differing_chunks(a: ChunkSums, b: ChunkSums) -> list[int]:
    """Chunks whose count or sum differ, in order."""
    keys = set(a.sums) | set(b.sums)
    return sorted(k for k in keys if a.sums.get(k, (0, 0)) != b.sums.get(k, (0, 0)))


@dataclass
class KeyDiff:
    """Keys (key text) missing from the view, extra in it, or with a different row."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def all_keys(self) -> set[str]:
        return set(self.missing) | set(self.extra) | set(self.different)

    def only(self, keys: set[str]) -> KeyDiff:
        return KeyDiff(
            [k for k in self.missing if k in keys],
            [k for k in self.extra if k in keys],
            [k for k in self.different if k in keys],
        )


def diff_rows(source: dict[str, TextRow], view: dict[str, TextRow]) -> KeyDiff:
    """Compare rows by key text; each list sorted."""
    missing = sorted(k for k in source if k not in view)
    extra = sorted(k for k in view if k not in source)
    different = sorted(k for k, r in source.items() if k in view and view[k] != r)
    return KeyDiff(missing, extra, different)
