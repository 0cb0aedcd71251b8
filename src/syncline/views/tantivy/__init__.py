"""Tantivy full-text search view: one document per source row, searchable by words.

See :mod:`syncline.views.tantivy.view` for the index layout and
:func:`syncline.views.tantivy.view.search` for the query side (``syncline search``).
"""

from __future__ import annotations

from syncline.core.config_models import ViewConfig
from syncline.views.tantivy.view import TantivyView, search


def create_view(cfg: ViewConfig) -> TantivyView:
    return TantivyView(cfg)


__all__ = ["TantivyView", "create_view", "search"]
