"""View kinds by name: one line per kind. Each kind is one folder whose package (light to
import) declares ``EXTRA``, ``OPTIONS``, ``CHOICES``, ``check_options``, ``create_view``,
``open_reader`` and ``reader_on_view``, and optionally ``rebuild_target`` (``syncline
rebuild``), ``PARTITIONABLE`` (``partitions = N``) and ``SEQUENCES`` (batches carry the
source's sequences); the connector's libraries load only when a view of the kind is created
(optional extras)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from syncline.core.config_models import ViewConfig
from syncline.core.errors import ConfigError
from syncline.log.base import LogControl
from syncline.views.base import View

KINDS = {
    "postgres": "syncline.views.postgres",
    "duckdb": "syncline.views.duckdb",
    "ducklake": "syncline.views.ducklake",
    "iceberg": "syncline.views.iceberg",
    "redis": "syncline.views.redis",
    "tantivy": "syncline.views.tantivy",
    "outbox": "syncline.views.outbox",
}


def kind_module(kind: str) -> ModuleType:
    return importlib.import_module(KINDS[kind])


def create_view(cfg: ViewConfig, control: LogControl | None = None, state_dir: Path | None = None) -> View:
    """The view of ``cfg`` (behind its transform when it has one, ``control`` keeping the
    transform's output shapes; fed its joined documents when it declares one, their state
    in ``state_dir``)."""
    if cfg.document is not None:
        from dataclasses import replace

        from syncline.transform.stage import joining

        if state_dir is None:
            raise ConfigError(f"view {cfg.name!r}: joined documents need the log's directory for their state")
        return joining(_create(replace(cfg, tables=(), document=None)), cfg, state_dir)
    if cfg.transform is not None:
        from dataclasses import replace

        from syncline.transform.stage import transforming

        # the tables patterns choose source tables; the view holds the transform's output
        return transforming(_create(replace(cfg, tables=(), transform=None)), cfg, control)
    return _create(cfg)


def _create(cfg: ViewConfig) -> View:
    if cfg.kind == "compacted":
        from pathlib import Path

        from syncline.log.embedded.compact import CompactedView

        return CompactedView(Path(str(cfg.options["path"])))
    mod = kind_module(cfg.kind)
    factory: Callable[[ViewConfig], View] = mod.create_view
    try:
        return factory(cfg)
    except ImportError as e:
        raise ConfigError(
            f"view {cfg.name!r} (kind {cfg.kind}) needs the {mod.EXTRA!r} extra: "
            f"pip install 'syncline[{mod.EXTRA}]' ({e})"
        ) from e
