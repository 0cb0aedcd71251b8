"""Compare views with the source (and repair them): the orchestration of ``syncline verify``.

Per view and table: chunk checksums of the source, read in a snapshot at a known LSN ``P``
(:class:`SourceSnapshot`), against the view's, read once the view has applied every
transaction committed before ``P``; then the rows of the differing chunks only. A view that
moves on past ``P`` before it is read can show a difference that is only a newer change:
differing keys are checked again at a fresh snapshot (``rounds``); a key is reported only
when it differs in every round.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncline.core.config_models import Config, ViewConfig
from syncline.core.errors import SynclineError, ViewFailed, first_line, redact
from syncline.core.patterns import table_selected, unmatched_patterns
from syncline.runtime.status import wait_caught_up
from syncline.sources.registry import format_position
from syncline.verify.chunks import KeyDiff, TextRow, bucket, chunk_count, diff_rows, differing_chunks
from syncline.verify.readers import LentReader, VerifyError, ViewReader, open_reader
from syncline.verify.source import SourceSnapshot, TableSpec
from syncline.views.base import KEYED_KINDS
from syncline.views.registry import KINDS, kind_module

Progress = Callable[[str], None]


@dataclass
class TableResult:
    table: str
    source_rows: int = 0
    view_rows: int = 0
    chunks: int = 0
    differing_chunks: int = 0
    diff: KeyDiff = field(default_factory=KeyDiff)
    key_values: dict[str, TextRow] = field(default_factory=dict)
    """Key column values (``col::text``) of every differing key."""
    error: str = ""

    @property
    def equal(self) -> bool:
        return not self.error and self.diff.equal

    def to_json(self, limit: int) -> dict[str, Any]:
        d = self.diff
        out: dict[str, Any] = {
            "status": "error" if self.error else ("equal" if d.equal else "different"),
            "source_rows": self.source_rows,
            "view_rows": self.view_rows,
            "chunks": self.chunks,
            "differing_chunks": self.differing_chunks,
            "missing": len(d.missing),
            "extra": len(d.extra),
            "different": len(d.different),
            "missing_keys": d.missing[:limit],
            "extra_keys": d.extra[:limit],
            "different_keys": d.different[:limit],
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class ViewResult:
    name: str
    kind: str
    lsn: int = 0
    tables: dict[str, TableResult] = field(default_factory=dict)
    error: str = ""
    note: str = ""
    repair: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.error or any(t.error for t in self.tables.values()):
            return "error"
        return "equal" if all(t.equal for t in self.tables.values()) else "different"

    def to_json(self, limit: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "status": self.status,
            "lsn": format_position(self.lsn) if self.lsn else None,
            "tables": {q: t.to_json(limit) for q, t in self.tables.items()},
        }
        if self.error:
            out["error"] = self.error
        if self.note:
            out["note"] = self.note
        if self.repair:
            out["repair"] = self.repair
        return out


@dataclass
class Options:
    views: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    chunk_rows: int = 1000
    limit: int = 20
    rounds: int = 3
    max_rows: int = 50_000
    """Rows of differing chunks held in memory at once (per side)."""
    wait_timeout: float = 60.0
    progress: Progress | None = None
    catch_up: Callable[[int, float], bool] | None = None
    """Instead of waiting for the running view: bring it to the source position (LSN) within
    the timeout, True when done (``rebuild`` moves its copy along the log)."""
    reader: Callable[[ViewConfig], ViewReader] | None = None
    """Instead of :func:`open_reader` (``rebuild`` reads its copy)."""


def record_results(cfg: Config, results: dict[str, ViewResult]) -> None:
    """Each view's result into the log's documents (``verify.VIEW``), for the console: when,
    the outcome per table, and how many repairs ran so far. Best effort."""

    from syncline.log import log_ready, open_control

    with contextlib.suppress(Exception):
        if not log_ready(cfg.log):
            return
        control = open_control(cfg.log)
        try:
            for name, r in results.items():
                prev = control.get_doc(f"verify.{name}")
                repaired = dict(r.repair) if r.repair else {}
                doc = {
                    "at": time.time(),
                    "status": r.status,
                    "lsn": format_position(r.lsn) if r.lsn else None,
                    "error": r.error or None,
                    "tables": {
                        q: {
                            "status": "error" if t.error else ("equal" if t.equal else "different"),
                            "source_rows": t.source_rows,
                            "view_rows": t.view_rows,
                            "missing": len(t.diff.missing),
                            "extra": len(t.diff.extra),
                            "different": len(t.diff.different),
                        }
                        for q, t in r.tables.items()
                    },
                    "repairs": int(prev.get("repairs", 0)) + (1 if repaired else 0),
                    "repaired_rows": int(prev.get("repaired_rows", 0))
                    + int(repaired.get("upserts", 0))
                    + int(repaired.get("deletes", 0)),
                    "last_repair_at": time.time() if repaired else prev.get("last_repair_at"),
                }
                control.put_doc(f"verify.{name}", doc)
        finally:
            control.close()


def exit_code(results: dict[str, ViewResult]) -> int:
    states = {r.status for r in results.values()}
    return 2 if "error" in states else (1 if "different" in states else 0)


def report_json(results: dict[str, ViewResult], limit: int) -> dict[str, Any]:
    return {
        "status": {0: "equal", 1: "different", 2: "error"}[exit_code(results)],
        "views": {n: r.to_json(limit) for n, r in results.items()},
    }


def stderr_progress(every: float = 2.0) -> Progress:
    """Progress lines on stderr, at most one per ``every`` seconds (and each table's end)."""
    last = [0.0]

    def say(msg: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every or msg.endswith("done"):
            last[0] = now
            print(f"verify: {msg}", file=sys.stderr, flush=True)

    return say


def live(cfg: Config, view: str) -> bool:
    """The capture and the view's worker run: the view will reach any source position."""
    from syncline.log import capture_running, view_running

    return capture_running(cfg.log) and view_running(cfg.log, view)


def select_views(cfg: Config, names: list[str]) -> list[ViewConfig]:
    known = {v.name: v for v in cfg.views if v.kind != "compacted"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise VerifyError(f"no view named {', '.join(unknown)} in {cfg.path}")
    if names:
        for n in names:
            why = not_a_copy(known[n])
            if why:
                raise VerifyError(f"view {n} {why}")
        return [known[n] for n in names]
    return [v for v in known.values() if not not_a_copy(v)]


def not_a_copy(vcfg: ViewConfig) -> str:
    """Why ``verify`` has nothing to compare in this view ("" when it holds copies of tables)."""
    if vcfg.document is not None:
        return "holds joined documents, not a copy of tables"
    if vcfg.transform is not None:
        return f"holds what its transform {vcfg.transform} made, not a copy"
    if vcfg.kind in KINDS and not getattr(kind_module(vcfg.kind), "VERIFIABLE", True):
        return f"({vcfg.kind}) holds events, not a copy of tables to compare"
    return ""


def view_tables(specs: list[TableSpec], vcfg: ViewConfig, only: list[str]) -> list[TableSpec]:
    out = []
    for s in specs:
        if not table_selected(vcfg.tables, s.qualified):
            continue
        if s.keyless and vcfg.kind in KEYED_KINDS:
            continue  # such a view refuses a table without a key
        if only and not table_selected(only, s.qualified):
            continue
        out.append(s)
    return out


class Verifier:
    """One verification run over views; keeps source snapshots and sums it can reuse."""

    def __init__(self, cfg: Config, opts: Options) -> None:
        self.cfg = cfg
        self.opts = opts
        self.dsn = cfg.source.dsn.value
        self._say = opts.progress or (lambda _m: None)

    def run(self, snapshot: SourceSnapshot | None = None) -> dict[str, ViewResult]:
        """``snapshot``: compare at this source snapshot (kept open by the caller)."""
        views = select_views(self.cfg, self.opts.views)
        results: dict[str, ViewResult] = {}
        with contextlib.nullcontext(snapshot) if snapshot is not None else SourceSnapshot(self.dsn) as snap:
            specs = snap.tables(self.cfg.source.tables, self.cfg.source.exclude_columns)
            if self.opts.tables:
                names = {s.qualified for s in specs}
                unmatched = unmatched_patterns(self.opts.tables, names)
                if unmatched:
                    raise VerifyError(f"--table {', '.join(unmatched)}: no such captured table")
            counts: dict[str, int] = {}
            for vcfg in views:
                results[vcfg.name] = self._view(snap, specs, counts, vcfg)
        return results

    def _view(
        self, snap: SourceSnapshot, specs: list[TableSpec], counts: dict[str, int], vcfg: ViewConfig
    ) -> ViewResult:
        res = ViewResult(vcfg.name, vcfg.kind, snap.lsn)
        is_live = self.opts.catch_up is not None or live(self.cfg, vcfg.name)
        if is_live:
            try:
                applied = self._caught_up(snap.lsn, vcfg.name)
            except ViewFailed as e:
                res.error = str(e)
                return res
            if not applied:
                res.error = (
                    f"view {vcfg.name} has not applied {format_position(snap.lsn)} within "
                    f"{self.opts.wait_timeout:g}s (see `syncline status`)"
                )
                return res
        else:
            res.note = "`syncline run` is not running: the view is compared as it stands"
        try:
            if self.opts.reader is not None:
                reader = self.opts.reader(vcfg)
            elif is_live and vcfg.kind in KINDS and getattr(kind_module(vcfg.kind), "ONE_PROCESS", False):
                reader = LentReader(self.cfg, vcfg)  # borrowed from `run`'s worker, read by read
            else:
                reader = open_reader(vcfg)
        except VerifyError as e:
            res.error = str(e)
            return res
        except Exception as e:  # the store refused (a role without privileges, ...): one line
            res.error = self._unreadable(vcfg.name, e)
            return res
        try:
            for full in view_tables(specs, vcfg, self.opts.tables):
                spec = reader.spec(full)
                tr = TableResult(spec.qualified)
                res.tables[spec.qualified] = tr
                try:
                    self._table(snap, reader, spec, counts, tr, vcfg.name, is_live)
                except VerifyError as e:
                    tr.error = str(e)
                except SynclineError:
                    raise
                except Exception as e:  # the view's store refused: this table cannot be read
                    tr.error = self._unreadable(vcfg.name, e)
        finally:
            reader.close()
        return res

    def _unreadable(self, view: str, e: Exception) -> str:
        return redact(f"view {view}: cannot read it: {type(e).__name__}: {first_line(e)}", self.cfg.secrets())

    def _table(
        self,
        snap: SourceSnapshot,
        reader: ViewReader,
        spec: TableSpec,
        counts: dict[str, int],
        tr: TableResult,
        view: str,
        is_live: bool,
    ) -> None:
        q = spec.qualified
        if q not in counts:
            counts[q] = snap.count(spec)
        n = chunk_count(counts[q], self.opts.chunk_rows)
        tr.chunks = n
        self._say(f"{view} {q}: source checksums ({counts[q]} rows, {n} chunks)")
        src = snap.chunk_sums(spec, n)
        self._say(f"{view} {q}: view checksums")
        dst = reader.chunk_sums(spec, n)
        tr.source_rows, tr.view_rows = src.rows, dst.rows
        bad = set(differing_chunks(src, dst))
        tr.differing_chunks = len(bad)
        if bad:
            diff = KeyDiff()
            group = max(1, self.opts.max_rows // max(1, self.opts.chunk_rows))
            todo = sorted(bad)
            for i in range(0, len(todo), group):
                chunks = set(todo[i : i + group])
                self._say(f"{view} {q}: reading the rows of differing chunks {i + 1}..{i + len(chunks)}")
                srows = snap.chunk_rows(spec, n, chunks)
                vrows = reader.chunk_rows(spec, n, chunks)
                part = diff_rows(srows, vrows)
                self._keep_keys(tr, part, spec, srows, vrows)
                diff.missing += part.missing
                diff.extra += part.extra
                diff.different += part.different
            diff = KeyDiff(sorted(diff.missing), sorted(diff.extra), sorted(diff.different))
            rounds = self.opts.rounds if is_live else 1
            for _ in range(1, rounds):
                if diff.equal:
                    break
                diff = self._recheck(reader, spec, n, diff, tr, view)
            tr.diff = diff
        self._say(f"{view} {q}: done")

    def _recheck(
        self, reader: ViewReader, spec: TableSpec, n: int, diff: KeyDiff, tr: TableResult, view: str
    ) -> KeyDiff:
        """The differing keys again, at a fresh snapshot the view has applied."""
        keys = diff.all_keys()
        chunks = {bucket(k, n) for k in keys}
        with SourceSnapshot(self.dsn) as snap:
            try:
                if not self._caught_up(snap.lsn, view):
                    return diff
            except ViewFailed:
                return diff
            srows = snap.chunk_rows(spec, n, chunks)
        vrows = reader.chunk_rows(spec, n, chunks)
        again = diff_rows(srows, vrows).only(keys)
        self._keep_keys(tr, again, spec, srows, vrows)
        return again

    def _caught_up(self, lsn: int, view: str) -> bool:
        if self.opts.catch_up is not None:
            return self.opts.catch_up(lsn, self.opts.wait_timeout)
        return wait_caught_up(self.cfg, lsn, [view], self.opts.wait_timeout)

    @staticmethod
    def _keep_keys(
        tr: TableResult, diff: KeyDiff, spec: TableSpec, srows: dict[str, TextRow], vrows: dict[str, TextRow]
    ) -> None:
        idx = spec.key_idx
        for k in diff.all_keys():
            row = srows.get(k) or vrows.get(k)
            if row is not None:
                tr.key_values[k] = tuple(row[i] for i in idx)


def verify(cfg: Config, opts: Options) -> dict[str, ViewResult]:
    return Verifier(cfg, opts).run()


def verify_keys(cfg: Config, opts: Options, keys: dict[str, dict[str, set[str]]]) -> dict[str, ViewResult]:
    """Verify only ``keys`` (view -> table -> key texts): re-read their chunks."""
    results: dict[str, ViewResult] = {}
    views = {v.name: v for v in select_views(cfg, list(keys))}
    n_by_table: dict[str, int] = {}
    with SourceSnapshot(cfg.source.dsn.value) as snap:
        specs = {s.qualified: s for s in snap.tables(cfg.source.tables, cfg.source.exclude_columns)}
        for name, tables in keys.items():
            vcfg = views[name]
            res = results[name] = ViewResult(name, vcfg.kind, snap.lsn)
            try:
                behind = live(cfg, name) and not wait_caught_up(cfg, snap.lsn, [name], opts.wait_timeout)
            except ViewFailed as e:
                res.error = str(e)
                continue
            if behind:
                res.error = f"view {name} has not applied {format_position(snap.lsn)}"
                continue
            try:
                reader = open_reader(vcfg)
            except VerifyError as e:
                res.error = str(e)
                continue
            try:
                for q, ks in tables.items():
                    spec = reader.spec(specs[q])
                    if q not in n_by_table:
                        n_by_table[q] = chunk_count(snap.count(spec), opts.chunk_rows)
                    n = n_by_table[q]
                    chunks = {bucket(k, n) for k in ks}
                    tr = res.tables[q] = TableResult(q, chunks=n, differing_chunks=len(chunks))
                    srows = snap.chunk_rows(spec, n, chunks)
                    vrows = reader.chunk_rows(spec, n, chunks)
                    tr.diff = diff_rows(srows, vrows).only(ks)
                    tr.source_rows = sum(1 for k in ks if k in srows)
                    tr.view_rows = sum(1 for k in ks if k in vrows)
            finally:
                with contextlib.suppress(Exception):
                    reader.close()
    return results
