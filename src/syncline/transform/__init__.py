"""Transforms: a user's Python function between the log and a view (``transform =
"module:function"`` in ``[views.NAME]``).

The function receives one :class:`Change` per row change of the view's tables, with values
as Python types (:mod:`syncline.transform.values`), and returns what the view should hold
for it:

- ``None`` (or ``[]``): nothing. For an update, the view drops the row it holds for that
  key (a filter that stops matching removes the row);
- a ``dict``: the row for the same table, in place of the source's (rename, mask, add or
  drop columns; the key columns must stay, under their names);
- :class:`Output` rows for other tables (``schema.table``, the row, its key columns), and
  :class:`Delete` to remove a row of such a table; a list mixes any of these.

Transforms run inside the view's batch: the position rules do not change. An error in the
function stops the view naming the function, the table, the row's key, the position and
the traceback (``transform_errors = "skip"``: counted and logged, the row left out).
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncline.core.errors import ConfigError
from syncline.core.events import UNCHANGED

__all__ = ["UNCHANGED", "Change", "Delete", "Output", "load_transform"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row change, as a transform sees it."""

    op: str
    """``insert``, ``update`` or ``delete``."""
    table: str
    """``schema.table`` of the source."""
    new: dict[str, Any] | None
    """The row after an insert or update (None for a delete). A TOASTed value the source did
    not send (unchanged) is :data:`UNCHANGED`: return it as it is and the view keeps its own."""
    old: dict[str, Any] | None
    """Before an update or delete: the key columns (every column with ``REPLICA IDENTITY
    FULL``); None for an insert, or an update that kept the key."""
    key: dict[str, Any]
    """The row's key columns (after the change; before it for a delete)."""
    lsn: str
    """The source position of the transaction (its commit LSN)."""
    seq: int
    """The log record holding it."""
    commit_time: dt.datetime
    """When the source committed the transaction (UTC)."""


@dataclass(frozen=True, slots=True)
class Output:
    """A row for another table of the view (created as its rows arrive)."""

    table: str
    row: dict[str, Any]
    key: tuple[str, ...] = field(default=("id",))


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove the row of ``table`` with ``key`` (column -> value)."""

    table: str
    key: dict[str, Any]


Transform = Callable[[Change], Any]


def load_transform(ref: str, base_dir: Path | None = None) -> Transform:
    """The function ``module:function`` names (ConfigError when it cannot be imported or is
    not callable). The configuration file's directory is searched first."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"expected module:function (e.g. myapp.cdc:shape_product), got {ref!r}")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # an ImportError, or the module's own error at import
        raise ConfigError(f"cannot import {module!r} for {ref}: {type(e).__name__}: {e}") from None
    fn = mod
    for part in name.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
        if fn is None:
            raise ConfigError(f"module {module!r} has no {name!r} (for {ref})")
    if not callable(fn):
        raise ConfigError(f"{ref} is not a function")
    return fn
