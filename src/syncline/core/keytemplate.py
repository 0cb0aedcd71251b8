"""Redis key templates: ``{table}:{pk}`` and friends (pure; checked at config load)."""

from __future__ import annotations

import string

from syncline.core.errors import ConfigError

PLACEHOLDERS = frozenset({"table", "schema", "name", "pk"})
"""``{table}`` = schema.table, ``{schema}``, ``{name}``, ``{pk}`` = key columns' text joined by ':'."""


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
