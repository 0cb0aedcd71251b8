"""PostgreSQL output-function text -> the text ``SELECT col::text`` returns (pure; used by
the views that store values as text: Redis, tantivy).

The source sends each value as its type's output function prints it. For most types the
cast to ``text`` is that same I/O conversion; a few types have their own cast to text
(checked against PostgreSQL 13-17):

* ``boolean``: output ``t``/``f``, ``::text`` ``true``/``false``;
* ``character(n)``/``bpchar``: output pads with spaces, ``::text`` trims trailing spaces;
* ``inet``: output omits a full mask (``1.2.3.4``), ``::text`` always shows it
  (``1.2.3.4/32``, ``::1/128``). ``cidr`` always prints the mask.

Arrays of these types are cast with array_out, i.e. element *output* text (``{t,f}``), so
they are stored unchanged. Domains follow their base type (``Column.base``).
"""

from __future__ import annotations

from collections.abc import Callable

from syncline.core.events import Column

Converter = Callable[[str], str]


def _bool(v: str) -> str:
    if v == "t":
        return "true"
    if v == "f":
        return "false"
    return v


def _bpchar(v: str) -> str:
    return v.rstrip(" ")


def _inet(v: str) -> str:
    if "/" in v:
        return v
    return v + ("/128" if ":" in v else "/32")


def is_bpchar(col: Column) -> bool:
    """A scalar ``character(n)`` column (domains resolved)."""
    if col.category == "A":
        return False
    t = (col.base or col.type_name).strip().lower()
    return t in ("bpchar", "character", "char") or t.startswith(("character(", "char(", "bpchar("))


def converter(col: Column) -> Converter | None:
    """The text conversion for ``col`` (None: the output text is already ``::text``)."""
    if col.category == "A":
        return None
    t = (col.base or col.type_name).lower()
    if t in ("boolean", "bool"):
        return _bool
    if is_bpchar(col):
        return _bpchar
    if t == "inet":
        return _inet
    return None


__all__ = ["Converter", "converter", "is_bpchar"]
