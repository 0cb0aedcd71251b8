"""Redis key templates: ``{table}:{pk}`` and friends (pure; checked at config load)."""

from __future__ import annotations

import string
from collections.abc import Sequence

from syncline.core.errors import ConfigError

PLACEHOLDERS = frozenset({"table", "schema", "name", "pk"})
"""``{table}`` = schema.table, ``{schema}``, ``{name}``, ``{pk}`` = key columns' text joined by ':'
(each escaped so that no two rows share a key: :func:`table_text`, :func:`pk_text`)."""


def escape_name(name: str) -> str:
    """A schema or table name in a key: ``\\``, ``:`` and ``.`` escaped with a backslash."""
    if "\\" in name or ":" in name or "." in name:
        return name.replace("\\", "\\\\").replace(":", "\\:").replace(".", "\\.")
    return name


def table_text(schema: str, name: str) -> str:
    """``{table}`` of a key: ``schema.table``, each name escaped (:func:`escape_name`), so
    ``s."t.u"`` and ``"s.t".u`` differ."""
    return escape_name(schema) + "." + escape_name(name)


def escape_part(text: str) -> str:
    """One column's text in a key of several columns: ``\\`` and ``:`` escaped."""
    if "\\" in text or ":" in text:
        return text.replace("\\", "\\\\").replace(":", "\\:")
    return text


def pk_text(values: Sequence[str | None]) -> str:
    """``{pk}``: a single key column's text unchanged; several joined by ``:``, each escaped
    (:func:`escape_part`), so ``('a:b', 'c')`` and ``('a', 'b:c')`` differ. NULL is empty."""
    if len(values) == 1:
        return values[0] or ""
    return ":".join([escape_part(v or "") for v in values])


def fill(template: str, schema: str, name: str, pk: str) -> str:
    """The key of a table's row whose ``{pk}`` is ``pk`` (already :func:`pk_text`)."""
    return template.format(
        table=table_text(schema, name), schema=escape_name(schema), name=escape_name(name), pk=pk
    )


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def key_glob(template: str, schema: str, name: str) -> str:
    """A Redis glob matching every key of a table (``{pk}`` as ``*``)."""
    return template.format(
        table=glob_escape(table_text(schema, name)),
        schema=glob_escape(escape_name(schema)),
        name=glob_escape(escape_name(name)),
        pk="*",
    )


def validate_template(view: str, template: str) -> None:
    """Raise ConfigError unless ``template`` uses only the known placeholders."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"view {view!r} (redis): option 'key' {template!r}: {e}") from None
    used = set()
    for _, field, spec, conv in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conv:
            raise ConfigError(
                f"view {view!r} (redis): option 'key' {template!r}: unknown placeholder "
                f"{{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                f"(expected {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})"
            )
        used.add(field)
    if "pk" not in used:
        raise ConfigError(f"view {view!r} (redis): option 'key' {template!r}: must contain {{pk}}")
