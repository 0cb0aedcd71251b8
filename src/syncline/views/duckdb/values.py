"""PostgreSQL text values <-> DuckDB columns (pure; no database access).

Type mapping (source ``format_type()`` after resolving domains -> DuckDB column type):

==============================================  =====================  =========================
PostgreSQL                                      DuckDB                 how text is converted
==============================================  =====================  =========================
smallint / integer / bigint                     SMALLINT/INTEGER/BIGINT CAST from VARCHAR
numeric(p,s), 1 <= p <= 38, 0 <= s <= p         DECIMAL(p,s)           CAST (*)
numeric, numeric(p>38), negative scale          VARCHAR                text form, lossless
real / double precision                         REAL / DOUBLE          CAST (NaN, ±Infinity, -0)
boolean                                         BOOLEAN                CAST (``t``/``f``)
text, varchar(n), char(n), name, "char"         VARCHAR                as is (char(n): ``::text``)
date                                            DATE                   BC -> astronomical year
timestamp [(p)] without time zone               TIMESTAMP              BC -> astronomical year
timestamp [(p)] with time zone                  TIMESTAMPTZ            BC -> astronomical year
time [(p)] without time zone                    TIME                   CAST (``24:00:00`` kept)
interval [fields] [(p)]                         INTERVAL               parsed: months/days/µs
json / jsonb                                    JSON                   text kept byte for byte
bytea (``\\x..`` hex)                            BLOB                   hex decoded
uuid                                            UUID                   CAST
T[] (any dimensionality)                        LIST of T's mapping    array text parsed;
                                                (nested per dimension)  n-D -> n nested lists
enum, inet, cidr, macaddr, money, bit, ranges,  VARCHAR                PostgreSQL text form
composite, geometric, xml, tsvector, timetz...
==============================================  =====================  =========================

(*) DuckDB's DECIMAL cannot hold NaN, which a constrained PostgreSQL numeric column accepts,
and PostgreSQL does not enforce array dimensions. A DECIMAL column that meets NaN, and an
array column that meets arrays of another dimensionality, lower bounds other than 1 or NaN
elements of a numeric array, is converted by the view to VARCHAR holding PostgreSQL's text
(stored values re-rendered): see :meth:`DuckdbView._adapt_columns`. An array column's
nesting depth is otherwise fixed by the first non-empty value it stores. ``±infinity`` and
BC dates round-trip. A TIMESTAMP[TZ] column (or a list of them) that meets a value after
294247-01-10 04:00:54.775806 (DuckDB's limit; PostgreSQL allows up to 294276 AD) becomes
VARCHAR the same way. ``char(n)`` values are stored as ``::text`` gives them (trailing
blanks cut), so that ``=`` compares as in PostgreSQL.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# --------------------------------------------------------------------------- identifiers


def quote_ident(name: str) -> str:
    """A DuckDB identifier, quoted (``"`` doubled): safe for any name."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- mapping


@dataclass(frozen=True, slots=True)
class Mapping:
    """How one PostgreSQL column is stored in DuckDB.

    kind: int, decimal, text, float4, float8, bool, date, timestamp, timestamptz, time,
    interval, json, blob, uuid, list.
    """

    kind: str
    sql: str
    element: Mapping | None = None
    depth: int = 0
    """For lists: nesting depth (array dimensionality)."""

    def with_depth(self, depth: int) -> Mapping:
        assert self.element is not None
        return Mapping("list", self.element.sql + "[]" * depth, self.element, depth)


_NUMERIC = re.compile(r"^numeric(?:\((\d+)(?:,\s*(-?\d+))?\))?$")
_TIMESTAMP = re.compile(r"^timestamp(?:\(\d+\))? (with|without) time zone$")
_TIME = re.compile(r"^time(?:\(\d+\))? without time zone$")

_SIMPLE: dict[str, tuple[str, str]] = {
    "smallint": ("int", "SMALLINT"),
    "integer": ("int", "INTEGER"),
    "bigint": ("int", "BIGINT"),
    "real": ("float4", "REAL"),
    "double precision": ("float8", "DOUBLE"),
    "boolean": ("bool", "BOOLEAN"),
    "date": ("date", "DATE"),
    "json": ("json", "JSON"),
    "jsonb": ("json", "JSON"),
    "bytea": ("blob", "BLOB"),
    "uuid": ("uuid", "UUID"),
}

TEXT = Mapping("text", "VARCHAR")


def map_type(name: str) -> Mapping:
    """Mapping of a scalar type given as ``format_type()`` text (domains resolved)."""
    name = name.strip()
    if name.startswith("pg_catalog."):
        name = name[len("pg_catalog.") :]
    simple = _SIMPLE.get(name)
    if simple:
        return Mapping(*simple)
    m = _NUMERIC.match(name)
    if m:
        if m.group(1) is None:
            return TEXT
        p = int(m.group(1))
        s = int(m.group(2) or 0)
        if 1 <= p <= 38 and 0 <= s <= p:
            return Mapping("decimal", f"DECIMAL({p},{s})")
        return TEXT
    m = _TIMESTAMP.match(name)
    if m:
        return (
            Mapping("timestamptz", "TIMESTAMPTZ")
            if m.group(1) == "with"
            else Mapping("timestamp", "TIMESTAMP")
        )
    if _TIME.match(name):
        return Mapping("time", "TIME")
    if name == "interval" or name.startswith(("interval(", "interval ")):
        return Mapping("interval", "INTERVAL")
    return TEXT


def map_column(col: Any) -> Mapping:
    """Mapping of a :class:`~syncline.core.events.Column` (arrays: depth 1 until data says
    otherwise)."""
    name = (col.base or col.type_name).strip()
    if col.category == "A" or name.endswith("[]"):
        elem_name = col.element or name.removesuffix("[]")
        while elem_name.endswith("[]"):
            elem_name = elem_name[:-2]
        if elem_name == "box":  # the only built-in array type with delimiter ';'
            return TEXT
        elem = map_type(elem_name)
        return Mapping("list", elem.sql + "[]", elem, 1)
    if col.category == "E":
        return TEXT
    return map_type(name)


def list_depth(sql_type: str) -> int:
    """Nesting depth of a DuckDB type name (``INTEGER[][]`` -> 2)."""
    depth = 0
    t = sql_type.strip()
    while t.endswith("[]"):
        depth += 1
        t = t[:-2]
    return depth


# --------------------------------------------------------------------------- array text


class ArrayParseError(ValueError):
    pass


_ARRAY_SPACE = " \t\n\r\v\f"

Nested = list[Any]


def parse_array(text: str, delim: str = ",") -> Nested:
    """Parse PostgreSQL array text into nested lists of ``str | None``.

    Handles quoting, backslash escapes, unquoted ``NULL``, whitespace around elements,
    multiple dimensions and a leading dimension decoration (``[0:1]=``, dropped).
    """
    i = 0
    n = len(text)
    if text.startswith("["):
        eq = text.find("=")
        if eq < 0:
            raise ArrayParseError(f"bad array dimensions: {text[:40]!r}")
        i = eq + 1
    while i < n and text[i] in _ARRAY_SPACE:
        i += 1

    def parse_level(i: int) -> tuple[Nested, int]:
        if i >= n or text[i] != "{":
            raise ArrayParseError(f"expected '{{' at {i} in {text[:40]!r}")
        i += 1
        out: Nested = []
        while True:
            while i < n and text[i] in _ARRAY_SPACE:
                i += 1
            if i >= n:
                raise ArrayParseError("unterminated array")
            c = text[i]
            if c == "}" and not out:
                return out, i + 1
            if c == "{":
                sub, i = parse_level(i)
                out.append(sub)
            elif c == '"':
                i += 1
                buf: list[str] = []
                while True:
                    if i >= n:
                        raise ArrayParseError("unterminated quoted element")
                    c = text[i]
                    if c == "\\":
                        if i + 1 >= n:
                            raise ArrayParseError("dangling backslash")
                        buf.append(text[i + 1])
                        i += 2
                    elif c == '"':
                        i += 1
                        break
                    else:
                        buf.append(c)
                        i += 1
                out.append("".join(buf))
            else:
                buf = []
                last_nonspace = 0
                escaped_any = False
                while i < n:
                    c = text[i]
                    if c == "\\":
                        if i + 1 >= n:
                            raise ArrayParseError("dangling backslash")
                        buf.append(text[i + 1])
                        i += 2
                        last_nonspace = len(buf)
                        escaped_any = True
                        continue
                    if c == delim or c in "{}":
                        break
                    buf.append(c)
                    if c not in _ARRAY_SPACE:
                        last_nonspace = len(buf)
                    i += 1
                word = "".join(buf[:last_nonspace])
                if not word and not escaped_any:
                    raise ArrayParseError(f"empty element in {text[:40]!r}")
                out.append(None if (not escaped_any and word.upper() == "NULL") else word)
            while i < n and text[i] in _ARRAY_SPACE:
                i += 1
            if i >= n:
                raise ArrayParseError("unterminated array")
            if text[i] == delim:
                i += 1
                continue
            if text[i] == "}":
                return out, i + 1
            raise ArrayParseError(f"unexpected {text[i]!r} at {i} in {text[:40]!r}")

    value, i = parse_level(i)
    if text[i:].strip(_ARRAY_SPACE):
        raise ArrayParseError(f"junk after array: {text[i : i + 20]!r}")
    return value


def _needs_quotes(s: str, delim: str) -> bool:
    if s == "" or s.upper() == "NULL":
        return True
    return any(c in '{}"\\' or c == delim or c in _ARRAY_SPACE for c in s)


def render_array(value: Sequence[Any], delim: str = ",") -> str:
    """PostgreSQL array text of nested lists of ``str | None`` (inverse of parse_array)."""
    parts: list[str] = []
    for v in value:
        if isinstance(v, list):
            parts.append(render_array(v, delim))
        elif v is None:
            parts.append("NULL")
        elif _needs_quotes(v, delim):
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(v)
    return "{" + delim.join(parts) + "}"


def value_depth(value: Nested) -> int:
    """Dimensionality of a parsed array (0 for ``{}``)."""
    if not value:
        return 0
    d = 1
    for v in value:
        if isinstance(v, list):
            d = max(d, 1 + value_depth(v))
    return d


# --------------------------------------------------------------------------- interval


_IV_PART = re.compile(r"([+-]?\d+) (year|mon|day)s?")
_IV_TIME = re.compile(r"([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


_I32_MAX = 2**31 - 1
_I32_MIN = -(2**31)
_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)
INTERVAL_INFINITY = (_I32_MAX, _I32_MAX, _I64_MAX)
INTERVAL_MINUS_INFINITY = (_I32_MIN, _I32_MIN, _I64_MIN)


def parse_interval(text: str) -> tuple[int, int, int]:
    """PostgreSQL interval text (IntervalStyle postgres) -> (months, days, microseconds).

    ``infinity`` / ``-infinity`` (PostgreSQL 17+) are the extreme values, as in PostgreSQL.
    """
    if text == "infinity":
        return INTERVAL_INFINITY
    if text == "-infinity":
        return INTERVAL_MINUS_INFINITY
    months = days = micros = 0
    pos = 0
    t = text.strip()
    n = len(t)
    while pos < n:
        if t[pos] == " ":
            pos += 1
            continue
        m = _IV_PART.match(t, pos)
        if m:
            v = int(m.group(1))
            unit = m.group(2)
            if unit == "year":
                months += 12 * v
            elif unit == "mon":
                months += v
            else:
                days += v
            pos = m.end()
            continue
        m = _IV_TIME.match(t, pos)
        if m:
            frac = (m.group(5) or "").ljust(6, "0")
            us = (
                int(m.group(2)) * 3_600_000_000
                + int(m.group(3)) * 60_000_000
                + int(m.group(4)) * 1_000_000
                + (int(frac) if frac else 0)
            )
            micros += -us if m.group(1) == "-" else us
            pos = m.end()
            continue
        raise ValueError(f"unsupported interval text {text!r}")
    return months, days, micros


def _tdiv(a: int, b: int) -> int:
    """C-style truncating division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def render_interval(months: int, days: int, micros: int) -> str:
    """PostgreSQL ``IntervalStyle = postgres`` output of (months, days, microseconds).

    The extreme values are ``infinity`` / ``-infinity`` (as in PostgreSQL 17+; older servers
    print them as finite intervals, which no real data uses).
    """
    if (months, days, micros) == INTERVAL_INFINITY:
        return "infinity"
    if (months, days, micros) == INTERVAL_MINUS_INFINITY:
        return "-infinity"
    year = _tdiv(months, 12)
    mon = months - 12 * year
    out: list[str] = []
    is_zero = True
    is_before = False
    for value, unit in ((year, "year"), (mon, "mon"), (days, "day")):
        if value == 0:
            continue
        out.append(
            ("" if is_zero else " ")
            + ("+" if is_before and value > 0 else "")
            + f"{value} {unit}"
            + ("" if value == 1 else "s")
        )
        is_before = value < 0
        is_zero = False
    hour = _tdiv(micros, 3_600_000_000)
    rest = micros - hour * 3_600_000_000
    minute = _tdiv(rest, 60_000_000)
    rest -= minute * 60_000_000
    sec = _tdiv(rest, 1_000_000)
    fsec = rest - sec * 1_000_000
    if is_zero or hour or minute or sec or fsec:
        minus = hour < 0 or minute < 0 or sec < 0 or fsec < 0
        s = ("" if is_zero else " ") + ("-" if minus else ("+" if is_before else ""))
        s += f"{abs(hour):02d}:{abs(minute):02d}:{abs(sec):02d}"
        if fsec:
            s += "." + f"{abs(fsec):06d}".rstrip("0")
        out.append(s)
    return "".join(out)


# --------------------------------------------------------------------------- floats


def _shortest_text(digits: str, exp10: int, neg: bool, fixed_below: int) -> str:
    """PostgreSQL (ryu) float layout of shortest ``digits`` x 10^(exp10 - len + 1)."""
    sign = "-" if neg else ""
    olen = len(digits)
    if -4 <= exp10 < fixed_below:
        if exp10 < 0:
            return sign + "0." + "0" * (-exp10 - 1) + digits
        if olen <= exp10 + 1:
            return sign + digits + "0" * (exp10 + 1 - olen)
        return sign + digits[: exp10 + 1] + "." + digits[exp10 + 1 :]
    mant = digits[0] + ("." + digits[1:] if olen > 1 else "")
    return f"{sign}{mant}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"


def _special_float(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x == float("inf"):
        return "Infinity"
    if x == float("-inf"):
        return "-Infinity"
    if x == 0:
        return "-0" if struct.pack(">d", x)[0] & 0x80 else "0"
    return None


def _neighbours(x: float, single: bool) -> tuple[Fraction, Fraction]:
    """The adjacent representable values below and above ``x`` (> 0)."""
    if single:
        bits = struct.unpack("<I", struct.pack("<f", x))[0]
        below = struct.unpack("<f", struct.pack("<I", bits - 1))[0]
        above = struct.unpack("<f", struct.pack("<I", bits + 1))[0]
    else:
        below, above = math.nextafter(x, 0.0), math.nextafter(x, math.inf)
    fb, fx = Fraction(below), Fraction(x)
    # past the largest finite value the spacing continues as in the top binade
    fa = Fraction(above) if math.isfinite(above) else fx + (fx - fb)
    return fb, fa


def _round_trip_length(x: float, single: bool) -> int:
    """Digits of the shortest text that reads back as ``x`` (bounds inclusive): a lower
    bound for the exclusive search."""
    if not single:
        mant = repr(x).partition("e")[0].replace(".", "").lstrip("0").rstrip("0")
        return max(1, len(mant))
    for p in range(1, 10):
        if struct.unpack("f", struct.pack("f", float(f"{x:.{p - 1}e}")))[0] == x:
            return p
    return 9  # pragma: no cover


def _shortest_digits(x: float, single: bool) -> tuple[str, int]:
    """Shortest decimal digits (and decimal exponent of the first digit) that lie strictly
    inside ``x``'s rounding interval, closest to ``x`` among those of that length.

    This is PostgreSQL's ryu with ``acceptBounds = false``: a value exactly half-way to a
    neighbour is never used, even when round-half-even would read it back correctly (where
    Python's ``repr`` does use it)."""
    fx = Fraction(x)
    below, above = _neighbours(x, single)
    lo = (fx + below) / 2
    hi = (fx + above) / 2
    e = math.floor(math.log10(x))
    while Fraction(10) ** e > fx:
        e -= 1
    while Fraction(10) ** (e + 1) <= fx:
        e += 1
    for p in range(_round_trip_length(x, single), 18):
        k = e - p + 1
        scale = Fraction(10) ** k
        base = math.floor(fx / scale)
        # closest first; an exact tie goes to the even digit (ryu rounds half to even)
        cands = sorted((base, base + 1), key=lambda c: (abs(c * scale - fx), c % 2))
        for c in cands:
            v = c * scale
            if lo < v < hi:
                text = str(c)
                return text.rstrip("0") or "0", k + len(text) - 1
    raise AssertionError(f"no shortest representation for {x!r}")  # pragma: no cover


def pg_float8(x: float) -> str:
    """float8 output as PostgreSQL prints it (``extra_float_digits`` >= 1: shortest)."""
    special = _special_float(x)
    if special is not None:
        return special
    digits, exp10 = _shortest_digits(abs(x), single=False)
    return _shortest_text(digits, exp10, x < 0, 15)


def pg_float4(x: float) -> str:
    """float4 output as PostgreSQL prints it (shortest digits that round-trip a float32)."""
    special = _special_float(x)
    if special is not None:
        return special
    digits, exp10 = _shortest_digits(abs(x), single=True)
    return _shortest_text(digits, exp10, x < 0, 6)


# --------------------------------------------------------------------------- text -> staging


def bc_to_astronomical(text: str) -> str:
    """``0044-03-15[ time][+00] BC`` -> ``-0043-03-15[ time][+00]`` (year 1 BC = year 0)."""
    if not text.endswith(" BC"):
        return text
    body = text[:-3]
    ystr, _, rest = body.partition("-")
    year = 1 - int(ystr)
    return f"{'-' if year < 0 else ''}{abs(year):04d}-{rest}"


def astronomical_to_bc(duck_text: str) -> str:
    """DuckDB's ``0044-03-15 (BC) 12:00:00`` -> PostgreSQL's ``0044-03-15 12:00:00`` + `` BC``
    (caller appends any zone before the BC marker)."""
    if " (BC)" not in duck_text:
        return duck_text
    return duck_text.replace(" (BC)", "") + " BC"


Converter = Callable[[str], Any]


def _identity(v: str) -> Any:
    return v


def _blob(v: str) -> Any:
    if v.startswith("\\x"):
        return bytes.fromhex(v[2:])
    raise ValueError(f"bytea text must be hex (\\x...): {v[:20]!r}")


def _interval(v: str) -> Any:
    """Interval text DuckDB parses exactly (explicit months, days and microseconds)."""
    months, days, micros = parse_interval(v)
    if micros == _I64_MIN:  # DuckDB parses the magnitude first, which overflows
        return f"{months} months {days} days {micros + 1} microseconds -1 microseconds"
    return f"{months} months {days} days {micros} microseconds"


def converter(m: Mapping) -> Converter:
    """Function from PostgreSQL text (never None) to the staging value of mapping ``m``."""
    if m.kind in ("date", "timestamp", "timestamptz"):
        return bc_to_astronomical
    if m.kind == "interval":
        return _interval
    if m.kind == "blob":
        return _blob
    if m.kind == "list":
        assert m.element is not None
        elem = converter(m.element)
        delim = ","

        def conv_list(v: str) -> Any:
            def walk(x: Nested) -> Nested:
                return [walk(e) if isinstance(e, list) else (None if e is None else elem(e)) for e in x]

            return walk(parse_array(v, delim))

        return conv_list
    return _identity


DUCKDB_MAX_TIMESTAMP = "294247-01-10 04:00:54.775806"
"""DuckDB's largest TIMESTAMP (PostgreSQL's is 294276-12-31 23:59:59.999999)."""

_YEARS = re.compile(r'(?:^|[{,"(\[])(\d{6,})-(\d\d)-(\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d+)?)')


def beyond_duckdb_timestamp(text: str) -> bool:
    """True when a timestamp text (or an array or range text holding timestamps) has a value
    after DuckDB's largest TIMESTAMP. Years before 294247 are always in range; BC years
    PostgreSQL accepts (to 4713 BC) are too."""
    for m in _YEARS.finditer(text):
        year = int(m.group(1))
        if year > 294247:
            return True
        if year == 294247 and (m.group(2), m.group(3), m.group(4)) > ("01", "10", "04:00:54.775806"):
            return True
    return False


def is_identity(m: Mapping) -> bool:
    return converter(m) is _identity


def decimal_text(expr: str) -> str:
    """SQL: PostgreSQL's text of a DECIMAL value (DuckDB prints ``-.5`` for ``-0.5``)."""
    return f"regexp_replace(CAST({expr} AS VARCHAR), '^(-?)\\.', '\\10.')"
