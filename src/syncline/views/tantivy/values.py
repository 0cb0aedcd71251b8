"""Column values of a tantivy document: ``::text`` normalisation, numbers and dates (pure).

The source sends each value as its type's output function prints it; documents store what
``SELECT col::text`` returns (the conversion is :mod:`syncline.core.textcast`, shared with the Redis view):

* ``boolean``: output ``t``/``f``, ``::text`` ``true``/``false``;
* ``character(n)``: output pads with spaces, ``::text`` trims trailing spaces;
* ``inet``: output omits a full mask, ``::text`` always shows it.

Every conversion is idempotent (snapshot rows already arrive in ``::text`` form).

Numbers (integer, real, double precision, numeric) also go into the fast JSON field ``num``
when finite; dates, timestamps and timestamptz into the fast JSON field ``date`` as RFC 3339
UTC strings (tantivy indexes those as dates) when tantivy can represent them (years
1678-2261: it counts nanoseconds in 64 bits); ``infinity``, BC dates and dates outside that
range are stored only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from syncline.core.events import Column
from syncline.core.textcast import Converter
from syncline.core.textcast import converter as text_converter

Number = Callable[[str], int | float | None]
Date = Callable[[str], str | None]

_INTS = {"smallint", "integer", "bigint", "int2", "int4", "int8", "oid"}
_FLOATS = {"real", "double precision", "float4", "float8", "numeric", "decimal"}


def _type(col: Column) -> str:
    return (col.base or col.type_name).split("(", 1)[0].strip().lower()


_WORDY = {
    "text",
    "character varying",
    "varchar",
    "character",
    "bpchar",
    "char",
    "name",
    "citext",
    "json",
    "jsonb",
    "xml",
}


def is_wordy(col: Column) -> bool:
    """Whether a column holds words (string, enum, JSON and XML types, and arrays of them):
    the columns of the ``text`` field when ``text_fields`` is not configured."""
    if col.category in ("S", "E"):
        return True
    t = (col.element if col.category == "A" and col.element else col.base or col.type_name).lower()
    return t.split("(", 1)[0].strip() in _WORDY


def _int(v: str) -> int | None:
    try:
        return int(v)
    except ValueError:
        return None


def _float(v: str) -> float | None:
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def number_converter(col: Column) -> Number | None:
    """Text -> the number stored in ``num`` (None: not a number column)."""
    if col.category == "A":
        return None
    t = _type(col)
    if t in _INTS:
        return _int
    if t in _FLOATS:
        return _float
    return None


_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?: (\d\d:\d\d:\d\d(?:\.\d{1,6})?)(?:([+-])(\d\d)(?::(\d\d))?)?)?")
MIN_YEAR, MAX_YEAR = 1678, 2261
"""Years whose dates tantivy can represent (nanoseconds since 1970 in an i64)."""


def _rfc3339(v: str) -> str | None:
    """PostgreSQL ``date``/``timestamp``/``timestamptz`` text (ISO DateStyle, any offset) ->
    RFC 3339 in UTC; None for infinity, BC and years tantivy cannot represent."""
    if v.endswith("+00") and len(v) >= 22 and v[4] == "-" and v[10] == " ":  # timestamptz in UTC
        y = v[:4]
        if y.isdigit() and MIN_YEAR <= int(y) <= MAX_YEAR:
            return f"{v[:10]}T{v[11:-3]}Z"
        return None
    m = _STAMP.fullmatch(v)
    if m is None:
        return None  # infinity, BC, years beyond 9999
    year, _mo, _d, clock, sign, oh, om = m.groups()
    if not MIN_YEAR <= int(year) <= MAX_YEAR:
        return None
    if clock is None:
        return f"{v[:10]}T00:00:00Z"
    if sign is None or (oh == "00" and om in (None, "00")):
        return f"{v[:10]}T{clock}Z"
    return f"{v[:10]}T{clock}{sign}{oh}:{om or '00'}"


def date_converter(col: Column) -> Date | None:
    """Text -> the RFC 3339 string stored in ``date`` (None: not a date/time column)."""
    if col.category == "A":
        return None
    t = (col.base or col.type_name).lower()
    if t.startswith("timestamp") or t == "date":  # without time zone: taken as UTC
        return _rfc3339
    return None


__all__ = ["Converter", "date_converter", "is_wordy", "number_converter", "text_converter"]
