"""Tantivy full-text search view: one document per source row, searchable by words.

See :mod:`syncline.views.tantivy.view` for the index layout and
:func:`syncline.views.tantivy.view.search` for the query side (``syncline search``). Light to
import: the view and its verify reader load when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncline.core.config_models import ViewConfig
from syncline.views.options import REQUIRED, OptionSpec, Store, path_store

if TYPE_CHECKING:
    from syncline.core.config_models import Config
    from syncline.runtime.rebuild import Target
    from syncline.verify.readers import ViewReader
    from syncline.views.tantivy.view import TantivyView

EXTRA = "tantivy"
BATCH_INTERVAL = 0.1
"""Default ``batch_interval`` (seconds): with ``commit_interval = 0`` a batch is an index
commit (segment files, fsync)."""
OPTIONS: dict[str, OptionSpec] = {
    "path": (str, "a directory path", REQUIRED),
    "text_fields": (list, "a list of column names", None),
    "tokenizer": (str, "a tantivy tokenizer name, e.g. en_stem", "default"),
    "commit_interval": (float, "seconds between commits (0: every batch)", 0.0),
    "on_error": (str, '"stop" or "skip"', "stop"),
}
CHOICES: dict[str, tuple[str, ...]] = {"on_error": ("stop", "skip")}


def check_options(view: str, options: dict[str, object]) -> None:
    """Checks beyond types (none for this kind)."""


def create_view(cfg: ViewConfig) -> TantivyView:
    from syncline.views.tantivy.view import TantivyView

    return TantivyView(cfg)


def open_reader(cfg: ViewConfig) -> ViewReader:
    from syncline.views.tantivy.reader import TantivyReader

    return TantivyReader(cfg)


def reader_on_view(cfg: ViewConfig, view: object) -> ViewReader | None:
    return None


def rebuild_target(cfg: Config, vcfg: ViewConfig) -> Target:
    """``syncline rebuild``: a shadow index directory beside the view's, exchanged with it;
    every batch committed (the verifier reads the shadow)."""
    from syncline.runtime.rebuild import PathTarget

    return PathTarget.beside(vcfg, commit_interval=0.0)


def store_of(options: dict[str, object]) -> Store:
    return path_store(options)
