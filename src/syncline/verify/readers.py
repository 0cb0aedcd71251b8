"""Read a view back per table in ``col::text`` form: chunk checksums and the rows of chosen
chunks. One reader per view kind, in the kind's folder (``views/KIND/reader.py``); all stream
rows (memory bounded by the chunks). Here: the reader protocol and what readers share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from syncline.core.config_models import ViewConfig
from syncline.core.errors import SynclineError
from syncline.verify.chunks import ChunkSums, TextRow, bucket, put_row
from syncline.verify.source import TableSpec

if TYPE_CHECKING:
    from syncline.core.config_models import Config

T = TypeVar("T")


class VerifyError(SynclineError):
    """A view (or table) that cannot be verified now; the message says why."""


def option(vcfg: ViewConfig, name: str, default: str = "") -> str:
    v = vcfg.options.get(name, default)
    return str(getattr(v, "value", v))


class ViewReader(Protocol):
    def spec(self, spec: TableSpec) -> TableSpec:
        """The part of the table this view stores (columns)."""
        ...

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums: ...

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]: ...

    def close(self) -> None: ...


class _RowReader:
    """Readers that produce (key text, row) pairs in Python."""

    def spec(self, spec: TableSpec) -> TableSpec:
        return spec

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        raise NotImplementedError

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums:
        out = ChunkSums(n)
        for k, row in self.rows(spec):
            out.add(k, row)
        return out

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]:
        out: dict[str, TextRow] = {}
        if chunks:
            for k, r in self.rows(spec):
                if bucket(k, n) in chunks:
                    put_row(out, k, r)
        return out

    def close(self) -> None:
        pass


class LentReader:
    """A reader of a store that admits one process (DuckDB) while ``run`` holds it: every
    read borrows the store from the view's worker (:mod:`syncline.runtime.borrow`) and
    gives it back, so the view keeps applying between the reads."""

    def __init__(self, cfg: Config, vcfg: ViewConfig) -> None:
        self.cfg = cfg
        self.vcfg = vcfg

    def _read(self, read: Callable[[ViewReader], T]) -> T:
        from syncline.runtime.borrow import borrowed

        with borrowed(self.cfg, self.vcfg.name):
            reader = open_reader(self.vcfg)
            try:
                return read(reader)
            finally:
                reader.close()

    def spec(self, spec: TableSpec) -> TableSpec:
        return self._read(lambda r: r.spec(spec))

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums:
        return self._read(lambda r: r.chunk_sums(spec, n))

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]:
        return self._read(lambda r: r.chunk_rows(spec, n, chunks))

    def close(self) -> None:
        pass


def reader_on_view(vcfg: ViewConfig, view: object) -> ViewReader | None:
    """A reader over an open view's own connection (PostgreSQL: inside its transaction;
    DuckDB: one process per file), or None when the kind reads through its own."""
    from syncline.views.registry import kind_module

    got: ViewReader | None = kind_module(vcfg.kind).reader_on_view(vcfg, view)
    return got


def open_reader(vcfg: ViewConfig) -> ViewReader:
    """The reader of ``vcfg``'s kind (each kind's folder holds its own)."""
    from syncline.views.registry import KINDS, kind_module

    if vcfg.kind not in KINDS:
        raise VerifyError(f"view {vcfg.name}: kind {vcfg.kind!r} cannot be verified")
    reader: ViewReader = kind_module(vcfg.kind).open_reader(vcfg)
    return reader
