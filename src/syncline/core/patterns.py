"""Table selection: glob patterns over ``schema.table``; a pattern starting with ``!``
excludes what it matches. No inclusion pattern means every table."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def table_selected(patterns: Iterable[str], qualified: str) -> bool:
    """True when ``qualified`` matches an inclusion pattern (or there is none) and no
    exclusion pattern (``!schema.table``)."""
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    if include and not any(fnmatchcase(qualified, p) for p in include):
        return False
    return not any(fnmatchcase(qualified, p) for p in exclude)


def column_excluded(patterns: Iterable[str], schema: str, table: str, column: str) -> bool:
    """True when ``schema.table.column`` matches one of ``patterns``
    (``source.exclude_columns``)."""
    name = f"{schema}.{table}.{column}"
    return any(fnmatchcase(name, p) for p in patterns)


def unmatched_patterns(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The patterns (inclusions and exclusions alike) that match none of ``names``."""
    known = list(names)
    return [p for p in patterns if not any(fnmatchcase(q, p.removeprefix("!")) for q in known)]


def selection_warnings(
    source_patterns: Iterable[str],
    views: Iterable[tuple[str, tuple[str, ...], tuple[str, ...]]],
    all_tables: Iterable[str],
    columns: dict[str, list[str]],
) -> list[str]:
    """Warnings for configured names that match nothing: ``source.tables`` patterns against
    every table of the database, each view's ``tables`` against the captured tables
    (``columns``' keys), and each view's ``text_fields`` against their columns.
    ``views`` holds (name, tables, text_fields)."""
    out = [
        f"source.tables pattern {p!r} matches no table (yet)"
        for p in unmatched_patterns(source_patterns, all_tables)
    ]
    for name, patterns, text_fields in views:
        out += [
            f"view {name!r}: tables pattern {p!r} matches no captured table (yet)"
            for p in unmatched_patterns(patterns, columns)
        ]
        followed = [q for q in columns if table_selected(patterns, q)]
        known = {c for q in followed for c in columns[q]}
        out += [
            f"view {name!r}: text_fields names {f!r}, a column of none of its tables"
            for f in text_fields
            if followed and f not in known
        ]
    return out
