"""How a view kind declares its options (each kind's ``OPTIONS`` in its folder); the
configuration loader validates them once, with errors that name file and key."""

from __future__ import annotations

REQUIRED = object()
"""The default of an option that must be given."""

OptionSpec = tuple[type | tuple[type, ...], str, object]
"""(type, what is expected in words, default or :data:`REQUIRED`)."""
