"""How a view kind declares its options (each kind's ``OPTIONS`` in its folder); the
configuration loader validates them once, with errors that name file and key."""

from __future__ import annotations

import os

REQUIRED = object()
"""The default of an option that must be given."""

OptionSpec = tuple[type | tuple[type, ...], str, object]
"""(type, what is expected in words, default or :data:`REQUIRED`)."""


Store = tuple[str, ...]
"""What a view writes, comparable between views (``store_of`` in a kind's package): two
views with the same store are refused at load."""


def secret_text(value: object) -> str:
    """An option's text, a secret's included (for comparing, never for printing)."""
    return str(getattr(value, "value", value) or "")


def path_store(options: dict[str, object]) -> Store:
    """The store of a kind that writes a file or directory at ``path``."""
    return ("path", os.path.realpath(str(options["path"])))
