"""A table shape's document builder, generated once per shape (pure).

Building a document is the tantivy view's hot path in Python: one JSON text per row holding
the id, the key, every column (``doc``), the row again for reading back (``_row``, base64),
the words (``text``), the numbers (``num``) and the dates (``date``). A loop over the
columns pays, per value, for the loop, the lookups and the ``None`` tests of every feature;
the function generated here has them unrolled for the shape's columns (the technique of
``dataclasses`` and ``attrs``): for the benchmark's table (an integer key, a text and an
integer column) 3.9 µs a row instead of 9.4 (``bench/micro.py``, docs/benchmarks-micro.md).

The generated source is built only from column positions and from constants passed in as
values (names, prefixes: never pasted into the code), so no column name can change what it
does. :func:`document_reference` is the plain loop it must equal (the tests compare them).
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from syncline.core.keytemplate import escape_part, pk_text
from syncline.core.textcast import Converter
from syncline.views.tantivy.values import Date, Number

Document = tuple[str, str, str]
"""(the document's id term, the document as JSON text for ``add_json``, the row's JSON)."""

Builder = Callable[[Sequence[Any]], Document]


@dataclass(frozen=True, slots=True)
class DocShape:
    """What a table shape's documents are made of."""

    head: str
    """The start of every document: ``{"_table":"schema.table","_id":``."""
    id_prefix: str
    """The start of every id: ``["schema.table",``."""
    enames: Sequence[str]
    """The columns' JSON keys: ``"name":``."""
    kidx: Sequence[int]
    """The key columns."""
    texts: Sequence[Converter | None] | None
    """Per column its ``::text`` conversion (None: no column needs one)."""
    text_idx: Sequence[int]
    """The columns whose words go into ``text``."""
    nums: Sequence[tuple[str, int, Number]]
    """(JSON key, column, conversion) of the number columns."""
    dates: Sequence[tuple[str, int, Date]]
    """(JSON key, column, conversion) of the date and timestamp columns."""


def compile_document(shape: DocShape) -> Builder:
    """The builder of a shape's documents."""
    head, id_prefix, enames, kidx = shape.head, shape.id_prefix, shape.enames, shape.kidx
    texts, text_idx, nums, dates = shape.texts, shape.text_idx, shape.nums, shape.dates
    n = len(enames)
    env: dict[str, Any] = {"enc": encode_basestring, "b64": b2a_base64, "esc": escape_part}
    lines = ["def build(vals):", f"    {_targets(n)} = vals"]
    if texts is not None:
        for i, f in enumerate(texts):
            if f is not None:
                env[f"t{i}"] = f
                lines.append(f"    if v{i} is not None: v{i} = t{i}(v{i})")
    for i in range(n):
        lines.append(f"    e{i} = 'null' if v{i} is None else enc(v{i})")
    env["id_prefix"] = id_prefix
    ids = "".join(f"e{k} + ',' + " for k in kidx[:-1]) + _last(kidx, "e")
    lines.append("    i = id_prefix + " + ids + "']'")
    if not kidx:
        lines.append("    key = ''")
    elif len(kidx) == 1:
        lines.append(f"    key = v{kidx[0]} or ''")
    else:
        lines.append("    key = ':'.join([" + ", ".join(f"esc(v{k} or '')" for k in kidx) + "])")
    for i, name in enumerate(enames):
        env[f"n{i}"] = ("{" if i == 0 else ",") + name
    lines.append("    row = " + "".join(f"n{i} + e{i} + " for i in range(n)) + ("'}'" if n else "'{}'"))
    env["head"] = head
    lines.append(
        '    out = [head, enc(i), \',"_key":\', enc(key), \',"doc":\', row, \',"_row":"\','
        " b64(row.encode(), newline=False).decode('ascii'), '\"']"
    )
    if text_idx:
        lines.append("    words = []")
        for j in text_idx:
            lines.append(f"    if v{j}: words.append(e{j})")
        lines.append("    if words: out += [',\"text\":[', ','.join(words), ']']")
    for field, entries, render in (("num", nums, "repr(x)"), ("date", dates, "'\"' + x + '\"'")):
        if not entries:
            continue
        lines.append("    parts = []")
        for name, j, conv in entries:
            env[f"{field}{j}"] = conv
            env[f"{field}_n{j}"] = name
            lines.append(f"    if v{j} is not None:")
            lines.append(f"        x = {field}{j}(v{j})")
            lines.append(f"        if x is not None: parts.append({field}_n{j} + {render})")
        lines.append(f"    if parts: out += [',\"{field}\":{{', ','.join(parts), '}}']")
    lines.append("    out.append('}')")
    lines.append("    return i, ''.join(out), row")
    exec("\n".join(lines), env)  # code built from positions only (see above)
    built: Builder = env["build"]
    return built


def _last(kidx: Sequence[int], var: str) -> str:
    """The last key column's term of the id expression (nothing without key columns)."""
    return f"{var}{kidx[-1]} + " if kidx else ""


def _targets(n: int) -> str:
    """The unpacking targets of ``n`` values (a one-element tuple needs its comma)."""
    names = ", ".join(f"v{i}" for i in range(n))
    return names + "," if n == 1 else names if n else "()"


def document_reference(shape: DocShape, vals: Sequence[Any]) -> Document:
    """What :func:`compile_document`'s builder returns, as a plain loop (for the tests)."""
    id_prefix, enames, kidx, texts = shape.id_prefix, shape.enames, shape.kidx, shape.texts
    if texts is not None:
        vals = [v if f is None or v is None else f(v) for f, v in zip(texts, vals, strict=True)]
    enc = [None if v is None else encode_basestring(v) for v in vals]
    i = id_prefix + ",".join(["null" if enc[k] is None else str(enc[k]) for k in kidx]) + "]"
    key = pk_text([vals[k] for k in kidx])
    row = "{" + ",".join([n + ("null" if e is None else e) for n, e in zip(enames, enc, strict=True)]) + "}"
    parts = [shape.head, encode_basestring(i), ',"_key":', encode_basestring(key), ',"doc":', row]
    parts += [',"_row":"', b2a_base64(row.encode(), newline=False).decode("ascii"), '"']
    words = [e for j in shape.text_idx if (e := enc[j]) is not None and vals[j]]
    if words:
        parts += [',"text":[', ",".join(words), "]"]
    found = [
        n + repr(x) for n, j, num in shape.nums if (v := vals[j]) is not None and (x := num(v)) is not None
    ]
    if found:
        parts += [',"num":{', ",".join(found), "}"]
    stamps = [
        n + '"' + t + '"'
        for n, j, date in shape.dates
        if (v := vals[j]) is not None and (t := date(v)) is not None
    ]
    if stamps:
        parts += [',"date":{', ",".join(stamps), "}"]
    parts.append("}")
    return i, "".join(parts), row


__all__ = ["Builder", "DocShape", "Document", "compile_document", "document_reference"]
