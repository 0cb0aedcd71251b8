"""Reading the Redis view back for ``syncline verify`` (see :mod:`syncline.verify.readers`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from syncline.core.config_models import ViewConfig
from syncline.core.keytemplate import key_glob
from syncline.verify.chunks import TextRow, key_text
from syncline.verify.readers import VerifyError, _RowReader, option
from syncline.verify.source import TableSpec


class RedisReader(_RowReader):
    def __init__(self, vcfg: ViewConfig) -> None:
        import redis

        if option(vcfg, "mode", "hash") != "hash":
            raise VerifyError(f"view {vcfg.name} (redis): mode 'invalidate' stores no rows to verify")
        self.template = option(vcfg, "key", "{table}:{pk}")
        cols = vcfg.options.get("columns")
        self.columns = [str(c) for c in cols] if isinstance(cols, list) else None
        self.client: Any = redis.Redis.from_url(option(vcfg, "url"), decode_responses=True)

    def spec(self, spec: TableSpec) -> TableSpec:
        return spec.with_columns(self.columns) if self.columns else spec

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        pattern = key_glob(self.template, spec.schema, spec.name)
        keys: list[str] = []
        for k in self.client.scan_iter(match=pattern, count=1000):
            keys.append(k)
            if len(keys) >= 500:
                yield from self._hashes(keys, spec)
                keys = []
        yield from self._hashes(keys, spec)

    def _hashes(self, keys: list[str], spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        for h in pipe.execute():
            if h:
                row = tuple(None if h.get(c) is None else str(h[c]) for c in spec.columns)
                yield key_text(row, spec.key_idx), row

    def close(self) -> None:
        self.client.close()
