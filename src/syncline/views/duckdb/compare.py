"""Render values read back from a DuckDB warehouse as PostgreSQL text (for verification).

Some DuckDB values lose information when fetched as Python objects (``infinity`` dates
become ``date.max``, BC years do not exist in :mod:`datetime`, INTERVAL months turn into
30-day ``timedelta``). Read columns through :func:`select_expr` (or use
:func:`fetch_text_rows`), which returns those values in a lossless form, then
:func:`to_pg_text` gives exactly what ``SELECT col::text`` prints in PostgreSQL with
``TimeZone = 'UTC'`` and default output settings.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from syncline.core.events import Column, Relation
from syncline.core.textcast import is_bpchar
from syncline.views.duckdb.values import (
    Mapping,
    astronomical_to_bc,
    list_depth,
    map_column,
    pg_float4,
    pg_float8,
    quote_ident,
    render_array,
    render_interval,
)


def _expr(m: Mapping, x: str, depth: int = 1) -> str:
    if m.kind in ("date", "timestamp"):
        return f"CAST({x} AS VARCHAR)"
    if m.kind == "timestamptz":
        return f"CAST(timezone('UTC', {x}) AS VARCHAR)"
    if m.kind == "interval":
        return (
            f"CASE WHEN {x} IS NULL THEN NULL ELSE "
            f"struct_pack(m := datepart('year', {x}) * 12 + datepart('month', {x}), "
            f"d := datepart('day', {x}), "
            f"u := datepart('hour', {x}) * 3600000000 + datepart('minute', {x}) * 60000000"
            f" + datepart('microseconds', {x})) END"
        )
    if m.kind == "list":
        assert m.element is not None
        var = f"e{depth}"
        inner = (
            _expr(m.with_depth(m.depth - 1), var, depth + 1)
            if m.depth > 1
            else _expr(m.element, var, depth + 1)
        )
        if inner == var:
            return x
        return f"list_transform({x}, lambda {var}: {inner})"
    return x


def select_expr(column: Column, ident_sql: str, sql_type: str | None = None) -> str:
    """SQL expression reading ``ident_sql`` (a quoted column of mapping ``column``) in the
    form :func:`to_pg_text` expects. ``sql_type``: the column's actual DuckDB type, which
    fixes the nesting depth of arrays (default: the mapping's)."""
    m = map_column(column)
    if stored_as_text(column, sql_type):
        return ident_sql
    if m.kind == "list" and sql_type is not None:
        m = m.with_depth(list_depth(sql_type))
    return _expr(m, ident_sql)


def stored_as_text(column: Column, sql_type: str | None) -> bool:
    """True when a column of a non-text mapping holds PostgreSQL's text instead (a DECIMAL
    column that met NaN, an array column that met arrays of mixed dimensionality...)."""
    if sql_type is None or map_column(column).kind == "text":
        return False
    return sql_type == "VARCHAR"


def _bc_zone(text: str, zone: str) -> str:
    if text in ("infinity", "-infinity"):
        return text
    fixed = astronomical_to_bc(text)
    if fixed.endswith(" BC"):
        return fixed[:-3] + zone + " BC"
    return fixed + zone


def _time_text(t: dt.time) -> str:
    s = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        s += "." + f"{t.microsecond:06d}".rstrip("0")
    return s


def _scalar(value: Any, m: Mapping) -> str:
    kind = m.kind
    if isinstance(value, str):
        if kind in ("date", "timestamp"):
            return astronomical_to_bc(value)
        if kind == "timestamptz":
            return _bc_zone(value, "+00")
        if kind == "blob":
            return value
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if kind == "float8" and isinstance(value, float):
        return pg_float8(value)
    if kind == "float4" and isinstance(value, float):
        return pg_float4(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return render_interval(int(value["m"]), int(value["d"]), int(value["u"]))
    if isinstance(value, dt.timedelta):
        return render_interval(0, value.days, value.seconds * 1_000_000 + value.microseconds)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            u = value.astimezone(dt.UTC).replace(tzinfo=None)
            return _time_join(u) + "+00"
        return _time_join(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return _time_text(value)
    return str(value)


def _time_join(v: dt.datetime) -> str:
    return f"{v.date().isoformat()} {_time_text(v.time())}"


def _cast_text(text: str, column: Column) -> str:
    """Output-function text -> what ``col::text`` prints, for the few types that differ."""
    base = (column.base or column.type_name).strip()
    if base == "boolean":
        return "true" if text == "t" else "false"
    if is_bpchar(column):
        return text.rstrip(" ")
    if base == "inet" and "/" not in text:
        return text + ("/128" if ":" in text else "/32")
    return text


def to_pg_text(value: Any, column: Column, *, cast: bool = True, sql_type: str | None = None) -> str | None:
    """PostgreSQL text of a value read from DuckDB (read it with :func:`select_expr`).

    ``cast=True`` (default): what ``SELECT col::text`` prints (TimeZone UTC). ``cast=False``:
    the type's output function, as logical replication sends it. They differ only for
    ``boolean`` (``true`` / ``t``), ``char(n)`` (trailing blanks cut / kept) and ``inet``
    (``/32`` always / only when not a host address); array elements always use the output
    function, as PostgreSQL's array output does. ``sql_type``: the column's actual DuckDB
    type (see :func:`select_expr`).
    """
    if value is None:
        return None
    if cast:
        out = to_pg_text(value, column, cast=False, sql_type=sql_type)
        return None if out is None else _cast_text(out, column)
    if isinstance(value, str) and is_bpchar(column):
        # stored as ``::text`` gives it; the output function pads to the declared length
        return value.ljust(column.typmod - 4) if column.typmod > 4 else value
    if isinstance(value, str) and stored_as_text(column, sql_type):
        return value
    m = map_column(column)
    if m.kind == "list":
        if isinstance(value, str):  # stored as text
            return value
        assert m.element is not None
        elem = m.element

        def walk(x: list[Any]) -> list[Any]:
            return [walk(e) if isinstance(e, list) else (None if e is None else _scalar(e, elem)) for e in x]

        return render_array(walk(list(value)))
    return _scalar(value, m)


def table_types(conn: Any, schema: str, name: str) -> dict[str, str]:
    """Actual DuckDB column types of a table, by column name."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = ? AND table_name = ? AND database_name = current_database()",
        [schema, name],
    ).fetchall()
    return {str(n): str(t) for n, t in rows}


def fetch_text_rows(
    conn: Any, relation: Relation, types: dict[str, str] | None = None, *, cast: bool = True
) -> list[tuple[str | None, ...]]:
    """Every row of ``relation``'s DuckDB table as PostgreSQL text tuples (unordered).

    ``conn``: a DuckDB connection (read-only is fine); ``types``: actual DuckDB column types
    by name (default: looked up); ``cast``: see :func:`to_pg_text`.
    """
    if types is None:
        types = table_types(conn, relation.schema, relation.name)
    cols = relation.columns
    exprs = [select_expr(c, quote_ident(c.name), types.get(c.name)) for c in cols]
    table = f"{quote_ident(relation.schema)}.{quote_ident(relation.name)}"
    rows = conn.execute(f"SELECT {', '.join(exprs)} FROM {table}").fetchall()  # noqa: S608
    kinds = [types.get(c.name) for c in cols]
    return [
        tuple(to_pg_text(v, c, cast=cast, sql_type=t) for v, c, t in zip(r, cols, kinds, strict=True))
        for r in rows
    ]
