"""Reading the tantivy view back for ``syncline verify`` (see :mod:`syncline.verify.readers`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from syncline.core.config_models import ViewConfig
from syncline.core.keytemplate import table_text
from syncline.verify.chunks import TextRow, key_text
from syncline.verify.readers import VerifyError, _RowReader, option
from syncline.verify.source import TableSpec


class TantivyReader(_RowReader):
    def __init__(self, vcfg: ViewConfig) -> None:
        import tantivy

        try:
            self.index: Any = tantivy.Index.open(option(vcfg, "path"))
        except Exception as e:  # tantivy raises ValueError or OSError
            raise VerifyError(f"view {vcfg.name} (tantivy): cannot open the index: {e}") from None
        self.index.reload()
        self.tantivy: Any = tantivy

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        from syncline.views.tantivy.view import F_ROW, F_TABLE

        self.index.reload()
        searcher = self.index.searcher()
        query = self.tantivy.Query.term_query(self.index.schema, F_TABLE, table_text(spec.schema, spec.name))
        n = searcher.search(query, 1).count or 0
        for _score, addr in searcher.search(query, n).hits if n else []:
            d = searcher.doc(addr)
            raw = d.get_first(F_ROW)
            stored = json.loads(bytes(raw)) if raw is not None else None
            fields: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
            row = tuple(None if fields.get(c) is None else str(fields.get(c)) for c in spec.columns)
            yield key_text(row, spec.key_idx), row
