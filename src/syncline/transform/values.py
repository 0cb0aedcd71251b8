"""Values between PostgreSQL's text output (how the log carries them) and the Python types a
transform works with, both ways, without loss for what the transform leaves alone.

To Python (psycopg's own text loaders, no connection needed): integers, ``numeric`` as
``Decimal``, floats, booleans, text types, ``json``/``jsonb`` parsed, ``uuid``, ``bytea``
as ``bytes``, dates and timestamps (``timestamptz`` in UTC), times, and arrays of these as
lists. Every other type (``interval``, ``money``, ranges, enums, network and geometric
types, ...) and any value a loader refuses (``infinity`` dates) stays the text PostgreSQL
printed, so it goes back unchanged.

Back to text: a value the transform returns unchanged (the same object) goes back as the
original text; others are printed as PostgreSQL reads them."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format

from syncline.core.events import Column

_LOADED = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "name",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1083: "time",
    1114: "timestamp",
    1184: "timestamptz",
    1266: "timetz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}
"""Type oids converted to Python; arrays of them too (their array oids below)."""
_ARRAYS = {
    1000: 16,
    1001: 17,
    1005: 21,
    1007: 23,
    1016: 20,
    1009: 25,
    1015: 1043,
    1014: 1042,
    1021: 700,
    1022: 701,
    1231: 1700,
    1182: 1082,
    1115: 1114,
    1185: 1184,
    2951: 2950,
    199: 114,
    3807: 3802,
}

_tx = Transformer()


def to_python(text: str | None, column: Column) -> Any:
    """The value a transform sees for ``text`` in ``column``."""
    if text is None:
        return None
    oid = column.type_oid
    if oid not in _LOADED and oid not in _ARRAYS:
        return text
    try:
        return _tx.get_loader(oid, Format.TEXT).load(text.encode())
    except Exception:  # out of Python's range (infinity, year 0), or a loader's refusal
        return text


def type_of(value: Any) -> tuple[int, str, str]:
    """(type oid, type name, category) of a new column, by its first non-NULL value."""
    if isinstance(value, bool):
        return 16, "boolean", "B"
    if isinstance(value, int):
        return 20, "bigint", "N"
    if isinstance(value, float):
        return 701, "double precision", "N"
    if isinstance(value, Decimal):
        return 1700, "numeric", "N"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return 1184, "timestamp with time zone", "D"
        return 1114, "timestamp without time zone", "D"
    if isinstance(value, dt.date):
        return 1082, "date", "D"
    if isinstance(value, dt.time):
        return 1083, "time without time zone", "D"
    if isinstance(value, uuid.UUID):
        return 2950, "uuid", "U"
    if isinstance(value, bytes | bytearray | memoryview):
        return 17, "bytea", "U"
    if isinstance(value, dict | list | tuple):
        return 3802, "jsonb", "U"
    return 25, "text", "S"


def to_text(value: Any, column: Column) -> str | None:
    """``value`` as PostgreSQL's text input for ``column``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list | tuple):
        if column.category == "A" and isinstance(value, list | tuple):
            return bytes(_tx.get_dumper(list(value), PyFormat.TEXT).dump(list(value)) or b"").decode()
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)
