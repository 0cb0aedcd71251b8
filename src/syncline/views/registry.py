"""View kinds by name; each connector is imported only when configured (optional extras)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError
from syncline.views.base import View

KINDS = {
    "postgres": ("syncline.views.postgres", "postgres"),
    "duckdb": ("syncline.views.duckdb", "duckdb"),
    "redis": ("syncline.views.redis", "redis"),
    "tantivy": ("syncline.views.tantivy", "tantivy"),
}


def create_view(cfg: ViewConfig) -> View:
    if cfg.kind == "compacted":
        from pathlib import Path

        from syncline.log.embedded.compact import CompactedView

        return CompactedView(Path(str(cfg.options["path"])))
    module, extra = KINDS[cfg.kind]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"view {cfg.name!r} (kind {cfg.kind}) needs the {extra!r} extra: "
            f"pip install 'syncline[{extra}]' ({e})"
        ) from e
    factory: Callable[[ViewConfig], View] = mod.create_view
    return factory(cfg)
